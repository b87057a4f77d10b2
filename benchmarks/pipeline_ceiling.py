"""The node's own ceiling: its highest sustained output rate and its host cost per frame with the
network replaced by a zero-cost stand-in (no GPU needed; no GPU can make the node faster).

    .venv/bin/python benchmarks/pipeline_ceiling.py [--device cpu|cuda]
        [--sizes 640x480,1280x720,2048x1024] [--cameras 1,2,4,6] [--seconds 3] [--write]

Runs the real perception_node (its own process, over DDS, inside a loopback-only namespace) with
``device:=benchmark-standin`` (``benchmark-standin:cuda`` with ``--device cuda``: the device
step on the GPU): everything but the network runs for real (checks, conversion, upload,
resize, normalisation, mask argmax and up-sampling, post-processing, message building,
serialisation, publishing), the network's outputs are fixed tensors of its shapes. One node per
camera count (``cameras`` parameter; where the node has none, counts above 1 are reported as not
measured). Per frame size, first without and then with subscribers on ``overlay`` and
``semantic_color`` (as rviz has), a client feeds every camera bgr8 frames (the usual camera
driver encoding; reliable QoS) keeping two frames in flight per camera: each output lets the
next frame go. After a warm-up, for ``--seconds``:

- outputs/s: detections messages received per second (all cameras);
- host ms/frame: the node process's CPU time (user + system, all threads) per output;
- of which device step: the CPU time of the stand-in Predictor's ``predict`` on one such frame
  (median of 10, measured in this process before the nodes start): upload, resize,
  normalisation, class ids, mask up-sampling, post-processing. With ``--device cpu`` it runs on
  the CPU; a GPU node runs it on the GPU, so host ms minus it is what that node's host pays;
- latency p50: camera stamp sent -> detections received.

The goals (issue 15, 2048x1024, one camera): host cost <= 8 ms/frame without overlay
subscribers, <= 20 ms with overlay and semantic_color subscribed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import ROOT, header, write_section

from mtl_perception.inference.device_names import STANDIN_DEVICE
from mtl_perception.ros.isolation import ensure_private_network
from mtl_perception.ros.node_process import NodeProcess, start_node

NODE = "ceiling_node"
IN_FLIGHT = 2  # frames per camera between the client and the node's outputs
WARMUP_OUTPUTS = 4  # per camera, before the measurement starts
STALL_S = 2.0  # a camera without an output this long gets a new frame (a frame was dropped)
GOALS_MS = {False: 8.0, True: 20.0}  # host cost at 2048x1024, one camera, without / with overlay
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Camera:
    """One camera as the client sees it: its input topic, its outputs, its frames in flight."""

    image_topic: str
    detections_topic: str
    semantic_topic: str
    overlay_topic: str
    colour_topic: str
    publisher: object = None
    message: object = None
    counter: int = 0
    sent: dict[int, float] = field(default_factory=dict)
    outputs: int = 0
    last_output: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Case:
    size: tuple[int, int]
    cameras: int
    overlay: bool
    rate: float = float("nan")
    host_ms: float = float("nan")
    device_ms: float = float("nan")
    latency_ms: float = float("nan")
    per_camera: tuple[float, float] = (float("nan"), float("nan"))
    note: str = ""


def device_step_ms(size: tuple[int, int], device: str, threads: int) -> float:
    """Median CPU time (ms, this thread) of the stand-in Predictor's ``predict`` on one frame:
    upload, resize, normalisation, mask and post-processing, which a GPU node runs on the GPU."""
    import torch

    from mtl_perception.data.synthetic import generate_scene
    from mtl_perception.inference.predictor import PredictorConfig
    from mtl_perception.inference.standin import standin_factory

    torch.set_num_threads(threads)
    predictor = standin_factory()(PredictorConfig(device=device))
    rgb = generate_scene(*size, 5)[0]
    times = []
    for index in range(12):
        start = time.thread_time()
        predictor.predict(rgb)
        if index >= 2:
            times.append(time.thread_time() - start)
    return 1e3 * float(np.median(times))


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def start_ceiling_node(device: str, cameras: int, threads: int, log: Path) -> NodeProcess:
    params: dict[str, object] = {
        "device": device,
        "publish_overlay": True,
        "qos_reliability": "reliable",
        "qos_depth": IN_FLIGHT,
        "max_pixels": 4096 * 4096,
    }
    if cameras > 1:
        params["cameras"] = f"[{','.join(f'cam{i}' for i in range(cameras))}]"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return start_node(NODE, parameters=params, env=env, cwd=ROOT, log=log)


class Client:
    """The benchmark's ROS side: discovers the node's topics, feeds frames, counts outputs."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        rclpy.init()
        self.node = rclpy.create_node("ceiling_client")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.cameras: list[Camera] = []
        self.running = False
        self._subscriptions: list[object] = []
        self.pid = 0  # the node process (set per node)
        self.cpu = 0.0  # its CPU seconds in the last measurement
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def discover(self, process: subprocess.Popen, cameras: int, log: Path) -> list[Camera] | None:
        """The node's cameras (input and output topics), once it is active; None where the node
        came up with fewer cameras than asked for (no ``cameras`` parameter)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the node exited:\n{log.read_text()[-3000:]}")
            try:
                outputs = self.node.get_publisher_names_and_types_by_node(NODE, "/")
                inputs = self.node.get_subscriber_names_and_types_by_node(NODE, "/")
            except Exception:  # not discovered yet
                outputs, inputs = [], []
            detections = sorted(t for t, _ in outputs if t.endswith("/detections"))
            images = sorted(t for t, _ in inputs if t.endswith("image"))
            if detections and images:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the node did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1.0)  # every camera's topics (they are created one after another)
        outputs = [t for t, _ in self.node.get_publisher_names_and_types_by_node(NODE, "/")]
        inputs = [t for t, _ in self.node.get_subscriber_names_and_types_by_node(NODE, "/")]
        detections = sorted(t for t in outputs if t.endswith("/detections"))
        images = sorted(t for t in inputs if t.endswith("image"))
        if len(images) != cameras or len(detections) != cameras:
            return None
        found = []
        for image, detection in zip(images, detections, strict=True):
            base = detection.rsplit("/", 1)[0]
            found.append(
                Camera(
                    image,
                    detection,
                    f"{base}/semantic",
                    f"{base}/overlay",
                    f"{base}/semantic_color",
                )
            )
        return found

    def use(self, cameras: list[Camera], size: tuple[int, int], overlay: bool) -> None:
        """Publishers and subscriptions for one case; frames of ``size`` (a synthetic scene)."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        from vision_msgs.msg import Detection2DArray

        from mtl_perception.data.synthetic import generate_scene
        from mtl_perception.ros.conversions import encode_image

        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        qos = QoSProfile(depth=IN_FLIGHT + 1, reliability=ReliabilityPolicy.RELIABLE)
        rgb = generate_scene(*size, 5)[0]
        for index, camera in enumerate(cameras):
            camera.message = encode_image(rgb[..., ::-1], "bgr8", Header(frame_id=f"cam{index}"))
            if camera.publisher is None:
                camera.publisher = self.node.create_publisher(Image, camera.image_topic, qos)
            self._subscriptions.append(
                self.node.create_subscription(
                    Detection2DArray,
                    camera.detections_topic,
                    lambda msg, camera=camera: self._arrived(camera, msg),
                    qos,
                )
            )
            topics = [camera.semantic_topic]
            topics += [camera.overlay_topic, camera.colour_topic] if overlay else []
            for topic in topics:
                self._subscriptions.append(
                    self.node.create_subscription(Image, topic, lambda _: None, qos)
                )
        self.cameras = cameras

    def _publish(self, camera: Camera) -> None:
        camera.counter += 1
        stamp = camera.message.header.stamp
        stamp.sec, stamp.nanosec = divmod(camera.counter, 10**9)
        camera.sent[camera.counter] = time.monotonic()
        camera.publisher.publish(camera.message)

    def _arrived(self, camera: Camera, msg) -> None:
        now = time.monotonic()
        key = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with self.lock:
            sent = camera.sent.pop(key, None)
            if sent is None:
                return  # a frame of an earlier case
            camera.outputs += 1
            camera.last_output = now
            camera.latencies.append(now - sent)
            if self.running:
                self._publish(camera)

    def run(self, seconds: float) -> tuple[float, list[int], list[float]]:
        """Feeds every camera; returns (measured seconds, outputs per camera, latencies s)."""
        with self.lock:
            for camera in self.cameras:
                camera.sent.clear()
                camera.outputs, camera.last_output = 0, time.monotonic()
                camera.latencies = []
            self.running = True
            for camera in self.cameras:
                for _ in range(IN_FLIGHT):
                    self._publish(camera)
        deadline = time.monotonic() + 120
        while min(c.outputs for c in self.cameras) < WARMUP_OUTPUTS:
            self._unstall()
            if time.monotonic() > deadline:
                raise RuntimeError("no outputs from the node within 120 s")
            time.sleep(0.02)
        with self.lock:
            start = time.monotonic()
            before = [c.outputs for c in self.cameras]
            for camera in self.cameras:
                camera.latencies = []
        cpu_before = cpu_seconds(self.pid)
        while time.monotonic() - start < seconds:
            self._unstall()
            time.sleep(0.05)
        with self.lock:
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(self.pid) - cpu_before
            outputs = [c.outputs - b for c, b in zip(self.cameras, before, strict=True)]
            latencies = [v for c in self.cameras for v in c.latencies]
            self.running = False
        self.cpu = cpu
        time.sleep(0.5)  # frames in flight come back before the next case
        return elapsed, outputs, latencies

    def _unstall(self) -> None:
        now = time.monotonic()
        with self.lock:
            for camera in self.cameras:
                if now - camera.last_output > STALL_S:  # its frames were dropped: send again
                    camera.last_output = now
                    self._publish(camera)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        rclpy.try_shutdown()


def measure(client: Client, cameras: list[Camera], case: Case, seconds: float) -> None:
    client.use(cameras, case.size, case.overlay)
    elapsed, outputs, latencies = client.run(seconds)
    total = sum(outputs)
    case.rate = total / elapsed
    case.host_ms = 1e3 * client.cpu / max(total, 1)
    case.latency_ms = 1e3 * float(np.median(latencies)) if latencies else float("nan")
    rates = [n / elapsed for n in outputs]
    case.per_camera = (min(rates), max(rates))


def table(cases: list[Case]) -> str:
    lines = [
        "| frame | cameras | overlay + semantic_color subscribed | outputs/s (all cameras) | "
        "per camera min-max | host ms/frame | of which device step | latency p50 ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        size = f"{c.size[0]}x{c.size[1]}"
        if c.note:
            lines.append(f"| {size} | {c.cameras} | {'yes' if c.overlay else 'no'} | {c.note} ||||")
            continue
        lines.append(
            f"| {size} | {c.cameras} | {'yes' if c.overlay else 'no'} | {c.rate:.1f} | "
            f"{c.per_camera[0]:.1f}-{c.per_camera[1]:.1f} | {c.host_ms:.1f} | "
            f"{c.device_ms:.1f} | {c.latency_ms:.0f} |"
        )
    return "\n".join(lines)


def goals(cases: list[Case]) -> str:
    lines = []
    for overlay, limit in GOALS_MS.items():
        found = [
            c
            for c in cases
            if c.size == (2048, 1024) and c.cameras == 1 and c.overlay == overlay and not c.note
        ]
        what = "with overlay and semantic_color subscribed" if overlay else "without overlay"
        if not found:
            lines.append(f"- 2048x1024, one camera, {what}: not measured in this run.")
            continue
        ms, device_ms = found[0].host_ms, found[0].device_ms
        verdict = "met" if ms <= limit else "NOT met"
        rest = ms - device_ms
        verdict += (
            f" ({rest:.1f} ms without the device step: {'met' if rest <= limit else 'NOT met'})"
        )
        lines.append(
            f"- 2048x1024, one camera, {what}: {ms:.1f} ms/frame, goal <= {limit:g}: {verdict}."
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", default="640x480,1280x720,2048x1024")
    parser.add_argument("--cameras", default="1,2,4,6")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    parser.add_argument(
        "--node-threads",
        type=int,
        default=1,
        help="torch threads of the node (OMP_NUM_THREADS); 1: the device step of a GPU node "
        "runs on the GPU, and on a shared 2-core machine a second thread only adds waiting",
    )
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    counts = [int(n) for n in args.cameras.split(",")]
    device = STANDIN_DEVICE if args.device == "cpu" else f"{STANDIN_DEVICE}:cuda"
    ensure_private_network()
    load_before = os.getloadavg()
    torch_device = "cpu" if args.device == "cpu" else "cuda"
    step_ms = {size: device_step_ms(size, torch_device, args.node_threads) for size in sizes}
    client = Client()
    cases: list[Case] = []
    started = time.monotonic()
    try:
        for count in counts:
            log = Path(f"/tmp/mtl_pipeline_ceiling_{count}.log")
            node = start_ceiling_node(device, count, args.node_threads, log)
            client.pid = node.pid
            try:
                cameras = client.discover(node.process, count, log)
                for overlay in (False, True):
                    for size in sizes:
                        case = Case(size, count, overlay, device_ms=step_ms[size])
                        if cameras is None:
                            case.note = "not measured: the node has no `cameras` parameter"
                        else:
                            measure(client, cameras, case, args.seconds)
                        cases.append(case)
                        print(table([case]).splitlines()[-1], flush=True)
            finally:
                node.stop(timeout=30)
    finally:
        client.close()
    load_after = os.getloadavg()
    section = (
        f"### Pipeline ceiling, {args.device} (network replaced by the zero-cost stand-in)\n\n"
        f"{header('pipeline_ceiling')}\n"
        f"Node: `device:={device}` (the network's outputs are fixed tensors of its "
        f"shapes; everything else runs; torch threads {args.node_threads}), network input "
        "768x384, bgr8 frames over DDS (reliable, "
        f"{IN_FLIGHT} in flight per camera), {args.seconds:g} s measured per case after a "
        f"warm-up. Host ms/frame: the node process's CPU time per output (all threads). Load "
        f"average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"{time.monotonic() - started:.0f} s in all.\n\n{table(cases)}\n\nGoals:\n{goals(cases)}\n"
    )
    print(section)
    if args.write:
        write_section(f"pipeline-ceiling-{args.device}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
