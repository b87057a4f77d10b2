"""Latest-frame-wins hand-off between the executor thread and the inference thread."""

from __future__ import annotations

import threading
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
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Parks ``item``; True if a frame was dropped by doing so (the one replaced, or ``item``
        itself when the slot is closed)."""
        with self._condition:
            if self._closed:
                return True
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
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
