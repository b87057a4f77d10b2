"""Latest-frame-wins hand-off between the executor thread and the inference thread: one slot
per camera, and :class:`CameraSlots` to take the waiting frames of several cameras as one batch,
the camera that has waited longest first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FrameCounters:
    """Frame accounting. Once idle: received = processed + dropped + rejected."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced while waiting, discarded at deactivate, or failed in the model
    rejected: int = 0  # malformed input (the sum of rejected_by_reason)
    failed: int = 0  # the model raised or produced non-finite outputs (also counted as dropped)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        """Counts one rejected frame under ``reason`` (the caller counts it as received)."""
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def add(self, other: FrameCounters) -> None:
        """Adds ``other``'s counts to these (node totals from per-camera counters)."""
        self.received += other.received
        self.processed += other.processed
        self.dropped += other.dropped
        self.rejected += other.rejected
        self.failed += other.failed
        for reason, count in other.rejected_by_reason.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + count

    def copy(self) -> FrameCounters:
        return FrameCounters(
            self.received,
            self.processed,
            self.dropped,
            self.rejected,
            self.failed,
            dict(self.rejected_by_reason),
        )


class LatestFrameSlot:
    """Holds at most one waiting frame, and never loses one without telling the caller.

    :meth:`put` replaces a waiting frame, or refuses the new one once the slot is closed; either
    way it returns True so the caller counts one frame as dropped. :meth:`take` blocks until a
    frame or :meth:`close`, and a closed slot hands out nothing: :meth:`close` itself removes
    the waiting frame and says so.

    Several slots may share one ``condition`` (:class:`CameraSlots`), so that one thread can wait
    for a frame on any of them. :attr:`waiting_since` is when the slot last went from empty to
    holding a frame (``clock`` seconds): a replaced frame does not reset it, so a camera that
    keeps sending still counts as having waited since its first unserved frame.
    """

    def __init__(
        self,
        condition: threading.Condition | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._condition = condition or threading.Condition()
        self._clock = clock
        self._item: Any = None
        self._closed = False
        self.waiting_since = 0.0

    def put(self, item: Any) -> bool:
        """Parks ``item``; True if a frame was dropped by doing so (the one replaced, or ``item``
        itself when the slot is closed)."""
        with self._condition:
            if self._closed:
                return True
            replaced = self._item is not None
            if not replaced:
                self.waiting_since = self._clock()
            self._item = item
            self._condition.notify_all()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The waiting frame, or None on timeout or once closed (a closed slot keeps its frame
        for :meth:`close` / :meth:`clear` to account for)."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        """Discards a waiting frame; True if there was one."""
        with self._condition:
            had = self._item is not None
            self._item = None
            return had

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> bool:
        """Closes the slot and discards the waiting frame, atomically; True if there was one
        (the caller counts it as dropped). Wakes a blocked :meth:`take`."""
        with self._condition:
            self._closed = True
            had = self._item is not None
            self._item = None
            self._condition.notify_all()
            return had

    def reopen(self) -> None:
        """Accepts frames again. A closed slot is always empty (see :meth:`close`, :meth:`put`),
        so nothing is discarded here."""
        with self._condition:
            self._closed = False


class CameraSlots:
    """One :class:`LatestFrameSlot` per camera, sharing one condition, for one consumer that
    batches: :meth:`take_batch` hands out the waiting frames of up to ``max_batch`` cameras.

    No camera starves: when more cameras wait than fit in a batch, those whose slot has been
    holding a frame the longest (:attr:`LatestFrameSlot.waiting_since`) go first; a camera just
    served waits behind every camera that was already waiting.
    """

    def __init__(self, count: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._condition = threading.Condition()
        self.slots: list[LatestFrameSlot] = [
            LatestFrameSlot(self._condition, clock) for _ in range(count)
        ]

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> LatestFrameSlot:
        return self.slots[index]

    def take_batch(self, max_batch: int, timeout: float | None = None) -> list[tuple[int, Any]]:
        """Blocks until a frame waits on any slot (or ``timeout`` seconds, or all closed), then
        takes up to ``max_batch`` of them, longest-waiting camera first: [(camera index, item)]
        in that order; [] on timeout or once closed (closed slots keep their frames for
        :meth:`close`)."""
        with self._condition:
            if not self._waiting() and not self.closed:
                self._condition.wait(timeout)
            waiting = sorted(self._waiting(), key=lambda i: (self.slots[i].waiting_since, i))
            batch = []
            for index in waiting[:max_batch]:
                slot = self.slots[index]
                batch.append((index, slot._item))
                slot._item = None
            return batch

    def _waiting(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s._item is not None and not s._closed]

    @property
    def closed(self) -> bool:
        return all(slot.closed for slot in self.slots)

    def close(self) -> list[bool]:
        """Closes every slot; for each camera, whether a waiting frame was discarded (dropped)."""
        return [slot.close() for slot in self.slots]

    def reopen(self) -> None:
        for slot in self.slots:
            slot.reopen()
