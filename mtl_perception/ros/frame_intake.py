"""Camera frames taken when the model is ready for them, serialised, outside the executor.

rclpy's executor deserialises every arriving frame into Python objects on its thread (4.7 ms for
a 6 MB frame, GIL held) before latest-frame-wins can throw it away. Here each camera's input is a
subscription that no executor sees: the inference thread waits on all of them through one wait set
(``rcl_wait`` releases the GIL) and, when it can use frames, takes the newest waiting one of each
ready camera as CDR bytes (a raw take copies them once, no Python objects per field). A depth-1
keep-last reader keeps only the newest frame, so superseded frames never reach Python at all.

Frames the middleware replaced before they were taken are still counted: every message carries
its publisher's ``publication_sequence_number`` (consecutive per publisher, told apart by its
``publisher_gid``; rclpy 7 gives no gid, see :class:`PublisherSequences`), so a jump from n to
n + k between two takes of one publisher means k - 1 frames were replaced (or lost on the way)
and never taken. Before a publisher's first taken frame nothing can be known (its earlier frames
may predate this subscription), so nothing is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.type_support import check_is_valid_msg_type


@dataclass(frozen=True)
class TakenFrame:
    """One serialised message taken from a camera's subscription.

    Attributes:
        camera: the camera's index.
        data: the message's CDR bytes (with the 4-byte encapsulation header).
        received_ns: when the middleware received it (``received_timestamp``, ns since the epoch;
            0 where the middleware does not say).
        skipped: frames of the same publisher replaced in the reader (or lost) since the last one
            taken from it: received by the node, never taken.
    """

    camera: int
    data: bytes
    received_ns: int
    skipped: int


class PublisherSequences:
    """Counts, per publisher, the sequence numbers skipped between two taken messages.

    Publishers are told apart by ``publisher_gid``. Where the middleware gives none (rclpy 7,
    Jazzy), a topic with exactly one publisher is counted as that publisher (``publishers``
    says how many there are); with several, nothing is counted (their numbers interleave).
    """

    def __init__(self, publishers: Callable[[], int] = lambda: 1) -> None:
        self._publishers = publishers
        self._last: dict[bytes, int] = {}

    def skipped(self, info: dict[str, Any]) -> int:
        """Messages of ``info``'s publisher never taken since the previous one taken (0 for a
        publisher's first message, or when the middleware gives no sequence number)."""
        sequence = info.get("publication_sequence_number")
        if not isinstance(sequence, int):
            return 0
        gid = info.get("publisher_gid")
        if gid is not None:
            key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        elif self._publishers() == 1:
            key = b""
        else:
            self._last.pop(b"", None)
            return 0
        last = self._last.get(key)
        self._last[key] = sequence
        if last is None or sequence <= last:  # first message, or the publisher started again
            return 0
        return sequence - last - 1


class RawSubscription:
    """A subscription of ``msg_type`` on ``topic`` whose messages only :meth:`take` hands out, as
    CDR bytes: it is not registered with the node's executor (no callback ever runs). The topic is
    expanded and remapped as the node's own subscriptions are.

    Raises whatever ``Node.create_subscription`` raises for a bad topic name (rclpy's exceptions).
    """

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile) -> None:
        check_is_valid_msg_type(msg_type)  # imports the type support
        node.resolve_topic_name(topic)  # raises a clear error for an invalid name
        self.msg_type = msg_type
        with node.handle:
            try:  # rclpy 9 (Kilted) and 7.1 (Jazzy) take content filter options (None: none)
                self.handle = _rclpy.Subscription(
                    node.handle, msg_type, topic, qos.get_c_qos_profile(), None
                )
            except TypeError:  # an rclpy without them
                self.handle = _rclpy.Subscription(
                    node.handle, msg_type, topic, qos.get_c_qos_profile()
                )
        self.topic_name: str = self.handle.get_topic_name()
        self.sequences = PublisherSequences(lambda: node.count_publishers(self.topic_name))

    def take(self) -> tuple[bytes, dict[str, Any]] | None:
        """The oldest message in the reader (the only one at depth 1) and its message info, or
        None when there is none."""
        with self.handle:
            return self.handle.take_message(self.msg_type, True)

    def destroy(self) -> None:
        self.handle.destroy_when_not_in_use()


class FrameIntake:
    """One wait set over several :class:`RawSubscription` s, and a guard condition that wakes a
    waiting :meth:`take_ready` (:meth:`wake`)."""

    def __init__(self, node: Node, subscriptions: Sequence[RawSubscription]) -> None:
        self.subscriptions = list(subscriptions)
        self._context = node.context
        self._wake = GuardCondition(callback=None, callback_group=None, context=node.context)
        self._wait_set = _rclpy.WaitSet(len(self.subscriptions), 1, 0, 0, 0, 0, node.context.handle)

    def take_ready(self, timeout: float) -> list[TakenFrame]:
        """Waits up to ``timeout`` seconds (0: no wait) for a frame on any camera, then takes
        every frame waiting in the readers of the cameras that have one, each camera's oldest
        first ([] on timeout, after :meth:`wake`, or once the context is shut down). With the
        default depth 1 that is the newest frame of each camera; a deeper reader gives them all,
        so that the caller can check each (a malformed newest frame must not displace a good
        older one)."""
        if not self._context.ok():
            return []
        wait_set = self._wait_set
        wait_set.clear_entities()
        for subscription in self.subscriptions:
            wait_set.add_subscription(subscription.handle)
        wait_set.add_guard_condition(self._wake.handle)
        wait_set.wait(int(timeout * 1e9))
        ready = set(wait_set.get_ready_entities("subscription"))
        frames = []
        for index, subscription in enumerate(self.subscriptions):
            if subscription.handle.pointer in ready:
                frames += self.take_all(index)
        return frames

    def take_all(self, index: int) -> list[TakenFrame]:
        """Every message in camera ``index``'s reader, oldest first."""
        subscription = self.subscriptions[index]
        frames = []
        while (taken := subscription.take()) is not None:
            data, info = taken
            skipped = subscription.sequences.skipped(info)
            frames.append(
                TakenFrame(index, data, int(info.get("received_timestamp") or 0), skipped)
            )
        return frames

    def wake(self) -> None:
        """Makes a :meth:`take_ready` waiting in another thread return now."""
        self._wake.trigger()

    def destroy(self) -> None:
        """Destroys the guard condition and every subscription (the caller has stopped the
        thread that waits)."""
        for subscription in self.subscriptions:
            subscription.destroy()
        self._wake.destroy()
        self._wait_set.destroy_when_not_in_use()
