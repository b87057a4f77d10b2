"""Latest-frame-wins hand-off between the executor thread and the inference thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class FrameCounters:
    """Frame accounting. Once idle: received = processed + dropped + rejected."""

    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced while waiting, discarded at deactivate, or failed in the model
    rejected: int = 0  # malformed input
    failed: int = 0  # the model raised or produced non-finite outputs (also counted as dropped)


class LatestFrameSlot:
    """Holds at most one waiting frame. :meth:`put` replaces a waiting frame (returning True so
    the caller counts it as dropped); :meth:`take` blocks until a frame or :meth:`close`."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The waiting frame, or None on timeout or once closed."""
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def clear(self) -> bool:
        """Discards a waiting frame; True if there was one."""
        with self._condition:
            had = self._item is not None
            self._item = None
            return had

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def reopen(self) -> None:
        with self._condition:
            self._closed = False
            self._item = None
