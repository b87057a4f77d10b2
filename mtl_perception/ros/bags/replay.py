"""The replay stage: publish a bag's camera frames to a node and record what it sends back.

The camera messages are replayed byte for byte (the bag's CDR is what rclpy sends) at the bag's
receive timing scaled by a factor, at a fixed rate (frames per second, the bag's timing ignored),
or paced by the node's outputs (each frame once the last one's outcome is known). Everything the
node publishes on its two output topics and its /diagnostics is kept as CDR with its receive time,
for the output bag; times are nanoseconds of one clock (the wall clock at the start of the replay,
advanced by the monotonic clock), so latencies never jump.

The node's /diagnostics counters are cumulative: a replay notes them before its first frame
(:attr:`Collected.counters_at_start`) and judges its own frames by the differences, so several
replays into one node (``--find-peak-rate``'s trials, a running node on a robot) each count only
theirs. Outputs for stamps this replay has not sent (a late answer to an earlier replay) are
ignored.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from ...cli import ToolError
from .read import (
    DETECTIONS_TYPE,
    DIAGNOSTICS_TOPIC,
    DIAGNOSTICS_TYPE,
    IMAGE_TYPE,
    BagFrames,
    Frame,
    counter_difference,
    is_status_of,
    stamp_ns,
)

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
PLAYER_NAME = "mtl_bag_player"  # the replay's own node (a rig's players: PLAYER_NAME_<camera>)
BEHIND_S = 1.0  # a fixed-rate replay this far past its last frame's time stops sending


@dataclass(frozen=True)
class NodeTopics:
    """Where the node under test publishes, its name in /diagnostics, and its fully qualified
    name (``/namespace/name``, for its parameter services)."""

    name: str
    semantic: str
    detections: str
    qualified: str = ""

    @classmethod
    def of(cls, name: str, namespace: str = "/") -> NodeTopics:
        base = f"{namespace.rstrip('/')}/{name}"
        return cls(name, f"{base}/semantic", f"{base}/detections", base)

    @property
    def described(self) -> str:
        """The node in words: its fully qualified name, else its /diagnostics name."""
        return f"the node {self.qualified or self.name}"


@dataclass
class Collected:
    """What a replay sent and received; times in ns of the replay's clock."""

    sent: dict[int, int] = field(default_factory=dict)  # stamp -> publish time
    mask_stamps: set[int] = field(default_factory=set)
    detection_stamps: set[int] = field(default_factory=set)
    messages: list[tuple[str, int, bytes, str]] = field(default_factory=list)  # topic, t, CDR, type
    node_counters: dict[str, str] = field(default_factory=dict)  # the node's last /diagnostics
    node_parameters: dict[str, Any] = field(default_factory=dict)  # what the node reported
    counters_at_start: dict[str, str] = field(default_factory=dict)  # before the first frame
    arrived: dict[int, int] = field(default_factory=dict)  # stamp -> both outputs in
    rejected: set[int] = field(default_factory=set)  # stamps sent that the node will reject
    window_ns: tuple[int, int] | None = None  # monotonic ns: first frame sent, replay done

    def has_outputs(self, stamp: int) -> bool:
        return stamp in self.mask_stamps and stamp in self.detection_stamps


def restamped(raw: bytes, stamp: int) -> bytes:
    """A serialised Image or CompressedImage (CDR) with its header stamp set to ``stamp`` (ns):
    the stamp's two fields (int32 sec, uint32 nanosec) are the first after the 4-byte
    encapsulation header, in the byte order it names; nothing else is touched."""
    order = "<" if raw[1] == 1 else ">"  # CDR_LE / CDR_BE
    return raw[:4] + struct.pack(f"{order}iI", *divmod(stamp, 10**9)) + raw[12:]


def schedule(bag: BagFrames, count: int | None = None) -> Iterator[tuple[Frame, int, bytes]]:
    """(frame, stamp, message) to send: the bag once, or ``count`` frames cycling through it,
    each pass after the first re-stamped one span of the bag (+1 s) later so that every stamp
    sent is unique (a node answers each with its stamp). Made as they are sent: a trial at an
    absurd rate (``--peak-rate-max 1e9``) asks for billions."""
    frames = bag.frames
    count = len(frames) if count is None else count
    stamps = [f.stamp for f in frames]
    shift = max(stamps) - min(stamps) + 10**9
    for position in range(count):
        frame, cycle = frames[position % len(frames)], position // len(frames)
        stamp = frame.stamp + cycle * shift
        yield frame, stamp, frame.raw if cycle == 0 else restamped(frame.raw, stamp)


def _counts(counters: dict[str, str]) -> dict[str, int] | None:
    try:
        return {k: int(counters[k]) for k in ("received", "processed", "dropped", "rejected")}
    except (KeyError, ValueError):
        return None


def _ask_parameters(player, qualified: str, names: tuple[str, ...], spin_until) -> dict[str, Any]:
    """The values the node at ``qualified`` reports for ``names`` (unset ones left out)."""
    client = player.create_client(GetParameters, f"{qualified}/get_parameters")
    try:
        if not spin_until(client.service_is_ready, 10.0):
            return {}
        future = client.call_async(GetParameters.Request(names=list(names)))
        if not spin_until(future.done, 10.0) or future.result() is None:
            return {}
        values = [parameter_value_to_python(v) for v in future.result().values]
        return {n: v for n, v in zip(names, values, strict=False) if v is not None}
    finally:
        player.destroy_client(client)


def replay(
    bag: BagFrames,
    node: NodeTopics,
    *,
    rate_factor: float | None,
    rate_hz: float | None = None,
    frame_timeout: float = 10.0,
    node_failure: Callable[[], str | None] = lambda: None,
    progress: bool = True,
    discovery_timeout: float = 120.0,
    parameter_names: tuple[str, ...] = (),
    idle_timeout: float = 0.0,
    frame_count: int | None = None,
    player_name: str = PLAYER_NAME,
    on_wait: Callable[[str], None] | None = None,
) -> Collected:
    """Publishes the bag's camera frames on its camera topic and collects the node's outputs.

    Args:
        rate_factor: replay at the bag's receive timing x this, or None to pace by the node.
        rate_hz: instead, send frame i at i / rate_hz s (the bag's timing ignored).
        node_failure: returns why the node is gone (a started process that exited), else None.
        parameter_names: parameters to ask the node for (its get_parameters service; a node
            without the service or a parameter is recorded without it).
        idle_timeout: first wait up to this many seconds for the node to be idle (every frame
            it received accounted for: an earlier replay's frames done).
        frame_count: with ``rate_hz``, send this many frames, cycling through the bag
            (:func:`schedule`); default the bag once. A player that falls behind (a rate it
            cannot send at) stops :data:`BEHIND_S` after the last frame's time, the bag once
            sent: fewer frames.
        player_name: the replay's ROS node name (players running at once need their own).
        on_wait: told one line when the replay starts waiting for the node to appear.

    Raises:
        ToolError: the node did not appear within ``discovery_timeout`` s, or it failed.
    """
    if rate_hz is not None and rate_factor is not None:
        raise ValueError("replay: give rate_factor or rate_hz, not both")
    if frame_count is not None and rate_hz is None:
        raise ValueError("replay: frame_count cycles the bag at a fixed rate_hz only")
    count = len(bag.frames) if frame_count is None else frame_count
    sends = schedule(bag, count)
    context = rclpy.Context()
    rclpy.init(context=context)
    player = rclpy.create_node(player_name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(player)
    collected = Collected()
    wall0, mono0 = time.time_ns(), time.monotonic_ns()

    def now() -> int:
        return wall0 + time.monotonic_ns() - mono0

    def on_output(stamps: set[int], topic: str, msg: Any, msgtype: str) -> None:
        stamp, received = stamp_ns(msg.header), now()
        if stamp not in collected.sent:
            return  # not (yet) sent by this replay: an earlier replay's late answer
        stamps.add(stamp)
        collected.messages.append((topic, received, serialize_message(msg), msgtype))
        if collected.has_outputs(stamp) and stamp not in collected.arrived:
            collected.arrived[stamp] = received

    def on_mask(msg: Image) -> None:
        on_output(collected.mask_stamps, node.semantic, msg, IMAGE_TYPE)

    def on_detections(msg: Detection2DArray) -> None:
        on_output(collected.detection_stamps, node.detections, msg, DETECTIONS_TYPE)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        mine = [s for s in msg.status if is_status_of(s.name, node.name)]
        if not mine:
            return
        collected.node_counters = {kv.key: kv.value for kv in mine[-1].values}
        collected.messages.append(
            (DIAGNOSTICS_TOPIC, now(), serialize_message(msg), DIAGNOSTICS_TYPE)
        )

    player.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diagnostics, 10)
    player.create_subscription(Image, node.semantic, on_mask, RELIABLE)
    player.create_subscription(Detection2DArray, node.detections, on_detections, RELIABLE)
    message_type = Image if bag.camera_type == IMAGE_TYPE else CompressedImage
    publisher = player.create_publisher(message_type, bag.camera_topic, RELIABLE)

    def spin_until(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            failure = node_failure()
            if failure is not None:
                raise ToolError(failure)
            executor.spin_once(timeout_sec=0.01)
        return condition()

    def node_discarded(before: dict[str, int] | None) -> bool:
        """The node counted one more frame as rejected or dropped than ``before``."""
        now_counts = _counts(collected.node_counters)
        if now_counts is None or before is None:
            return False
        dropped = now_counts["rejected"] + now_counts["dropped"]
        return dropped > before["rejected"] + before["dropped"]

    def own_counts() -> dict[str, int] | None:
        """The node's counters since this replay began."""
        return _counts(counter_difference(collected.node_counters, collected.counters_at_start))

    def settled() -> bool:
        counts = own_counts()
        sent = len(collected.sent)
        return counts is not None and (
            counts["received"] >= sent
            and counts["processed"] + counts["rejected"] + counts["dropped"] >= sent
        )

    def accounted() -> bool:
        """Settled, and every frame the node processed has both outputs here."""
        counts = own_counts()
        return settled() and counts is not None and len(collected.arrived) >= counts["processed"]

    def idle() -> bool:
        counts = _counts(collected.node_counters)
        return counts is not None and (
            counts["processed"] + counts["rejected"] + counts["dropped"] >= counts["received"]
        )

    try:
        if on_wait is not None:
            on_wait(
                f"waiting up to {discovery_timeout:g} s for {node.described} to subscribe to "
                f"{bag.camera_topic}"
            )
        if not spin_until(
            lambda: (
                publisher.get_subscription_count() > 0
                and player.count_publishers(node.detections) > 0
            ),
            discovery_timeout,
        ):
            raise ToolError(
                f"{node.described} did not subscribe to {bag.camera_topic} and publish "
                f"{node.detections} within {discovery_timeout:g} s"
            )
        spin_until(lambda: collected.node_counters != {}, 2.0)  # discovery settles both ways
        if idle_timeout > 0:
            spin_until(idle, idle_timeout)
        collected.counters_at_start = dict(collected.node_counters)
        if parameter_names:
            collected.node_parameters = _ask_parameters(
                player, node.qualified, parameter_names, spin_until
            )
        start = time.monotonic()
        started_ns = time.monotonic_ns()
        first = bag.frames[0].received
        frames = tqdm(sends, total=count, desc="replaying", unit="frame", disable=not progress)
        for position, (frame, stamp, message) in enumerate(frames):
            due = None
            if rate_hz:
                due = start + position / rate_hz
                late = time.monotonic() - (start + count / rate_hz + BEHIND_S)
                if position >= len(bag.frames) and late > 0:
                    break  # the player cannot send at rate_hz: the trial ends on time
            elif rate_factor:
                due = start + (frame.received - first) / 1e9 / rate_factor
            if due is not None:
                spin_until(
                    lambda due=due: time.monotonic() >= due, max(0.0, due - time.monotonic()) + 1
                )
            before = _counts(collected.node_counters)
            collected.sent[stamp] = now()
            if frame.rejected is not None:
                collected.rejected.add(stamp)
            publisher.publish(message)
            if due is None:  # paced by the node: wait for this frame's outcome
                spin_until(
                    lambda stamp=stamp, before=before: (
                        collected.has_outputs(stamp) or node_discarded(before)
                    ),
                    2.0 if frame.rejected else frame_timeout,
                )
        expected = [stamp for stamp in collected.sent if stamp not in collected.rejected]
        spin_until(lambda: all(collected.has_outputs(s) for s in expected) or accounted(), 5.0)
        spin_until(settled, 3.0)  # the node's final counters
        collected.window_ns = (started_ns, time.monotonic_ns())
    finally:
        player.destroy_node()
        rclpy.try_shutdown(context=context)
    return collected
