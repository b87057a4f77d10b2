"""What a report needs to be reproduced: content hashes, software versions, the host.

Recorded by the run (the host and software that ran the node) into its output bag, and copied
into every report scored from it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ... import __version__
from ..distribution import ros_distribution

_CHUNK = 1 << 20


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of a file, or of a folder's files (relative names and contents, in
    sorted order): two copies of a bag hash alike wherever they lie."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def git_commit() -> str | None:
    """The package checkout's commit (``+dirty`` with uncommitted changes to tracked files),
    None outside a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_and_host() -> dict[str, Any]:
    """Package version and git commit, ROS distribution, torch version, CPU and GPUs."""
    import torch

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "ros_distro": "{} ({})".format(*ros_distribution()),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "host": {
            "cpu": _cpu_name(),
            "cpu_count": os.cpu_count(),
            "gpus": gpus,
            "system": f"{platform.system()} {platform.release()}",
        },
    }
