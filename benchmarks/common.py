"""Shared by the benchmark scripts: machine description, timing, and writing a result section
into docs/benchmarks.md between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers."""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
# A benchmark's own child for the node of ``--baseline`` (benchmarks/baseline.py) imports that
# version's package: its folder goes before this checkout's (imported below, not before).
if os.environ.get("MTL_BENCH_PACKAGE"):
    sys.path.insert(0, os.environ["MTL_BENCH_PACKAGE"])


def machine() -> str:
    """CPU model, cores, GPU and library versions, one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )


def command() -> str:
    """The command line that ran this script, relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    interpreter = Path(sys.executable)
    shown = ".venv/bin/python" if interpreter.is_relative_to(ROOT) else "python"
    return shlex.join([shown, str(script), *sys.argv[1:]])


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(
    call: Callable[[], object], repeats: int, warmup: int, device: torch.device | str = "cpu"
) -> list[float]:
    """Seconds per call over ``repeats`` calls after ``warmup`` untimed ones (device synced)."""
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def p95_ms(times: list[float]) -> float:
    return 1e3 * float(np.percentile(times, 95))


def write_section(name: str, markdown: str) -> None:
    """Replaces the marked section ``name`` in docs/benchmarks.md (appends it if absent).

    With MTL_BENCH_OUT set (scripts/gpu_check.sh on a CUDA machine), writes the marked block to
    ``$MTL_BENCH_OUT/<name>.md`` instead and leaves docs/benchmarks.md alone.
    """
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    folder = os.environ.get("MTL_BENCH_OUT")
    if folder:
        target = Path(folder) / f"{name}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block + "\n")
        print(f"wrote section '{name}' to {target}")
        return
    text = DOCS.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOCS.write_text(text)
    print(f"wrote section '{name}' of {DOCS}")


def figure_path(name: str, write: bool) -> Path:
    """Where a benchmark draws its figure ``name``: docs/images with ``--write`` (beside the
    sections in ``$MTL_BENCH_OUT/images`` where that is set, as :func:`write_section` does),
    else the temporary folder (a trial run leaves the docs alone)."""
    folder = os.environ.get("MTL_BENCH_OUT")
    if not write:
        return Path(tempfile.gettempdir()) / name
    target = Path(folder) / "images" / name if folder else ROOT / "docs" / "images" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def header(title: str) -> str:
    return f"Machine: {machine()}.\n\nCommand: `{command()}`\n"
