"""Overload: camera frames at 10x the node's processing rate for 60 s.

    .venv/bin/python benchmarks/overload.py --checkpoint CKPT [--device cpu|cuda]
        [--width 1024 --height 512] [--factor 10] [--seconds 60] [--baseline REF [--rounds 2]]
        [--write]

Starts the perception node (its defaults: best-effort input, depth 1, latest frame wins) in a
loopback-only namespace, measures how fast it processes a frame of this size (median of a
paced warm-up phase: one frame at a time), then publishes at ``factor`` times that rate for
``seconds``. Reports per 5-s window the end-to-end latency p50/p99 (camera stamp -> mask and
detections both received), outputs per second and the node's resident memory, plus the node's
own frame counters, and two figures:

- output rate / paced rate: outputs per second under overload over the paced warm-up's rate
  (goal >= 0.98: overload costs the node nothing);
- RSS flat: the node's resident memory, largest 1-s sample of the first window against the last
  (flat: the last at most 5% above the first).

Draws docs/images/overload_{device}.png (with ``--write``; else in /tmp).

``--baseline REF`` (benchmarks/baseline.py) starts the node of REF beside this checkout's (each
its own name and input topic): both are warmed up, then ``--rounds`` rounds give each version
``seconds / rounds`` of overload in turn (before, after, before, after...), so both share the
machine's load; windows count each version's own overload time. A before/after table follows.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baseline import Version, add_argument, before_after_table, versions, versions_line
from common import figure_path, header, write_section

from mtl_perception.ros.isolation import ensure_private_network
from mtl_perception.ros.node_process import NodeProcess, start_node, stop_nodes

NODE = "perception_node"
TOPIC = "/overload/image"
WINDOW = 5.0  # seconds per reported window
PACED_FRAMES = 12  # frames of the paced warm-up (the first two not counted)
RSS_FLAT = 1.05  # last window's RSS at most this times the first's
RATE_GOAL = 0.98  # output rate under overload / paced rate
CUDA_RATE_GOAL = 150.0  # outputs/s, one camera, node defaults, 1024x512 (issue 23)
COMPARED = [
    "paced fps",
    "outputs/s",
    "output / paced",
    "latency p50 ms",
    "p99 ms",
    "RSS last - first window (MB)",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Target:
    """One version's node under test and what the player saw of it."""

    version: Version
    name: str
    topic: str
    log: Path
    node: NodeProcess | None = None
    publisher: object = None
    message: object = None
    counter: int = 0
    sent: dict[int, float] = field(default_factory=dict)
    halves: dict[int, set[str]] = field(default_factory=dict)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, latency s)
    counters: dict[str, str] = field(default_factory=dict)
    per_frame: float = float("nan")  # paced seconds per frame
    rate: float = float("nan")  # Hz published under overload
    published: int = 0
    received: int = 0
    dropped: int = 0
    segments: list[tuple[float, float, float]] = field(default_factory=list)  # start, end, offset
    memory: list[tuple[float, float]] = field(default_factory=list)  # (overload s, RSS MB)

    def overload_time(self, moment: float) -> float | None:
        """Seconds of this version's overload before ``moment`` (None: outside its segments;
        an output arriving just after a segment counts at its end)."""
        for start, end, offset in self.segments:
            if start <= moment <= end + 1.0:
                return offset + min(moment, end) - start
        return None

    def series(self) -> list[tuple[float, float]]:
        """(overload s, latency ms) of every output received during its overload."""
        found = []
        for moment, latency in self.arrivals:
            at = self.overload_time(moment)
            if at is not None:
                found.append((at, 1e3 * latency))
        return found


class Player:
    """This process's ROS side: one publisher and two subscriptions per target, /diagnostics."""

    def __init__(self, targets: list[Target], frame: np.ndarray) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        from vision_msgs.msg import Detection2DArray

        from mtl_perception.ros.conversions import encode_image

        rclpy.init()
        self.node = rclpy.create_node("overload_player")
        self.lock = threading.Lock()
        self.targets = targets
        for target in targets:
            self.node.create_subscription(
                Image,
                f"/{target.name}/semantic",
                lambda m, t=target: self._arrived(t, "mask", m),
                qos_profile_sensor_data,
            )
            self.node.create_subscription(
                Detection2DArray,
                f"/{target.name}/detections",
                lambda m, t=target: self._arrived(t, "det", m),
                qos_profile_sensor_data,
            )
            target.publisher = self.node.create_publisher(
                Image, target.topic, qos_profile_sensor_data
            )
            target.message = encode_image(frame, "rgb8", Header(frame_id="camera"))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diagnostics, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _arrived(self, target: Target, kind: str, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        now = time.monotonic()
        with self.lock:
            got = target.halves.setdefault(stamp, set())
            got.add(kind)
            if len(got) == 2 and stamp in target.sent:
                target.arrivals.append((now, now - target.sent[stamp]))

    def _diagnostics(self, msg) -> None:
        for status in msg.status:
            for target in self.targets:
                if status.name.startswith(f"{target.name}:"):
                    target.counters.update({kv.key: kv.value for kv in status.values})

    def publish(self, target: Target) -> None:
        target.counter += 1
        stamp = target.message.header.stamp
        stamp.sec, stamp.nanosec = divmod(target.counter, 10**9)
        with self.lock:
            target.sent[target.counter] = time.monotonic()
        target.publisher.publish(target.message)

    def wait_up(self, target: Target, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while target.publisher.get_subscription_count() == 0 or not target.counters:
            if target.node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up:\n{target.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def paced(self, target: Target) -> None:
        """One frame at a time: the node's processing rate (seconds per frame)."""
        times = []
        for _ in range(PACED_FRAMES):
            before = len(target.arrivals)
            self.publish(target)
            start = time.monotonic()
            while len(target.arrivals) == before and time.monotonic() - start < 30:
                time.sleep(0.002)
            times.append(time.monotonic() - start)
        target.per_frame = float(np.median(times[2:]))

    def overload(self, target: Target, factor: float, seconds: float) -> None:
        """``seconds`` at ``factor`` times the paced rate, RSS sampled every second."""
        target.rate = factor / target.per_frame
        offset = sum(end - start for start, end, _ in target.segments)
        start = time.monotonic()
        next_due, next_memory = start, start
        while (now := time.monotonic()) - start < seconds:
            if now >= next_memory:
                target.memory.append((offset + now - start, rss_mb(target.node.pid)))
                next_memory += 1.0
            if now >= next_due:
                self.publish(target)
                target.published += 1
                next_due += 1.0 / target.rate
            time.sleep(max(0.0, min(next_due, next_memory) - time.monotonic()))
        target.segments.append((start, time.monotonic(), offset))

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        rclpy.try_shutdown()


@dataclass
class Result:
    """One version's figures."""

    target: Target
    seconds: float
    rows: list[str]
    outputs: int
    latency_p50: float
    latency_p99: float
    rss_first: float
    rss_last: float

    @property
    def output_rate(self) -> float:
        return self.outputs / self.seconds

    @property
    def paced_rate(self) -> float:
        return 1.0 / self.target.per_frame

    @property
    def ratio(self) -> float:
        return self.output_rate / self.paced_rate

    @property
    def flat(self) -> bool:
        return self.rss_last <= RSS_FLAT * self.rss_first


def summarise(target: Target, seconds: float) -> Result:
    series = target.series()
    rows = []
    for w in range(int(np.ceil(seconds / WINDOW))):
        lo, hi = w * WINDOW, min((w + 1) * WINDOW, seconds)
        last = hi == seconds  # the last window holds outputs arriving just after the end too
        lat = np.array([ms for t, ms in series if lo <= t < hi or (last and t >= hi)])
        rss = [mb for t, mb in target.memory if lo <= t < hi]
        p50 = f"{np.percentile(lat, 50):.0f}" if lat.size else "-"
        p99 = f"{np.percentile(lat, 99):.0f}" if lat.size else "-"
        rows.append(
            f"| {lo:g}-{hi:g} | {p50} | {p99} | {lat.size / (hi - lo):.1f} | "
            f"{max(rss) if rss else float('nan'):.0f} |"
        )
    windows = [
        [mb for t, mb in target.memory if w * WINDOW <= t < (w + 1) * WINDOW]
        for w in range(int(np.ceil(seconds / WINDOW)))
    ]
    windows = [w for w in windows if w] or [[float("nan")]]
    latencies = np.array([ms for _, ms in series]) if series else np.array([float("nan")])
    return Result(
        target,
        seconds,
        rows,
        len(series),
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        max(windows[0]),
        max(windows[-1]),
    )


def compared(result: Result) -> list[float]:
    """The figures of the before/after table, in the order of COMPARED."""
    return [
        result.paced_rate,
        result.output_rate,
        result.ratio,
        result.latency_p50,
        result.latency_p99,
        result.rss_last - result.rss_first,
    ]


def describe(result: Result, cuda: bool) -> str:
    """The section's part for one version; ``cuda`` adds the CUDA throughput goal."""
    target = result.target
    table = "\n".join(
        [
            "| window (s) | latency p50 (ms) | latency p99 (ms) | outputs/s | node RSS (MB) |",
            "| --- | ---: | ---: | ---: | ---: |",
            *result.rows,
        ]
    )
    rate_verdict = "met" if result.ratio >= RATE_GOAL else "NOT met"
    return (
        f"{table}\n\nWhole run: {target.published} frames published at {target.rate:.1f} Hz, "
        f"node received {target.received}, produced {result.outputs} outputs "
        f"({result.output_rate:.1f}/s), dropped {target.dropped}; latency p50 "
        f"{result.latency_p50:.0f} ms, p99 {result.latency_p99:.0f} ms.\n\n"
        f"- output rate / paced rate: {result.output_rate:.1f} / {result.paced_rate:.1f} = "
        f"**{result.ratio:.2f}** (goal >= {RATE_GOAL:g}: {rate_verdict});\n"
        f"- RSS flat: largest sample of the first window {result.rss_first:.0f} MB, of the last "
        f"{result.rss_last:.0f} MB ({result.rss_last - result.rss_first:+.0f} MB): "
        f"{'flat' if result.flat else 'NOT flat'} (last <= {RSS_FLAT:g}x first).\n"
        + (
            f"- outputs/s under overload {result.output_rate:.1f}, paced {result.paced_rate:.1f} "
            f"(CUDA goal >= {CUDA_RATE_GOAL:g}: "
            f"{'met' if result.output_rate >= CUDA_RATE_GOAL else 'NOT met'}).\n"
            if cuda
            else ""
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoints/final.pt"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="of overload per version")
    add_argument(parser)
    parser.add_argument(
        "--rounds", type=int, default=2, help="with --baseline: turns per version (default 2)"
    )
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} not found (make demo writes one)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    found = versions(args.baseline)
    rounds = args.rounds if len(found) > 1 else 1
    ensure_private_network()

    from mtl_perception.data.synthetic import generate_scene

    named = len(found) > 1
    targets = [
        Target(
            version,
            f"{NODE}_{version.label}" if named else NODE,
            f"/overload/{version.label}/image" if named else TOPIC,
            Path(f"/tmp/mtl_overload_node{'_' + version.label if named else ''}.log"),
        )
        for version in found
    ]
    frame = generate_scene(args.width, args.height, 3)[0]
    for target in targets:
        params = {
            "checkpoint": args.checkpoint.resolve(),
            "device": args.device,
            **target.version.no_overlay_parameters(),
        }
        target.node = start_node(
            target.name,
            remaps={"image": target.topic},
            parameters=params,
            env=target.version.env(),
            cwd=target.version.cwd,
            log=target.log,
        )
    player = Player(targets, frame)
    try:
        for target in targets:
            player.wait_up(target)
        for target in targets:
            player.paced(target)
            print(f"{target.version.label}: processing ~{1 / target.per_frame:.1f} fps", flush=True)
        before = [
            (int(t.counters.get("received", 0)), int(t.counters.get("dropped", 0))) for t in targets
        ]
        for _ in range(rounds):
            for target in targets:
                print(
                    f"{target.version.label}: {args.factor / target.per_frame:.1f} Hz for "
                    f"{args.seconds / rounds:g} s",
                    flush=True,
                )
                player.overload(target, args.factor, args.seconds / rounds)
        time.sleep(3.0)  # in-flight frames, then a /diagnostics with the final counters
        for target, (received, dropped) in zip(targets, before, strict=True):
            target.received = int(target.counters.get("received", 0)) - received
            target.dropped = int(target.counters.get("dropped", 0)) - dropped
    finally:
        player.close()
        stop_nodes([t.node for t in targets if t.node is not None], timeout=30)

    results = [summarise(target, args.seconds) for target in targets]
    kind = torch.device(args.device).type
    picture = figure_path(f"overload_{kind}.png", args.write)
    plot(results, picture)
    title_rate = " / ".join(f"{t.rate:.1f}" for t in targets)
    parts = [
        f"### Overload, {args.device}, {args.width}x{args.height} rgb8 at {title_rate} Hz "
        f"({args.factor:g}x the processing rate) for {args.seconds:g} s\n\n"
        f"{header('overload')}\nModel: {args.checkpoint}; node defaults (best-effort input, "
        f"depth 1, latest frame wins). Versions: {versions_line(found)}"
        + (f"; {rounds} rounds of {args.seconds / rounds:g} s each, in turn" if named else "")
        + ".\n"
    ]
    for result in results:
        if named:
            parts.append(f"\n#### {result.target.version.label} ({result.target.version.ref})\n")
        parts.append("\n" + describe(result, kind == "cuda"))
    if named:
        old, new = results

        parts.append(
            "\nBefore -> after (after / before):\n\n"
            + before_after_table(
                [f"{args.width}x{args.height}, {args.factor:g}x"],
                COMPARED,
                [compared(old)],
                [compared(new)],
                digits=2,
            )
            + "\n"
        )
    parts.append(f"\n![overload](images/{picture.name})\n")
    section = "".join(parts)
    print(section)
    if args.write:
        write_section(f"overload-{kind}", section)
    return 0


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for result in results:
        target = result.target
        label = f"{target.version.label} ({target.rate:.1f} Hz input)"
        series = target.series()
        if series:
            times, latency = zip(*series, strict=True)
            top.plot(times, latency, ".", markersize=3, label=label)
        if target.memory:
            times, rss = zip(*target.memory, strict=True)
            bottom.plot(times, rss, label=label)
    top.set_ylabel("latency (ms)")
    top.set_title("perception node under 10x overload")
    top.legend(loc="upper right", fontsize="small")
    bottom.set_ylabel("node RSS (MB)")
    bottom.set_xlabel("overload time (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
