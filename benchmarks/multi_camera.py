"""Several cameras: one batched node against one single-camera node per camera (issue 15).

    .venv/bin/python benchmarks/multi_camera.py [--checkpoint CKPT | --model-config YAML]
        [--device cpu|cuda] [--cameras 1,2,4,6] [--width 1280 --height 720] [--rate 30]
        [--input-width W --input-height H] [--seconds 20] [--baseline REF] [--write]

For each camera count N, in a loopback-only namespace: (a) ONE perception node with
``cameras:=[cam0, ...]`` (``max_batch`` at its default: every camera on CUDA, 1 on the CPU; on
the CPU also a run with ``max_batch:=N``, the measurement behind that default) and (b) N
single-camera nodes, one per camera. Every camera publishes a WxH rgb8 frame at ``rate`` Hz
(best effort, the nodes' default QoS) for ``seconds`` after a warm-up in which every camera got
an output. Reports total and per-camera outputs/s (mask and detections both received), latency
p50/p95 per camera (camera stamp -> both outputs received), the nodes' total resident memory
(peak of 1-s samples; and GPU memory per nvidia-smi on CUDA).

Without ``--checkpoint``, an untrained network of ``--model-config`` (default: the small model)
is written to a temporary folder (benchmarks/untrained_checkpoint.py's recipe): speed only.

``--baseline REF`` (benchmarks/baseline.py) runs every row with the nodes of REF too (before,
after, row by row) and adds a before/after table. Goals (issue 23, CUDA, six 1280x720 cameras
at 30 Hz in one node): every camera >= 28 outputs/s, and the node's GPU memory <= 1/3 of six
single-camera nodes'.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baseline import Version, add_argument, before_after_table, versions, versions_line
from common import ROOT, header, write_section

from mtl_perception.ros.cameras import output_topic
from mtl_perception.ros.isolation import ensure_private_network
from mtl_perception.ros.node_process import start_node, stop_nodes

NODE = "multi_camera_node"
WARMUP_TIMEOUT = 300.0  # seconds for every camera's first output (N processes loading torch)
CAMERA_RATE_GOAL = 28.0  # outputs/s of every camera of one 6-camera node (issue 23, CUDA)
GPU_MEMORY_GOAL = 1 / 3  # one 6-camera node's GPU memory / six single-camera nodes'


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def gpu_mb(pids: list[int]) -> float | None:
    """GPU memory (MiB) held by ``pids`` per nvidia-smi; None without it."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    used = 0.0
    for line in result.stdout.splitlines():
        pid, _, memory = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids:
            used += float(memory)
    return used


def untrained_checkpoint(model_config: str, folder: Path) -> Path:
    """benchmarks/untrained_checkpoint.py's network, written to ``folder``."""
    path = folder / "untrained.pt"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "untrained_checkpoint.py"),
            str(path),
            "--model-config",
            model_config,
        ],
        check=True,
    )
    return path


class Player:
    """This process's ROS side: camera publishers and output subscriptions for one run."""

    def __init__(self, cameras: int, outputs: list[tuple[str, str]], frame, rate: float) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        from vision_msgs.msg import Detection2DArray

        from mtl_perception.ros.conversions import encode_image

        self.node = rclpy.create_node("multi_camera_player")
        self.rate = rate
        self.lock = threading.Lock()
        self.sent: list[dict[int, float]] = [{} for _ in range(cameras)]
        self.halves: list[dict[int, int]] = [{} for _ in range(cameras)]
        self.arrivals: list[list[tuple[float, float]]] = [[] for _ in range(cameras)]
        self.publishers = [
            self.node.create_publisher(Image, f"/cam{i}/image", qos_profile_sensor_data)
            for i in range(cameras)
        ]
        self.messages = [
            encode_image(frame, "rgb8", Header(frame_id=f"cam{i}")) for i in range(cameras)
        ]
        for camera, (mask_topic, detections_topic) in enumerate(outputs):
            for topic, kind in ((mask_topic, Image), (detections_topic, Detection2DArray)):
                self.node.create_subscription(
                    kind,
                    topic,
                    lambda msg, camera=camera: self._arrived(camera, msg),
                    qos_profile_sensor_data,
                )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.stop = threading.Event()
        self.spinner = threading.Thread(target=self._spin, daemon=True)
        self.spinner.start()
        self.counter = 0
        self.ticker = threading.Thread(target=self._publish_loop, daemon=True)
        self.ticker.start()

    def _spin(self) -> None:
        while not self.stop.is_set():
            self.executor.spin_once(timeout_sec=0.1)

    def _arrived(self, camera: int, msg) -> None:
        stamp = msg.header.stamp.sec
        now = time.monotonic()
        with self.lock:
            halves = self.halves[camera]
            halves[stamp] = halves.get(stamp, 0) + 1
            if halves[stamp] == 2 and stamp in self.sent[camera]:
                self.arrivals[camera].append((now, now - self.sent[camera][stamp]))

    def _publish_loop(self) -> None:
        """Every camera at ``rate`` Hz, the cameras spread evenly over each period."""
        period = 1.0 / self.rate
        cameras = len(self.publishers)
        due = time.monotonic()
        while not self.stop.is_set():
            self.counter += 1
            for camera, (publisher, msg) in enumerate(
                zip(self.publishers, self.messages, strict=True)
            ):
                slot = due + camera * period / cameras
                time.sleep(max(0.0, slot - time.monotonic()))
                msg.header.stamp.sec = self.counter
                with self.lock:
                    self.sent[camera][self.counter] = time.monotonic()
                publisher.publish(msg)
            due += period
            if time.monotonic() > due + period:  # far behind (a slow machine): skip, not burst
                due = time.monotonic()

    def every_camera_answered(self) -> bool:
        with self.lock:
            return all(self.arrivals)

    def reset(self) -> None:
        with self.lock:
            for arrivals in self.arrivals:
                arrivals.clear()

    def window(self) -> list[list[float]]:
        """Latencies (s) of the outputs received since :meth:`reset`, per camera."""
        with self.lock:
            return [[latency for _, latency in arrivals] for arrivals in self.arrivals]

    def close(self) -> None:
        self.stop.set()
        self.ticker.join(timeout=5)
        self.spinner.join(timeout=5)  # before the executor and node go away under it
        self.executor.shutdown()
        self.node.destroy_node()


def run(
    args, checkpoint: Path, cameras: int, mode: str, max_batch: int, version: Version, label: str
) -> dict[str, object]:
    """One measurement: ``mode`` 'batched' (one node) or 'separate' (a node per camera), with
    the nodes of ``version`` (``label``: its name in the tables, '' in a one-version run)."""
    from mtl_perception.data.synthetic import generate_scene

    params: dict[str, object] = {
        "checkpoint": checkpoint,
        "device": args.device,
        **version.no_overlay_parameters(),
    }
    if args.input_width:
        params.update(input_width=args.input_width, input_height=args.input_height)
    logs = Path(tempfile.mkdtemp(prefix="mtl_multi_camera_"))
    starts: list[tuple[str, dict[str, object], dict[str, str]]] = []  # name, params, remaps
    outputs = []
    if mode == "batched":
        names = ",".join(f"cam{i}" for i in range(cameras))
        batched = {**params, "cameras": f"[{names}]", "max_batch": max_batch}
        starts.append((NODE, batched, {}))
        for i in range(cameras):
            topics = [output_topic(f"cam{i}", o)[2:] for o in ("semantic", "detections")]
            outputs.append(tuple(f"/{NODE}/{topic}" for topic in topics))
    else:
        for i in range(cameras):
            name = f"{NODE}_{i}"
            starts.append((name, params, {"image": f"/cam{i}/image"}))
            outputs.append((f"/{name}/semantic", f"/{name}/detections"))
    nodes = [
        start_node(
            name,
            remaps=remaps,
            parameters=node_params,
            env=version.env(),
            cwd=version.cwd,
            log=logs / f"node{i}.log",
        )
        for i, (name, node_params, remaps) in enumerate(starts)
    ]
    frame = generate_scene(args.width, args.height, seed=3)[0]
    player = Player(cameras, outputs, frame, args.rate)
    pids = [node.pid for node in nodes]
    try:
        deadline = time.monotonic() + WARMUP_TIMEOUT
        while not player.every_camera_answered():
            for i, node in enumerate(nodes):
                if node.process.poll() is not None:
                    raise RuntimeError((logs / f"node{i}.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no output from every camera in {WARMUP_TIMEOUT:.0f} s")
            time.sleep(0.2)
        time.sleep(args.settle)  # past the first frames' one-off costs
        player.reset()
        start = time.monotonic()
        rss, gpu = 0.0, None
        while time.monotonic() - start < args.seconds:
            rss = max(rss, sum(rss_mb(pid) for pid in pids))
            if torch.device(args.device).type == "cuda":
                used = gpu_mb(pids)
                gpu = used if gpu is None or used is None else max(gpu, used)
            time.sleep(1.0)
        elapsed = time.monotonic() - start
        latencies = player.window()
    finally:
        player.close()
        stop_nodes(nodes, timeout=30)
    rates = [len(camera) / elapsed for camera in latencies]
    return {
        "version": label,
        "cameras": cameras,
        "mode": mode,
        "max_batch": max_batch,
        "total": sum(rates),
        "rates": rates,
        "p50": [1e3 * float(np.percentile(c, 50)) if c else float("nan") for c in latencies],
        "p95": [1e3 * float(np.percentile(c, 95)) if c else float("nan") for c in latencies],
        "rss": rss,
        "gpu": gpu,
    }


def spread(rates: list[float]) -> float:
    """(max - min) / max of the per-camera rates: 0 when every camera gets the same."""
    return (max(rates) - min(rates)) / max(rates) if max(rates) > 0 else float("nan")


def mode_name(result: dict[str, object]) -> str:
    if result["mode"] == "batched":
        return f"one node, max_batch {result['max_batch'] or 'default'}"
    return f"{result['cameras']} single-camera node(s)"


def row(result: dict[str, object], with_version: bool = False) -> str:
    rates = result["rates"]
    latency = " / ".join(
        f"{a:.0f}-{b:.0f}" for a, b in zip(result["p50"], result["p95"], strict=True)
    )
    gpu = f" | {result['gpu']:.0f}" if result["gpu"] is not None else ""
    version = f" {result['version']} |" if with_version else ""
    return (
        f"| {result['cameras']} | {mode_name(result)} |{version} {result['total']:.2f} | "
        f"{' / '.join(f'{r:.2f}' for r in rates)} | {100 * spread(rates):.0f}% | {latency} | "
        f"{result['rss']:.0f}{gpu} |"
    )


def goals(results: list[dict[str, object]], device: str, version: str) -> list[str]:
    """The goals for the rows of ``version`` ('' in a one-version run)."""

    def find(cameras: int, mode: str, max_batch: int = 0):
        return next(
            (
                r
                for r in results
                if (r["version"], r["cameras"], r["mode"], r["max_batch"])
                == (version, cameras, mode, max_batch)
            ),
            None,
        )

    prefix = f"- {version}: " if version else "- "
    lines = []
    one, six, separate = find(1, "batched"), find(6, "batched"), find(6, "separate")
    if six:
        slowest = min(six["rates"])
        verdict = "met" if slowest >= CAMERA_RATE_GOAL else "NOT met"
        lines.append(
            f"{prefix}6 cameras in one node: slowest camera {slowest:.1f} outputs/s, total "
            f"{six['total']:.1f}/s (issue 23 goal on CUDA: every camera >= "
            f"{CAMERA_RATE_GOAL:g}: {verdict})."
        )
    if six and separate and six["gpu"] is not None and separate["gpu"]:
        share = six["gpu"] / separate["gpu"]
        verdict = "met" if share <= GPU_MEMORY_GOAL else "NOT met"
        lines.append(
            f"{prefix}GPU memory of one 6-camera node / six single-camera nodes: "
            f"{six['gpu']:.0f} / {separate['gpu']:.0f} MiB = {share:.2f} (goal <= 1/3: {verdict})."
        )
    if one and six:
        ratio = six["rss"] / one["rss"]
        verdict = "met" if ratio <= 1.25 else "NOT met"
        text = (
            f"{prefix}RSS of one 6-camera node / one 1-camera node: {ratio:.2f} (goal <= 1.25: "
            f"{verdict})"
        )
        if separate:
            text += f"; six single-camera nodes: {separate['rss'] / one['rss']:.2f}x"
        lines.append(text + ".")
    batched = [
        r
        for r in results
        if r["version"] == version and r["mode"] == "batched" and r["cameras"] > 1
    ]
    if batched:
        worst = max(spread(r["rates"]) for r in batched)
        verdict = "met" if worst <= 0.10 else "NOT met"
        lines.append(
            f"{prefix}per-camera output rates of the batched node within {100 * worst:.0f}% of "
            f"each other at worst (goal <= 10%: {verdict})."
        )
    if six and separate:
        ratio = six["total"] / separate["total"] if separate["total"] else float("nan")
        where = "" if torch.device(device).type == "cuda" else " (CPU: for information)"
        lines.append(
            f"{prefix}6-camera throughput, one batched node / six nodes: {ratio:.2f}x{where}."
        )
    return lines


def comparison(results: list[dict[str, object]], before: str, after: str) -> str:
    """Before/after table: one row per (cameras, nodes) measured with both versions."""

    def values(r: dict[str, object]) -> list[float]:
        p50 = [v for v in r["p50"] if v == v]
        return [
            r["total"],
            min(r["rates"]),
            float(np.median(p50)) if p50 else float("nan"),
            r["rss"],
            r["gpu"] if r["gpu"] is not None else float("nan"),
        ]

    keys, olds, news = [], [], []
    for old in (r for r in results if r["version"] == before):
        new = next(
            (
                r
                for r in results
                if r["version"] == after
                and (r["cameras"], r["mode"], r["max_batch"])
                == (old["cameras"], old["mode"], old["max_batch"])
            ),
            None,
        )
        if new is not None:
            keys.append(f"{old['cameras']} camera(s), {mode_name(old)}")
            olds.append(values(old))
            news.append(values(new))
    columns = [
        "total outputs/s",
        "slowest camera outputs/s",
        "latency p50 ms (median of cameras)",
        "total RSS MB",
        "GPU memory MiB",
    ]
    if all(r["gpu"] is None for r in results):  # no GPU: no column of dashes
        columns, olds, news = columns[:-1], [v[:-1] for v in olds], [v[:-1] for v in news]
    return before_after_table(keys, columns, olds, news)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--model-config", default="config/model_small.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cameras", default="1,2,4,6")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--rate", type=float, default=30.0, help="Hz per camera")
    parser.add_argument("--input-width", type=int, help="network input (node default 768)")
    parser.add_argument("--input-height", type=int, help="network input (node default 384)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured per run")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after warm-up")
    parser.add_argument(
        "--modes",
        default="batched,separate",
        help="which rows per camera count: batched (one node), separate (a node per camera)",
    )
    add_argument(parser)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} not found")
    if (args.input_width is None) != (args.input_height is None):
        parser.error("give --input-width and --input-height together")
    modes = args.modes.split(",")
    if not modes or set(modes) - {"batched", "separate"}:
        parser.error("--modes: a comma-separated subset of batched,separate")
    counts = [int(n) for n in args.cameras.split(",")]
    found = versions(args.baseline)
    named = len(found) > 1
    ensure_private_network()
    import rclpy

    rclpy.init()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or untrained_checkpoint(args.model_config, Path(folder))
        checkpoint = checkpoint.resolve()  # a baseline's nodes start in another folder
        cpu = torch.device(args.device).type == "cpu"
        for cameras in counts:
            plans = [("batched", 0)] if "batched" in modes else []
            if cpu and cameras > 1 and "batched" in modes:
                plans.append(("batched", cameras))
            if "separate" in modes:
                plans.append(("separate", 0))
            for mode, max_batch in plans:
                for version in found:
                    label = version.label if named else ""
                    result = run(args, checkpoint, cameras, mode, max_batch, version, label)
                    print(row(result, named), flush=True)
                    results.append(result)
    rclpy.try_shutdown()
    gpu_column = " GPU memory (MiB) |" if results and results[0]["gpu"] is not None else ""
    version_header, version_rule = (" node |", " --- |") if named else ("", "")
    table = "\n".join(
        [
            f"| cameras | nodes |{version_header} total outputs/s | per-camera outputs/s | "
            "spread | latency p50-p95 per camera (ms) | total RSS (MB) |" + gpu_column,
            f"| ---: | --- |{version_rule} ---: | --- | ---: | --- | ---: |"
            + (" ---: |" if gpu_column else ""),
            *(row(r, named) for r in results),
        ]
    )
    network = (
        f"{args.input_width}x{args.input_height}" if args.input_width else "the node's default"
    )
    model = args.checkpoint or f"untrained {args.model_config}"
    labels = [v.label for v in found] if named else [""]
    parts = [
        f"### Multi-camera, {args.device}, {len(counts)} camera counts, {args.width}x{args.height} "
        f"rgb8 at {args.rate:g} Hz per camera\n\n{header('multi_camera')}\n"
        f"Model: {model}, network input {network}; best-effort input, depth 1, no overlay "
        f"subscriber; {args.seconds:g} s measured per row after every camera's first output. "
        f"spread = (max - min) / max of the per-camera rates. Versions: {versions_line(found)}."
        f"\n\n{table}\n"
    ]
    if named:
        parts.append(f"\nBefore -> after (after / before):\n\n{comparison(results, *labels)}\n")
    goal_lines = [line for label in labels for line in goals(results, args.device, label)]
    parts.append("\n" + "\n".join(goal_lines) + "\n")
    section = "".join(parts)
    print(section)
    if args.write:
        write_section(f"multi-camera-{torch.device(args.device).type}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
