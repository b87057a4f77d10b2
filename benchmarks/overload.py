"""Overload: camera frames at 10x the node's processing rate for 60 s.

    .venv/bin/python benchmarks/overload.py --checkpoint CKPT [--device cpu|cuda]
        [--width 1024 --height 512] [--factor 10] [--seconds 60] [--write]

Starts the perception node (its defaults: best-effort input, depth 1, latest frame wins) in a
loopback-only namespace, measures how fast it processes a frame of this size (median of a
paced warm-up phase), then publishes at ``factor`` times that rate for ``seconds``. Reports per
5-s window the end-to-end latency p50/p99 (camera stamp -> mask and detections both received),
outputs per second and the node's resident memory, plus the node's own frame counters; draws
docs/images/overload_{device}.png.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, header, write_section

from mtl_perception.ros.isolation import ensure_private_network
from mtl_perception.ros.node_process import start_node

NODE = "perception_node"
TOPIC = "/overload/image"
WINDOW = 5.0  # seconds per reported window


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoints/final.pt"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} not found (make demo writes one)")
    ensure_private_network()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from mtl_perception.data.synthetic import generate_scene
    from mtl_perception.ros.conversions import encode_image

    log = Path("/tmp/mtl_overload_node.log")
    params = {"checkpoint": args.checkpoint, "device": args.device, "publish_overlay": False}
    node = start_node(NODE, remaps={"image": TOPIC}, parameters=params, log=log)
    rclpy.init()
    player = rclpy.create_node("overload_player")
    sent: dict[int, float] = {}
    halves: dict[int, set[str]] = {}
    arrivals: list[tuple[float, float]] = []  # (arrival time, latency s)
    counters: dict[str, str] = {}
    lock = threading.Lock()

    def arrived(kind: str, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        now = time.monotonic()
        with lock:
            got = halves.setdefault(stamp, set())
            got.add(kind)
            if len(got) == 2 and stamp in sent:
                arrivals.append((now, now - sent[stamp]))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NODE}:"):
                counters.update({kv.key: kv.value for kv in status.values})

    player.create_subscription(
        Image, f"/{NODE}/semantic", lambda m: arrived("mask", m), qos_profile_sensor_data
    )
    player.create_subscription(
        Detection2DArray,
        f"/{NODE}/detections",
        lambda m: arrived("det", m),
        qos_profile_sensor_data,
    )
    player.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    publisher = player.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    executor = SingleThreadedExecutor()
    executor.add_node(player)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    frame = generate_scene(args.width, args.height, 3)[0]
    frame_msg = encode_image(frame, "rgb8", Header(frame_id="camera"))
    counter = 0

    def publish() -> None:
        nonlocal counter
        counter += 1
        frame_msg.header.stamp.sec, frame_msg.header.stamp.nanosec = divmod(counter, 10**9)
        with lock:
            sent[counter] = time.monotonic()
        publisher.publish(frame_msg)

    try:
        deadline = time.monotonic() + 180
        while publisher.get_subscription_count() == 0 or not counters:
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        # Paced warm-up: one frame at a time, to learn the processing rate.
        paced = []
        for _ in range(12):
            before = len(arrivals)
            publish()
            start = time.monotonic()
            while len(arrivals) == before and time.monotonic() - start < 30:
                time.sleep(0.002)
            paced.append(time.monotonic() - start)
        per_frame = float(np.median(paced[2:]))
        rate = args.factor / per_frame
        print(f"processing ~{1 / per_frame:.1f} fps; publishing {rate:.1f} Hz for {args.seconds} s")
        with lock:
            arrivals.clear()
        received_before = int(counters.get("received", 0))
        dropped_before = int(counters.get("dropped", 0))
        memory: list[tuple[float, float]] = []
        start = time.monotonic()
        next_due, next_memory = start, start
        while (now := time.monotonic()) - start < args.seconds:
            if now >= next_memory:
                memory.append((now - start, rss_mb(node.pid)))
                next_memory += 1.0
            if now >= next_due:
                publish()
                next_due += 1.0 / rate
            time.sleep(max(0.0, min(next_due, next_memory) - time.monotonic()))
        published = counter - 12
        time.sleep(3.0)  # in-flight frame, then a /diagnostics with the final counters
    finally:
        executor.shutdown()
        node.stop(timeout=30)
        rclpy.try_shutdown()

    with lock:
        series = [(t - start, lat * 1e3) for t, lat in arrivals]
    rows = []
    windows = int(np.ceil(args.seconds / WINDOW))
    for w in range(windows):
        lo, hi = w * WINDOW, (w + 1) * WINDOW
        lat = np.array([ms for t, ms in series if lo <= t < hi])
        rss = [mb for t, mb in memory if lo <= t < hi]
        p50 = f"{np.percentile(lat, 50):.0f}" if lat.size else "-"
        p99 = f"{np.percentile(lat, 99):.0f}" if lat.size else "-"
        rows.append(
            f"| {lo:.0f}-{hi:.0f} | {p50} | {p99} | {lat.size / WINDOW:.1f} | "
            f"{max(rss) if rss else float('nan'):.0f} |"
        )
    received = int(counters.get("received", 0)) - received_before
    dropped = int(counters.get("dropped", 0)) - dropped_before
    all_lat = np.array([ms for _, ms in series])
    picture = ROOT / "docs" / "images" / f"overload_{torch.device(args.device).type}.png"
    plot(series, memory, picture, rate)
    table = "\n".join(
        [
            "| window (s) | latency p50 (ms) | latency p99 (ms) | outputs/s | node RSS (MB) |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    section = (
        f"### Overload, {args.device}, {args.width}x{args.height} rgb8 at {rate:.1f} Hz "
        f"({args.factor:g}x the processing rate) for {args.seconds:g} s\n\n"
        f"{header('overload')}\nModel: {args.checkpoint}; node defaults (best-effort input, "
        f"depth 1, latest frame wins).\n\n{table}\n\n"
        f"Whole run: {published} frames published, node received {received}, produced "
        f"{len(series)} outputs ({len(series) / args.seconds:.1f}/s; paced warm-up "
        f"{1 / per_frame:.1f} fps), dropped {dropped}; latency p50 "
        f"{np.percentile(all_lat, 50):.0f} ms, p99 {np.percentile(all_lat, 99):.0f} ms; "
        f"node RSS {memory[0][1]:.0f} -> {memory[-1][1]:.0f} MB. "
        f"![overload](images/{picture.name})\n"
    )
    print(section)
    if args.write:
        write_section(f"overload-{torch.device(args.device).type}", section)
    return 0


def plot(series, memory, path: Path, rate: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    if series:
        times, latency = zip(*series, strict=True)
        top.plot(times, latency, ".", markersize=3)
    top.set_ylabel("latency (ms)")
    top.set_title(f"perception node at {rate:.1f} Hz input")
    if memory:
        times, rss = zip(*memory, strict=True)
        bottom.plot(times, rss)
    bottom.set_ylabel("node RSS (MB)")
    bottom.set_xlabel("time (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
