"""Exclusive ``flock`` locks on files and folders, which the kernel drops when their holder dies.

A lock belongs to an open descriptor: it is held until that descriptor is closed, which the
kernel does for a process that dies however it dies (SIGKILL, the OOM killer), so a lock is
never stale and never fooled by a recycled pid. Two descriptors of the same path conflict even
within one process.

Used for the temporaries of :mod:`.outputs` (``.NAME.XXXXXXXX.partial`` / ``.tmp``) and for a
training run's folder (:mod:`.training.run_dir`).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import suppress
from pathlib import Path

PROC_LOCKS = Path("/proc/locks")


def lock_exclusively(path: str | Path, *, follow_symlinks: bool = False) -> int:
    """Opens ``path`` (a file or a folder) read-only and takes its exclusive flock, without
    waiting.

    Returns:
        The descriptor holding the lock (close it to release the lock).

    Raises:
        BlockingIOError: another open descriptor holds it (a living process, maybe this one).
        OSError: it cannot be opened, or its file system refuses flock (some NFS set-ups).
    """
    directory = Path(path).is_dir()
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    handle = os.open(path, flags)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        raise
    return handle


def lock_holder(path: str | Path) -> int | None:
    """The pid of the process holding a flock on ``path`` (followed if a link), read from
    ``/proc/locks``; ``None`` when it cannot be told (no such lock, no ``/proc``, a holder in
    another pid namespace)."""
    try:
        status = Path(path).stat()
        table = PROC_LOCKS.read_text()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2369809 0 EOF": pid, then major:minor (hex):inode
    wanted = (os.major(status.st_dev), os.minor(status.st_dev), status.st_ino)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" marks a waiter, not a holder
            continue
        with suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted and int(fields[4]) > 0:
                return int(fields[4])
    return None


_KEPT_FROM_FORKED_CHILDREN: set[int] = set()


def _close_in_forked_child() -> None:
    for handle in _KEPT_FROM_FORKED_CHILDREN:
        with suppress(OSError):
            os.close(handle)
    _KEPT_FROM_FORKED_CHILDREN.clear()


os.register_at_fork(after_in_child=_close_in_forked_child)


def keep_from_forked_children(handle: int, keep: bool = True) -> None:
    """Whether a lock's descriptor is closed in children forked from now on (``keep=False``
    undoes it). A forked child shares the lock, so a child that outlives its parent for a while
    (a DataLoader worker notices its trainer's death only after seconds) would hold it on; closing
    the child's copy leaves the lock to this process alone."""
    if keep:
        _KEPT_FROM_FORKED_CHILDREN.add(handle)
    else:
        _KEPT_FROM_FORKED_CHILDREN.discard(handle)
