"""The node's own ceiling: its highest sustained output rate and its host cost per frame with the
network replaced by a zero-cost stand-in (no GPU needed; no GPU can make the node faster).

    .venv/bin/python benchmarks/pipeline_ceiling.py [--device cpu|cuda]
        [--sizes 640x480,1280x720,2048x1024] [--cameras 1,2,4,6] [--seconds 3]
        [--baseline REF] [--write]

Runs the real perception_node (its own process, over DDS, inside a loopback-only namespace) with
``device:=benchmark-standin`` (``benchmark-standin:cuda`` with ``--device cuda``: the device
step on the GPU): everything but the network runs for real (checks, conversion, upload,
resize, normalisation, mask argmax and up-sampling, post-processing, message building,
serialisation, publishing), the network's outputs are fixed tensors of its shapes. One node per
camera count (``cameras`` parameter; where the node has none, counts above 1 are reported as not
measured). Per frame size, first without and then with subscribers on ``overlay`` and
``semantic_color`` (as rviz has; drawn by the perception node itself where it has
``publish_overlay``, else by the overlay node, started for those cases), a client feeds every
camera bgr8 frames (the usual camera driver encoding; reliable QoS) keeping two frames in flight
per camera: each output lets the next frame go. After a warm-up, for ``--seconds``:

- outputs/s: detections messages received per second (all cameras);
- host ms/frame: the perception node process's CPU time (user + system, all threads) per output;
- device step: the CPU time of the stand-in Predictor's ``predict`` on one such frame as that
  version's node hands it over, with its Predictor defaults (median of 10, measured in a
  process of that version before the nodes start; benchmarks/frame_path.py): upload, resize,
  normalisation, class ids, mask up-sampling, post-processing. With ``--device cpu`` it runs on
  the CPU; a GPU node runs it on the GPU;
- host ms without device step: host ms/frame minus the device step, what the host of a GPU node
  pays (the issue 23 goals on the 2-core CPU);
- overlay node ms/frame: the overlay node's CPU time per output (not counted in host ms);
  overlays/s: overlay messages received per second;
- latency p50: camera stamp sent -> detections received.

``--baseline REF`` (benchmarks/baseline.py) runs the node of REF as well (before, after, case by
case; the two nodes in their own namespaces, the idle one waiting) and adds a before/after table.

Goals (issue 23, 2048x1024, one camera): on the CPU, host ms without the device step <= 6
without overlay subscribers and <= 8 with them; on CUDA, host ms/frame <= 8 without overlay;
with overlay and semantic_color subscribed, the perception node's host cost rises by <= 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baseline import Version, add_argument, before_after_table, versions, versions_line
from common import header, write_section

from mtl_perception.inference.device_names import STANDIN_DEVICE
from mtl_perception.ros.isolation import ensure_private_network
from mtl_perception.ros.node_process import NodeProcess, start_node, stop_nodes

NODE = "ceiling_node"
OVERLAY_MODULE = "mtl_perception.ros.overlay_node"
IN_FLIGHT = 2  # frames per camera between the client and the node's outputs
WARMUP_OUTPUTS = 4  # per camera, before the measurement starts
OVERLAY_WARMUP_S = 60.0  # the longest wait for every camera's first overlay
STALL_S = 2.0  # a camera without an output this long gets a new frame (a frame was dropped)
GOAL_SIZE = (2048, 1024)
CPU_GOALS_MS = {False: 6.0, True: 8.0}  # host ms without the device step, without / with overlay
CUDA_GOAL_MS = 8.0  # host ms/frame without overlay
OVERLAY_RISE_MS = 2.0  # the perception node's host cost with overlay minus without
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NAN = float("nan")


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
    overlays: int = 0
    last_output: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Case:
    size: tuple[int, int]
    cameras: int
    overlay: bool
    version: str = ""
    rate: float = NAN
    host_ms: float = NAN
    device_ms: float = NAN
    overlay_ms: float = NAN  # the overlay node's CPU per output (NaN: no overlay node)
    overlay_rate: float = NAN
    latency_ms: float = NAN
    per_camera: tuple[float, float] = (NAN, NAN)
    note: str = ""

    @property
    def rest_ms(self) -> float:
        """Host ms/frame without the device step."""
        return self.host_ms - self.device_ms

    @property
    def key(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}"
        return f"{size}, {self.cameras} camera(s), overlay {'yes' if self.overlay else 'no'}"


@dataclass
class Setup:
    """One version's node for one camera count: its process, topics and overlay nodes."""

    version: Version
    namespace: str
    node: NodeProcess
    log: Path
    cameras: list[Camera] | None = None
    overlay_nodes: list[NodeProcess] = field(default_factory=list)


def device_step_ms(size: tuple[int, int], device: str, threads: int) -> float:
    """Median CPU time (ms, this thread) of the stand-in Predictor's ``predict`` on one bgr8
    frame as the node hands it over (benchmarks/frame_path.py: the pixels as they are, or the
    node's RGB copy before issue 23) with the node's Predictor defaults: upload, resize,
    normalisation, mask and post-processing, which a GPU node runs on the GPU."""
    import torch
    from frame_path import device_input, node_config

    from mtl_perception.data.synthetic import generate_scene
    from mtl_perception.inference.standin import standin_factory

    torch.set_num_threads(threads)
    predictor = standin_factory()(node_config(device))
    bgr = np.ascontiguousarray(generate_scene(*size, 5)[0][..., ::-1])
    image, kwargs = device_input(predictor, bgr)
    times = []
    for index in range(12):
        start = time.thread_time()
        predictor.predict(image, **kwargs)
        if index >= 2:
            times.append(time.thread_time() - start)
    return 1e3 * float(np.median(times))


def device_steps(
    version: Version, sizes: list[tuple[int, int]], device: str, threads: int
) -> dict[tuple[int, int], float]:
    """:func:`device_step_ms` per size, measured by a process of ``version`` (its Predictor)."""
    command = [
        sys.executable, __file__, "--device-step-only", "--device", device,
        "--node-threads", str(threads), "--sizes", ",".join(f"{w}x{h}" for w, h in sizes),
    ]  # fmt: skip
    result = subprocess.run(command, env=version.env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"device step of {version.label} failed:\n{result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {parse_size(size): ms for size, ms in found.items()}


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def camera_names(cameras: int) -> list[str]:
    """The cameras of a node: the unnamed default camera alone, else cam0, cam1, ..."""
    return [""] if cameras == 1 else [f"cam{i}" for i in range(cameras)]


def start_ceiling_node(
    version: Version, namespace: str, device: str, cameras: int, threads: int, log: Path
) -> NodeProcess:
    params: dict[str, object] = {
        "device": device,
        "qos_reliability": "reliable",
        "qos_depth": IN_FLIGHT,
        "max_pixels": 4096 * 4096,
        **version.overlay_parameters(),
    }
    if cameras > 1:
        params["cameras"] = f"[{','.join(camera_names(cameras))}]"
    env = version.env({**os.environ, "OMP_NUM_THREADS": str(threads)})
    return start_node(
        NODE, namespace=namespace or None, parameters=params, env=env, cwd=version.cwd, log=log
    )


def start_overlay_node(setup: Setup, cameras: int, threads: int) -> NodeProcess:
    """The overlay node that draws ``setup``'s node's overlay and semantic_color (a version
    without ``publish_overlay``): one for all its cameras, publishing under the perception
    node's name."""
    params: dict[str, object] = {
        "perception_node": NODE,
        "qos_reliability": "reliable",  # the camera subscription, as the perception node's
        "max_pixels": 4096 * 4096,
    }
    if cameras > 1:
        params["cameras"] = f"[{','.join(camera_names(cameras))}]"
    env = setup.version.env({**os.environ, "OMP_NUM_THREADS": str(threads)})
    return start_node(
        f"{NODE}_overlay",
        namespace=setup.namespace or None,
        parameters=params,
        module=OVERLAY_MODULE,
        env=env,
        cwd=setup.version.cwd,
        log=setup.log.with_suffix(".overlay.log"),
    )


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
        self.pids: dict[str, list[int]] = {"node": [], "overlay": []}  # per process role
        self.cpu: dict[str, float] = {}  # their CPU seconds in the last measurement
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def discover(self, setup: Setup, cameras: int) -> list[Camera] | None:
        """The node's cameras (input and output topics), once it is active; None where the node
        came up with fewer cameras than asked for (no ``cameras`` parameter)."""
        namespace = setup.namespace or "/"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if setup.node.process.poll() is not None:
                raise RuntimeError(f"the node exited:\n{setup.log.read_text()[-3000:]}")
            try:
                outputs = self.node.get_publisher_names_and_types_by_node(NODE, namespace)
                inputs = self.node.get_subscriber_names_and_types_by_node(NODE, namespace)
            except Exception:  # not discovered yet
                outputs, inputs = [], []
            detections = sorted(t for t, _ in outputs if t.endswith("/detections"))
            images = sorted(t for t, _ in inputs if t.endswith("image"))
            if detections and images:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the node did not come up:\n{setup.log.read_text()[-3000:]}")
        time.sleep(1.0)  # every camera's topics (they are created one after another)
        outputs = [t for t, _ in self.node.get_publisher_names_and_types_by_node(NODE, namespace)]
        inputs = [t for t, _ in self.node.get_subscriber_names_and_types_by_node(NODE, namespace)]
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

    def wait_for_drawers(self, setup: Setup, timeout: float = 120.0) -> None:
        """Waits until every camera's overlay and semantic_color have a publisher (the overlay
        node's, started just before)."""
        topics = [t for c in setup.cameras or [] for t in (c.overlay_topic, c.colour_topic)]
        deadline = time.monotonic() + timeout
        while any(self.node.count_publishers(topic) == 0 for topic in topics):
            for process in setup.overlay_nodes:
                if process.process.poll() is not None:
                    raise RuntimeError(f"the overlay node exited: {process.failure()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no publisher of {topics} within {timeout:.0f} s")
            time.sleep(0.2)

    def _qos_of(self, topic: str, depth: int):
        """Reliable QoS of ``depth``, best effort where the topic's publishers are."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        publishers = self.node.get_publishers_info_by_topic(topic)
        best_effort = any(
            p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers
        )
        reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
        return QoSProfile(depth=depth, reliability=reliability)

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
            self._subscriptions.append(
                self.node.create_subscription(Image, camera.semantic_topic, lambda _: None, qos)
            )
            if overlay:
                self._subscriptions.append(
                    self.node.create_subscription(
                        Image,
                        camera.overlay_topic,
                        lambda _, camera=camera: self._overlay_arrived(camera),
                        self._qos_of(camera.overlay_topic, IN_FLIGHT + 1),
                    )
                )
                self._subscriptions.append(
                    self.node.create_subscription(
                        Image,
                        camera.colour_topic,
                        lambda _: None,
                        self._qos_of(camera.colour_topic, IN_FLIGHT + 1),
                    )
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

    def _overlay_arrived(self, camera: Camera) -> None:
        with self.lock:
            camera.overlays += 1

    def _cpu(self) -> dict[str, float]:
        return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in self.pids.items()}

    def run(self, seconds: float, overlay: bool) -> tuple[float, list[int], list[float], int]:
        """Feeds every camera; returns (measured seconds, outputs per camera, latencies s,
        overlays received)."""
        with self.lock:
            for camera in self.cameras:
                camera.sent.clear()
                camera.outputs, camera.overlays = 0, 0
                camera.last_output = time.monotonic()
                camera.latencies = []
            self.running = True
            for camera in self.cameras:
                for _ in range(IN_FLIGHT):
                    self._publish(camera)
        begun = time.monotonic()
        while min(c.outputs for c in self.cameras) < WARMUP_OUTPUTS or (
            overlay
            and min(c.overlays for c in self.cameras) == 0
            and time.monotonic() - begun < OVERLAY_WARMUP_S
        ):
            self._unstall()
            if time.monotonic() - begun > 120:
                raise RuntimeError("no outputs from the node within 120 s")
            time.sleep(0.02)
        with self.lock:
            start = time.monotonic()
            before = [c.outputs for c in self.cameras]
            overlays_before = sum(c.overlays for c in self.cameras)
            for camera in self.cameras:
                camera.latencies = []
        cpu_before = self._cpu()
        while time.monotonic() - start < seconds:
            self._unstall()
            time.sleep(0.05)
        with self.lock:
            elapsed = time.monotonic() - start
            cpu_after = self._cpu()
            outputs = [c.outputs - b for c, b in zip(self.cameras, before, strict=True)]
            overlays = sum(c.overlays for c in self.cameras) - overlays_before
            latencies = [v for c in self.cameras for v in c.latencies]
            self.running = False
        self.cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
        time.sleep(0.5)  # frames in flight come back before the next case
        return elapsed, outputs, latencies, overlays

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


def measure(client: Client, setup: Setup, case: Case, seconds: float) -> None:
    client.pids = {"node": [setup.node.pid], "overlay": [n.pid for n in setup.overlay_nodes]}
    client.use(setup.cameras, case.size, case.overlay)
    elapsed, outputs, latencies, overlays = client.run(seconds, case.overlay)
    total = sum(outputs)
    case.rate = total / elapsed
    case.host_ms = 1e3 * client.cpu["node"] / max(total, 1)
    if setup.overlay_nodes:
        case.overlay_ms = 1e3 * client.cpu["overlay"] / max(total, 1)
    if case.overlay:
        case.overlay_rate = overlays / elapsed
    case.latency_ms = 1e3 * float(np.median(latencies)) if latencies else NAN
    rates = [n / elapsed for n in outputs]
    case.per_camera = (min(rates), max(rates))


def _cell(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def table(cases: list[Case], with_version: bool) -> str:
    version_header, version_rule = ("node | ", "--- | ") if with_version else ("", "")
    lines = [
        f"| frame | cameras | overlay + semantic_color subscribed | {version_header}"
        "outputs/s (all cameras) | per camera min-max | host ms/frame | device step | "
        "host ms without device step | overlay node ms/frame | overlays/s | latency p50 ms |",
        f"| --- | ---: | --- | {version_rule}"
        "---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        size = f"{c.size[0]}x{c.size[1]}"
        start = f"| {size} | {c.cameras} | {'yes' if c.overlay else 'no'} | "
        start += f"{c.version} | " if with_version else ""
        if c.note:
            lines.append(f"{start}{c.note} |" + "|" * 7)  # the 7 columns after it empty
            continue
        lines.append(
            f"{start}{c.rate:.1f} | {c.per_camera[0]:.1f}-{c.per_camera[1]:.1f} | "
            f"{c.host_ms:.1f} | {c.device_ms:.1f} | {c.rest_ms:.1f} | {_cell(c.overlay_ms)} | "
            f"{_cell(c.overlay_rate)} | {c.latency_ms:.0f} |"
        )
    return "\n".join(lines)


def comparison(cases: list[Case], before: str, after: str) -> str:
    """The before/after table: one row per case measured with both versions."""
    pairs = []
    for old in cases:
        if old.version != before or old.note:
            continue
        new = next(
            (c for c in cases if c.version == after and c.key == old.key and not c.note), None
        )
        if new is not None:
            pairs.append((old, new))

    def values(c: Case) -> list[float]:
        return [c.rate, c.host_ms, c.rest_ms, c.latency_ms]

    return before_after_table(
        [old.key for old, _ in pairs],
        ["outputs/s", "host ms/frame", "host ms without device step", "latency p50 ms"],
        [values(old) for old, _ in pairs],
        [values(new) for _, new in pairs],
    )


def goals(cases: list[Case], device: str, version: str) -> list[str]:
    """The issue 23 goals at 2048x1024, one camera, for the cases of ``version``."""
    found = {
        c.overlay: c
        for c in cases
        if c.size == GOAL_SIZE and c.cameras == 1 and c.version == version and not c.note
    }
    prefix = f"{version}: " if version else ""
    lines = []
    for overlay in (False, True):
        what = "with overlay and semantic_color subscribed" if overlay else "without overlay"
        case = found.get(overlay)
        if case is None:
            lines.append(f"- {prefix}2048x1024, one camera, {what}: not measured in this run.")
            continue
        if device == "cpu":
            limit, value, measure_name = CPU_GOALS_MS[overlay], case.rest_ms, "without device step"
        elif not overlay:
            limit, value, measure_name = CUDA_GOAL_MS, case.host_ms, "host ms/frame"
        else:
            continue  # on CUDA only the rise is a goal with overlay
        verdict = "met" if value <= limit else "NOT met"
        lines.append(
            f"- {prefix}2048x1024, one camera, {what}: {value:.1f} ms/frame {measure_name} "
            f"(host {case.host_ms:.1f}, device step {case.device_ms:.1f}), goal <= {limit:g}: "
            f"{verdict}."
        )
    if len(found) == 2:
        rise = found[True].host_ms - found[False].host_ms
        verdict = "met" if rise <= OVERLAY_RISE_MS else "NOT met"
        drawer = found[True].overlay_ms
        elsewhere = (
            f"; the overlay node's own {drawer:.1f} ms/frame not counted"
            if drawer == drawer
            else "; drawn by the perception node itself"
        )
        lines.append(
            f"- {prefix}host cost rise with overlay and semantic_color subscribed: {rise:+.1f} "
            f"ms/frame (goal <= {OVERLAY_RISE_MS:g}: {verdict}{elsewhere})."
        )
    return lines


def measure_all(args, found: list[Version], device: str) -> list[Case]:
    """Every case with every version: per camera count, one node per version (started together),
    then per overlay choice and frame size the versions one after the other."""
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    torch_device = "cpu" if args.device == "cpu" else "cuda"
    steps = {v.label: device_steps(v, sizes, torch_device, args.node_threads) for v in found}
    named = len(found) > 1
    client = Client()
    cases: list[Case] = []
    try:
        for count in (int(n) for n in args.cameras.split(",")):
            setups = []
            try:
                for version in found:
                    namespace = f"/{version.label}" if named else ""
                    log = Path(f"/tmp/mtl_pipeline_ceiling_{count}{version.label[:6]}.log")
                    node = start_ceiling_node(
                        version, namespace, device, count, args.node_threads, log
                    )
                    setups.append(Setup(version, namespace, node, log))
                for setup in setups:
                    setup.cameras = client.discover(setup, count)
                for overlay in (False, True):
                    if overlay:
                        for setup in setups:
                            if setup.cameras and setup.version.overlay_node:
                                drawer = start_overlay_node(setup, count, args.node_threads)
                                setup.overlay_nodes.append(drawer)
                                client.wait_for_drawers(setup)
                    for size in sizes:
                        for setup in setups:
                            label = setup.version.label
                            case = Case(size, count, overlay, label if named else "")
                            case.device_ms = steps[label][size]
                            if setup.cameras is None:
                                case.note = "not measured: the node has no `cameras` parameter"
                            elif overlay and not setup.version.draws_overlay:
                                case.note = "not measured: no overlay node, no publish_overlay"
                            else:
                                measure(client, setup, case, args.seconds)
                            cases.append(case)
                            print(table([case], named).splitlines()[-1], flush=True)
                    for setup in setups:
                        stop_nodes(setup.overlay_nodes, timeout=30)
                        setup.overlay_nodes = []
            finally:
                stop_nodes([n for s in setups for n in (*s.overlay_nodes, s.node)], timeout=30)
    finally:
        client.close()
    return cases


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
    add_argument(parser)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--device-step-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device_step_only:  # a child of device_steps: JSON {"WxH": ms} on the last line
        sizes = [parse_size(s) for s in args.sizes.split(",")]
        torch_device = "cpu" if args.device == "cpu" else "cuda"
        threads = args.node_threads
        steps = {f"{w}x{h}": device_step_ms((w, h), torch_device, threads) for w, h in sizes}
        print(json.dumps(steps))
        return 0
    found = versions(args.baseline)
    device = STANDIN_DEVICE if args.device == "cpu" else f"{STANDIN_DEVICE}:cuda"
    ensure_private_network()
    load_before = os.getloadavg()
    started = time.monotonic()
    cases = measure_all(args, found, device)
    load_after = os.getloadavg()
    labels = [v.label for v in found] if len(found) > 1 else [""]
    parts = [
        f"### Pipeline ceiling, {args.device} (network replaced by the zero-cost stand-in)\n\n"
        f"{header('pipeline_ceiling')}\n"
        f"Node: `device:={device}` (the network's outputs are fixed tensors of its "
        f"shapes; everything else runs; torch threads {args.node_threads}), network input "
        "768x384, bgr8 frames over DDS (reliable, "
        f"{IN_FLIGHT} in flight per camera), {args.seconds:g} s measured per case after a "
        "warm-up. Host ms/frame: the perception node process's CPU time per output (all "
        "threads); the overlay node's (where it draws overlay and semantic_color) in its own "
        f"column. Versions: {versions_line(found)}. Load average (1 min) {load_before[0]:.2f} "
        f"before, {load_after[0]:.2f} after; {time.monotonic() - started:.0f} s in all.\n\n"
        f"{table(cases, len(found) > 1)}\n"
    ]
    if len(found) > 1:
        parts.append(f"\nBefore -> after (after / before):\n\n{comparison(cases, *labels)}\n")
    goal_lines = [line for label in labels for line in goals(cases, args.device, label)]
    parts.append("\nGoals (issue 23):\n" + "\n".join(goal_lines) + "\n")
    section = "".join(parts)
    print(section)
    if args.write:
        write_section(f"pipeline-ceiling-{args.device}", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
