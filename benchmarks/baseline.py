"""Before and after in one run: the node of an earlier commit beside this checkout's.

The four node benchmarks (pipeline_ceiling, overload, multi_camera, node_overhead) take
``--baseline REF``: a git commit (e.g. ``89e0a98``, the start of issue 23) or a folder holding
an unpacked ``mtl_perception/`` package (what scripts/gpu_check_prepare.py carries to a machine
without git history). The commit's package is unpacked once with ``git archive`` into
``/tmp/mtl_baseline_<commit>/``; its node processes run with that folder first on PYTHONPATH
and as their working directory (the editable install of this checkout comes after it), sharing
the vision_msgs build and the Fast DDS profile. The benchmarks then run every case with both
versions, before then after, case by case, so that both share the machine's load, and write a
before/after table with the ratio per row (:func:`before_after_table`).

What changed between the versions is found in the package itself (:class:`Version`): whether
the perception node still has ``publish_overlay`` (it drew overlay and semantic_color itself) or
an overlay node exists, and whether the raw frame path of issue 23 (``ros/raw_messages.py``) is
there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mtl_perception"
PACKAGE_ENV = "MTL_BENCH_PACKAGE"  # a folder whose mtl_perception this process imports (common.py)
CACHE = Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Version:
    """One version of the node: ``label`` ('before', 'after' or 'this checkout'), what it is
    (``ref``: a commit or a folder) and ``root``, the folder holding its ``mtl_perception``."""

    label: str
    ref: str
    root: Path

    def _source(self, *parts: str) -> Path:
        return self.root.joinpath(PACKAGE, *parts)

    @property
    def is_checkout(self) -> bool:
        return self.root == ROOT

    @property
    def publish_overlay(self) -> bool:
        """The perception node draws overlay and semantic_color itself (``publish_overlay``)."""
        files = [self._source("ros", name) for name in ("node.py", "parameters.py")]
        return any("publish_overlay" in f.read_text() for f in files if f.is_file())

    @property
    def overlay_node(self) -> bool:
        """A separate overlay node draws them (``mtl_perception/ros/overlay_node.py``)."""
        return self._source("ros", "overlay_node.py").is_file()

    @property
    def raw_messages(self) -> bool:
        """The raw frame path of issue 23 (``mtl_perception/ros/raw_messages.py``)."""
        return self._source("ros", "raw_messages.py").is_file()

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process of this version: its package first on PYTHONPATH."""
        env = dict(os.environ if base is None else base)
        if not self.is_checkout:
            rest = env.get("PYTHONPATH")
            env["PYTHONPATH"] = str(self.root) + (os.pathsep + rest if rest else "")
            env[PACKAGE_ENV] = str(self.root)
        return env

    @property
    def cwd(self) -> Path:
        """The working directory of its node processes (``python -m`` puts it first on
        sys.path, so a baseline's node must not start in this checkout)."""
        return self.root

    @property
    def draws_overlay(self) -> bool:
        """Overlay and semantic_color are published at all (by the node or an overlay node)."""
        return self.publish_overlay or self.overlay_node

    def overlay_parameters(self) -> dict[str, object]:
        """Node parameters that keep the drawn outputs on, where the node draws them."""
        return {"publish_overlay": True} if self.publish_overlay else {}

    def no_overlay_parameters(self) -> dict[str, object]:
        """Node parameters that turn the drawn outputs off, where the node draws them."""
        return {"publish_overlay": False} if self.publish_overlay else {}


def add_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--baseline REF`` option."""
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run every case with the node of REF (a git commit, e.g. 89e0a98, or a folder "
        "holding an unpacked mtl_perception/), interleaved case by case, and add a before/after "
        "table",
    )


def versions(baseline: str | None) -> list[Version]:
    """[before, after] with a baseline, else [this checkout]."""
    if not baseline:
        return [Version("this checkout", describe_checkout(), ROOT)]
    return [unpack(baseline), Version("after", describe_checkout(), ROOT)]


def describe_checkout() -> str:
    """This checkout's commit, with '+changes' where the package differs from it."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--", PACKAGE).strip()
    except (OSError, subprocess.CalledProcessError):
        return "this checkout"
    return commit + ("+changes" if dirty else "")


def unpack(ref: str) -> Version:
    """The 'before' version: ``ref`` as a folder holding mtl_perception/, else a commit whose
    package is unpacked (once) into a temporary folder."""
    folder = Path(ref)
    if (folder / PACKAGE).is_dir():
        ref_file = folder / "REF"  # the commit, in full (export)
        label = ref_file.read_text().strip()[:7] if ref_file.is_file() else str(folder)
        return Version("before", label, folder.resolve())
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(
            f"--baseline {ref}: neither a folder holding {PACKAGE}/ nor a commit of this "
            "repository (a machine without the history gets the folder from "
            "scripts/gpu_check_prepare.py --baseline)"
        ) from None
    target = CACHE / f"mtl_baseline_{commit[:12]}"
    if not (target / PACKAGE).is_dir():
        export(commit, target)
    return Version("before", commit[:7], target)


def export(commit: str, target: Path) -> None:
    """Writes ``commit``'s mtl_perception/ (and a REF file naming the commit) into ``target``,
    atomically (a folder beside it, renamed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit, PACKAGE],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        (scratch / "REF").write_text(commit + "\n")
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


def ratio(before: float, after: float) -> str:
    """after / before as 'x0.42' ('-' where either is missing or before is 0)."""
    if before != before or after != after or before == 0:  # NaN or zero
        return "-"
    return f"x{after / before:.2f}"


def before_after_table(
    keys: Sequence[str], columns: Sequence[str], before: Sequence[Sequence[float]],
    after: Sequence[Sequence[float]], key_header: str = "case", digits: int = 1,
) -> str:  # fmt: skip
    """A Markdown table: one row per case and, per column, 'before -> after (xratio)'.

    Args:
        keys: the cases' names, one per row.
        columns: the measures' names.
        before, after: per row, one value per column (NaN: not measured).
    """
    lines = [
        f"| {key_header} | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for key, old, new in zip(keys, before, after, strict=True):
        cells = [
            f"{_number(b, digits)} -> {_number(a, digits)} ({ratio(b, a)})"
            for b, a in zip(old, new, strict=True)
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def versions_line(found: Sequence[Version]) -> str:
    """'before = 89e0a98, after = 1a2b3c4+changes' for a section's text."""
    return ", ".join(f"{v.label} = {v.ref}" for v in found)
