"""A training run's folder: what it holds, and whether the run in it ever started.

    RUN_DIR/config.yaml             the training config, as run
    RUN_DIR/checkpoints/last.pt     latest state (what --resume reads)
    RUN_DIR/checkpoints/stage{k}_{name}.pt, final.pt
    RUN_DIR/tensorboard/            losses, learning rate, mIoU, mAP, overlay images
    RUN_DIR/metrics.jsonl           one JSON line per log step and per validation
    RUN_DIR/overlays/iter_{i}/      validation overlay PNGs

A run stopped after its last iteration with all of that iteration's outputs written is
:func:`finished`: ``--resume`` says so and changes nothing.

A run killed (SIGKILL, power loss) before its first checkpoint leaves some of these but no
checkpoint: nothing of it can be resumed, so it is a run that never started. The same command
starts it again (:func:`never_started`, :func:`clear_unstarted`).

A run folder belongs to the one ``mtl-train`` training in it: rank 0 holds an exclusive flock
on the folder itself for the whole run (:func:`owned_run_dir`), taken before anything in it is
read, written or removed, so a second ``mtl-train`` for the same folder (new, restart or
``--resume``) is refused instead of removing or overwriting the files of the living run. The
kernel drops the lock of a killed run, so restart and resume work after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..file_locks import keep_from_forked_children, lock_exclusively, lock_holder
from ..outputs import check_new_directory
from .hooks import due_checkpoints, validation_due

if TYPE_CHECKING:
    from .config import TrainConfig

RUN_ENTRIES = ("config.yaml", "checkpoints", "tensorboard", "metrics.jsonl", "overlays")


def last_checkpoint(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints/last.pt``: the state ``--resume`` continues from."""
    return Path(run_dir) / "checkpoints" / "last.pt"


def metrics_records(run_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``metrics.jsonl``'s lines with their records, in order, less lines torn by a kill; empty
    when there is no such file."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append((line, record))
    return records


def finished(run_dir: str | Path, config: TrainConfig, iteration: object) -> bool:
    """Whether a run whose ``last.pt`` is at ``iteration`` is complete: at the end of its
    schedule, with every checkpoint and the validation of that iteration written (a kill
    between them leaves them for ``--resume`` to redo)."""
    if type(iteration) is not int or iteration != config.total_iterations:
        return False  # more, or not a number: the trainer refuses that checkpoint
    folder = Path(run_dir) / "checkpoints"
    if not all((folder / name).is_file() for name in due_checkpoints(config, iteration)):
        return False
    return not validation_due(config, iteration) or any(
        record.get("iteration") == iteration and "validation" in record
        for _, record in metrics_records(run_dir)
    )


def never_started(run_dir: str | Path) -> bool:
    """True for a folder holding only a run's own files (``config.yaml`` among them) and no
    checkpoint: what a run killed before its first checkpoint leaves."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return False
    if any(child.name not in RUN_ENTRIES for child in run_dir.iterdir()):
        return False
    return not list((run_dir / "checkpoints").glob("*.pt"))


def clear_unstarted(run_dir: str | Path) -> list[str]:
    """Removes what a run that :func:`never_started` left (the folder itself stays).

    Returns the names removed.
    """
    run_dir = Path(run_dir)
    if not never_started(run_dir):
        raise ValueError(f"{run_dir} is not a run that never started; it is left as it is")
    removed = []
    for child in sorted(run_dir.iterdir()):
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        removed.append(child.name)
    return removed


@contextmanager
def owned_run_dir(run_dir: str | Path, option: str, *, create: bool) -> Iterator[None]:
    """Holds ``run_dir`` for this process while the block runs (see the module docstring).

    Args:
        run_dir: the run folder.
        option: how the user named it (``--out``, ``--resume``), for messages.
        create: make a missing folder (and its missing parents), for a new run; what this made
            is removed on the way out when it is empty then, so a refused or failed start leaves
            nothing. Without it, a missing folder is left to the caller to refuse (unlocked).

    On a file system that refuses flock (some NFS set-ups) the run goes on unlocked.

    Raises:
        ValueError: another process holds the folder (a running ``mtl-train``, named by pid
            when it can be told), or ``run_dir`` cannot be a new run's folder (a file, an
            unwritable parent: :func:`check_new_directory`).
    """
    run_dir = Path(run_dir)
    made: list[Path] = []
    handle = None
    try:
        for _ in range(100):  # more than once only while another run removes the folder
            if not run_dir.is_dir():
                if not create:
                    break
                check_new_directory(run_dir, option)
                made += _make_folders(run_dir)
            try:
                handle = lock_exclusively(run_dir, follow_symlinks=True)
            except BlockingIOError:
                made = []  # another run took it between our mkdir and our lock: now its own
                raise ValueError(_in_use(run_dir, option)) from None
            except FileNotFoundError:
                continue
            except OSError:
                break  # no flock here: unlocked, as before
            if _still_there(run_dir, handle):
                keep_from_forked_children(handle)  # its data-loader workers must not hold it on
                break
            os.close(handle)
            handle = None
        yield
    finally:
        for folder in reversed(made):  # deepest first; a folder with content stays
            with suppress(OSError):
                folder.rmdir()
        if handle is not None:
            keep_from_forked_children(handle, keep=False)
            os.close(handle)


def _make_folders(folder: Path) -> list[Path]:
    """Makes ``folder`` and its missing parents; returns those this call made, outermost
    first."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # another process made it meanwhile: not ours to remove
            continue
        made.append(path)
    return made


def _still_there(run_dir: Path, handle: int) -> bool:
    """Whether the folder locked as ``handle`` is still the one at ``run_dir`` (not removed,
    maybe made again, by another run between the open and the lock)."""
    try:
        now, locked = run_dir.stat(), os.fstat(handle)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino)


def _in_use(run_dir: Path, option: str) -> str:
    pid = lock_holder(run_dir)
    holder = f"a running mtl-train (pid {pid})" if pid else "a running mtl-train"
    instead = ", or choose another folder" if option == "--out" else ""
    return (
        f"{option} {run_dir} is in use by {holder}: a run folder takes one training at a "
        f"time; wait for that run to end or stop it{instead}"
    )
