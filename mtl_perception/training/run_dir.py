"""A training run's folder: what it holds, and whether the run in it ever started.

    RUN_DIR/config.yaml             the training config, as run
    RUN_DIR/checkpoints/last.pt     latest state (what --resume reads)
    RUN_DIR/checkpoints/stage{k}_{name}.pt, final.pt
    RUN_DIR/tensorboard/            losses, learning rate, mIoU, mAP, overlay images
    RUN_DIR/metrics.jsonl           one JSON line per log step and per validation
    RUN_DIR/overlays/iter_{i}/      validation overlay PNGs

A run killed (SIGKILL, power loss) before its first checkpoint leaves some of these but no
checkpoint: nothing of it can be resumed, so it is a run that never started. The same command
starts it again (:func:`never_started`, :func:`clear_unstarted`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

RUN_ENTRIES = ("config.yaml", "checkpoints", "tensorboard", "metrics.jsonl", "overlays")


def last_checkpoint(run_dir: str | Path) -> Path:
    """``RUN_DIR/checkpoints/last.pt``: the state ``--resume`` continues from."""
    return Path(run_dir) / "checkpoints" / "last.pt"


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
