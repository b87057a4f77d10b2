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
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


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


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success it is flushed, fsync'd and renamed
    over ``path``; on any failure it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp"
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random collisions
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_file(path, "w") as stream:
        stream.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_file(path, "wb") as stream:
        stream.write(data)
    return Path(path)


@contextmanager
def atomic_directory(path: str | Path, option: str = "--out") -> Iterator[Path]:
    """Yields a temporary folder beside ``path`` to fill; on success it is renamed to ``path``
    (which must not exist, or be an empty folder), on failure removed.

    Raises:
        ValueError: ``path`` exists with content (checked before and again at the rename).
    """
    path = check_new_directory(path, option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(
            tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        )
    except OSError as error:  # e.g. a folder of /proc: name what the user gave, not our temp
        raise ValueError(
            f"cannot create the folder {path}: {error.strerror or error} ({option} {path})"
        ) from None
    temporary.chmod(0o777 & ~_umask())
    try:
        yield temporary
        check_new_directory(path, option)
        if path.is_dir():
            path.rmdir()  # empty (checked): replace it
        temporary.rename(path)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if str(temporary) in str(error.filename or ""):  # name what the user asked for
            raise OSError(
                error.errno, f"{error.strerror or error}, writing {option}", str(path)
            ) from error
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
