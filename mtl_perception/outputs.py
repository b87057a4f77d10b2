"""Writing outputs so that nothing is half-written and nothing that existed is lost.

Two rules for every tool:

* Check outputs BEFORE the work: :func:`check_new_file` / :func:`check_new_directory` refuse a
  target that would overwrite something (naming it and the option), so a long evaluation never
  fails at its end.
* Write to a temporary name beside the target and rename when complete:
  :func:`atomic_file` for one file, :func:`atomic_directory` for a folder of results. A crash
  leaves either the old state or the complete new one, never a torn file.

Files are created with the usual permissions (``0666`` less the umask), like ``open()`` makes
them, so a checkpoint written by one user can be read by a node running as another.

A run killed outright (SIGKILL, the OOM killer, a power cut) cannot remove its temporary folder
``.NAME.XXXXXXXX.partial`` (or file ``.NAME.XXXXXXXX.tmp``). Each one is owned by an exclusive
``flock`` on it, held by the process writing it until the rename: the kernel drops it when that
process dies, however it dies, so it cannot be fooled by a recycled pid. The next
:func:`atomic_directory` or :func:`atomic_file` for the same ``NAME`` removes the temporaries
beside it that nobody holds, and says so in one line.

A write that fails for lack of space is told against the output the user named (never the
temporary name) as "no space left on device", and leaves nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import numpy as np

from .file_locks import lock_exclusively, lock_holder


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def _check_parent(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {path}: folder {parent} is not writable")
            return


def check_new_file(path: str | Path, option: str = "--out") -> Path:
    """Refuses an output file that exists (file or folder), or whose folder cannot be made."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is an existing folder; give a file name")
    if path.exists() or path.is_symlink():
        raise ValueError(f"{option} {path} exists; remove it or choose another name")
    _check_parent(path, option)
    return path


def check_new_directory(path: str | Path, option: str = "--out") -> Path:
    """Refuses an output folder that exists with content, or is a file."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ValueError(f"{option} {path} is an existing file; give a folder name")
        if any(path.iterdir()):
            raise ValueError(f"{option} {path} exists and is not empty; choose another folder")
    _check_parent(path, option)
    return path


FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # no space left, disk quota exceeded
PARTIAL_SUFFIX = ".partial"  # atomic_directory's temporary folders
TMP_SUFFIX = ".tmp"  # atomic_file's temporary files


def _described(path: Path, option: str | None) -> str:
    return f"{option} {path}" if option else str(path)


def full_disk_errno(error: BaseException) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` when ``error``, or an error it came from, is a full disk (an
    ``OSError``, or SQLite's "database or disk is full" from a sqlite3 bag), else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_DISK_ERRNOS:
            return current.errno
        if getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return errno.ENOSPC
        current = current.__cause__ or current.__context__
    return None


def told_against_output(
    error: BaseException, path: Path, temporary: Path, option: str | None = None
) -> OSError | None:
    """The error of a write into ``temporary``, told against ``path`` (what the user asked
    for), or ``None`` when it is about something else (an input, say).

    A full disk (or quota) always counts, whatever it was raised as: the write that hits it may
    name an inner file or no file at all (``stream.write`` raises without a filename).
    """
    what = _described(path, option)
    full = full_disk_errno(error)
    if full is not None:
        reason = os.strerror(full).lower()
        return OSError(full, f"{reason} writing {what}; nothing of it was kept", str(path))
    if isinstance(error, OSError) and str(temporary) in str(error.filename or ""):
        return OSError(error.errno, f"{error.strerror or error}, writing {what}", str(path))
    return None


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", option: str | None = None) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed, fsync'd and renamed
    over ``path``; on any failure it is removed and ``path`` is untouched.

    ``option`` (e.g. ``"--out"``) names the command-line option in a failure's message.

    Raises:
        OSError: a failed write, told against ``path`` (a full disk as "no space left on
            device"), never against the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path, option)
    temporary, handle = _owned_temporary_file(path)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
            temporary.replace(path)  # before the close: unlocked, it could be taken for stale
    except Exception as error:
        temporary.unlink(missing_ok=True)
        told = told_against_output(error, path, temporary, option)
        if told is None:
            raise
        raise told from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, option: str | None = None) -> Path:
    """Writes ``text`` to ``path`` atomically (``option`` names it in a failure)."""
    with atomic_file(path, "w", option) as stream:
        stream.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, option: str | None = None) -> Path:
    """Writes ``data`` to ``path`` atomically (``option`` names it in a failure)."""
    with atomic_file(path, "wb", option) as stream:
        stream.write(data)
    return Path(path)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """``cv2.imwrite`` that fails loudly: encodes ``image`` ((H, W) or (H, W, 3) BGR uint8, as
    OpenCV takes it) in the format of ``path``'s suffix and writes the bytes with Python, so a
    failed write raises ``OSError`` (a full disk as such) where ``cv2.imwrite`` returns False
    and libpng prints "Write Error" on stderr.

    Not atomic on its own: meant for files inside an :func:`atomic_directory`.

    Raises:
        ValueError: OpenCV cannot encode ``image`` in that format.
        OSError: the write failed.
    """
    import cv2  # here: the rest of this module needs no OpenCV

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as {path.suffix}: {path}")
    path.write_bytes(encoded.tobytes())
    return path


def _stale_pattern(path: Path) -> re.Pattern[str]:
    """The names of ``path``'s temporaries: ``.NAME.XXXXXXXX.partial`` folders
    (:func:`tempfile.mkdtemp`: 8 characters of ``[a-z0-9_]``) and ``.NAME.XXXXXXXX.tmp`` files
    (:func:`atomic_file`: 8 hex digits)."""
    name = re.escape(path.name)
    return re.compile(
        rf"\.{name}\.(?:[a-z0-9_]{{8}}{re.escape(PARTIAL_SUFFIX)}|[0-9a-f]{{8}}{re.escape(TMP_SUFFIX)})"
    )


def _try_lock(entry: os.DirEntry) -> int | None:
    """An open descriptor of ``entry`` with an exclusive flock on it, or ``None`` when another
    open descriptor holds it (a living process) or it cannot be opened or locked."""
    try:
        return lock_exclusively(entry.path)
    except OSError:  # EWOULDBLOCK: owned; anything else: cannot tell, so not ours to remove
        return None


def refuse_output_in_progress(path: Path, option: str) -> None:
    """Refuses ``path`` while another living process fills a ``.partial`` folder for it (the
    same command started twice): without this, both did the whole job and the second was
    refused only at its rename.

    Raises:
        ValueError: naming ``option``, ``path`` and the writer's pid where it can be told.
    """
    pattern = _stale_pattern(path)
    with suppress(OSError):
        for entry in os.scandir(path.parent):
            if not (
                entry.name.endswith(PARTIAL_SUFFIX)
                and pattern.fullmatch(entry.name)
                and entry.is_dir(follow_symlinks=False)
            ):
                continue
            try:
                os.close(lock_exclusively(entry.path))
            except BlockingIOError:
                pid = lock_holder(entry.path)
                writer = f"another running process (pid {pid})" if pid else "another process"
                raise ValueError(
                    f"{option} {path} is being written by {writer} into {entry.name}; wait for "
                    "it to finish or choose another folder"
                ) from None
            except OSError:  # cannot tell (not ours, no flock here): not in the way
                continue


def _size(folder: str | Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _human(size: int) -> str:
    """``size`` bytes as people read it: 512 bytes, 1.1 MB, 3.2 GB."""
    if size < 1000:
        return f"{size} bytes"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if size < scale * 1000 or unit == "GB":
            return f"{size / scale:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def remove_stale_partials(path: str | Path, option: str | None = "--out") -> list[Path]:
    """Removes the temporaries of ``path`` beside it (``.NAME.XXXXXXXX.partial`` folders of
    :func:`atomic_directory`, ``.NAME.XXXXXXXX.tmp`` files of :func:`atomic_file`) that no
    living process owns: left by a run killed before it could clean up. Prints one line on
    stderr naming what it removed and how much, nothing when there was nothing.

    A temporary being written is locked by its owner and left alone; so is one that cannot be
    opened or locked (another user's, a file system without locks).

    Returns:
        The temporaries removed.
    """
    path = Path(path)
    pattern = _stale_pattern(path)
    try:
        candidates = [
            entry
            for entry in os.scandir(path.parent)
            if pattern.fullmatch(entry.name)
            and (
                entry.is_dir(follow_symlinks=False)
                if entry.name.endswith(PARTIAL_SUFFIX)
                else entry.is_file(follow_symlinks=False)
            )
        ]
    except OSError:  # no parent yet, or not readable: nothing of ours can be there
        return []
    removed, kinds, freed = [], set(), 0
    for entry in sorted(candidates, key=lambda e: e.name):
        handle = _try_lock(entry)
        if handle is None:
            continue
        folder = entry.is_dir(follow_symlinks=False)
        try:  # held while removing: a run that made this very one an instant ago waits
            if folder:
                size = _size(entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                size = os.fstat(handle).st_size
                with suppress(OSError):
                    Path(entry.path).unlink()
        finally:
            os.close(handle)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
            kinds.add("folder" if folder else "file")
            freed += size
    if removed:
        plural = "s" if len(removed) > 1 else ""
        kind = " and ".join(f"{k}{plural}" for k in sorted(kinds, reverse=True))
        names = ", ".join(p.name for p in removed)
        print(
            f"note: removed {len(removed)} unfinished temporary {kind} ({_human(freed)}) left "
            f"beside {_described(path, option)} by an earlier run that was killed: {names}",
            file=sys.stderr,
        )
    return removed


def _locked(temporary: Path, handle: int) -> bool:
    """Takes the flock of a temporary just made (open as ``handle``). ``False`` when another
    run's :func:`remove_stale_partials` found it unowned and removed it between its creation
    and the lock: it is no longer the one locked, and another must be made."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:  # no flock here (some network file systems): nobody can remove it
        return True
    try:
        return temporary.lstat().st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


def _owned_temporary_file(path: Path) -> tuple[Path, int]:
    """A new temporary file beside ``path``, open for writing, its flock held."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{os.urandom(4).hex()}{TMP_SUFFIX}"
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if _locked(temporary, handle):
            return temporary, handle
        os.close(handle)
    raise FileExistsError(f"cannot create a temporary file beside {path}")  # pragma: no cover


def _owned_temporary_folder(path: Path) -> tuple[Path, int]:
    """A new temporary folder beside ``path`` and an open descriptor holding its flock."""
    for _ in range(100):
        temporary = Path(
            tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
        )
        try:
            handle = os.open(temporary, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # removed already
        if _locked(temporary, handle):
            return temporary, handle
        os.close(handle)
    raise FileExistsError(f"cannot create a temporary folder beside {path}")  # pragma: no cover


@contextmanager
def atomic_directory(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """Yields a temporary folder beside ``path`` to fill; on success it is renamed to ``path``
    (which must not exist, or be an empty folder), on failure removed.

    The temporary folder is locked by this process until then (see the module docstring); stale
    ones of earlier killed runs for the same ``path`` are removed first
    (:func:`remove_stale_partials`).

    Raises:
        ValueError: ``path`` exists with content (checked before and again at the rename), or
            no folder can be made there.
        OSError: a failed write inside, told against ``path`` and ``option`` (a full disk as
            "no space left on device").
    """
    path = check_new_directory(path, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(path, option)
        refuse_output_in_progress(path, option)
        temporary, handle = _owned_temporary_folder(path)
    except OSError as error:  # e.g. a folder of /proc: name what the user gave, not our temp
        if full_disk_errno(error):
            raise told_against_output(error, path, path, option) from None
        raise ValueError(
            f"cannot create the folder {path}: {error.strerror or error} ({option} {path})"
        ) from None
    try:
        temporary.chmod(0o777 & ~_umask())
        yield temporary
        check_new_directory(path, option)
        if path.is_dir():
            path.rmdir()  # empty (checked): replace it
        temporary.rename(path)
    except Exception as error:
        shutil.rmtree(temporary, ignore_errors=True)
        told = told_against_output(error, path, temporary, option)
        if told is None:
            raise
        raise told from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        os.close(handle)
