"""A small file system for full-disk tests: a tmpfs of a given size, mounted in a temporary folder
for the test and unmounted after (tests run as root; without the right to mount, the test is
skipped and says why)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(folder: Path, size_kib: int, free_kib: int | None = None) -> Iterator[Path]:
    """Mounts a ``size_kib`` KiB tmpfs on ``folder`` (created) and yields it; with ``free_kib``,
    a file ``filler`` takes all but that much space first. Unmounted on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        if free_kib is not None:
            with (folder / "filler").open("wb") as filler:
                filler.write(b"\0" * ((size_kib - free_kib) * 1024))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def entries(folder: Path) -> list[str]:
    """Every name under ``folder`` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
