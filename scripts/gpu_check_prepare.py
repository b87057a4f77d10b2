"""Prepares the folder that scripts/gpu_check.sh needs on a CUDA machine without network.

    .venv/bin/python scripts/gpu_check_prepare.py [--out .gpu-check] [--python-version 3.12]
        [--baseline 89e0a98|none]

The CUDA machine brings Python, its own CUDA torch and the common scientific packages (numpy,
OpenCV, PyYAML, Pillow, matplotlib, tqdm, TensorBoard, ONNX, pytest...). It lacks ROS 2 and
rosbags. This writes into OUT/wheels the wheels of the ROS 2 Kilted packages the node needs
(requirements/ros-kilted.txt, with everything they pull in), rosbags and the test plugins, for
the target's Python, pinned to the versions of this checkout's .venv; pure-Python packages
published only as source are built into wheels here. OUT/MANIFEST lists them. The folder must stay
under the device tool's 64 MiB (checked; about 52 MiB for Kilted on CPython 3.12).

It also writes OUT/baseline: the ``mtl_perception`` package of the ``--baseline`` commit (default
89e0a98, the start of issue 23) and a REF file naming it, for the node benchmarks' before/after
(benchmarks/baseline.py) on a machine that gets the working tree without its git history.

Packages named in PROVIDED are left out (the CUDA image has them); `gpu_check.sh` checks at
its start that every module it needs imports and names any that is missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
BASELINE = "89e0a98"  # the node before issue 23: the 'before' of the node benchmarks
# What a CUDA machine's Python image provides (read from the device tool's package list).
PROVIDED = {
    "numpy", "packaging", "pyyaml", "setuptools", "typing-extensions", "python-dateutil",
    "pyparsing", "six", "pytest", "pluggy", "iniconfig", "pygments", "hypothesis",
    "sortedcontainers", "attrs", "pytest-timeout", "tqdm", "requests", "certifi", "urllib3",
    "idna", "charset-normalizer", "pillow", "matplotlib", "kiwisolver", "fonttools", "cycler",
    "contourpy", "typing",  # typing: a Python 2 backport cityscapesscripts still names
}  # fmt: skip
# Not in ros-kilted.txt: the bag tools' readers, the node process's resource sampling (psutil;
# NVML for the GPU), the test plugins.
EXTRA_ROOTS = ["rosbags", "cityscapesscripts", "psutil", "nvidia-ml-py", "pytest-repeat"]
PLATFORMS = [
    "manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64", "manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
    "manylinux1_x86_64", "any",
]  # fmt: skip


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> dict[str, str]:
    """{normalised name: version} of ``roots`` and everything they need, as installed here."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if normalise(name) in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"gpu_check_prepare: {name} is not installed in {sys.prefix}; run make setup")
        seen[normalise(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def ros_roots() -> list[str]:
    lines = (ROOT / "requirements" / "ros-kilted.txt").read_text().splitlines()
    return [ln.split("==")[0].strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def cached_wheel(pin: str, folder: Path) -> Path | None:
    """A wheel of exactly ``pin`` in ``folder`` (an earlier run's), if there is one."""
    name, version = pin.split("==")
    for wheel in folder.glob("*.whl") if folder.is_dir() else ():
        parts = wheel.name.split("-")
        if normalise(parts[0]) == normalise(name) and parts[1] == version:
            return wheel
    return None


def download(pins: list[str], wheels: Path, python_version: str, cache: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for pin in pins:
        earlier = cached_wheel(pin, cache)
        tag = "cp" + python_version.replace(".", "")
        if earlier is not None and ("-none-any" in earlier.name or f"-{tag}-" in earlier.name):
            shutil.copy2(earlier, wheels / earlier.name)  # an earlier run's, for this Python
            continue
        binary = subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
             "cp", "--python-version", python_version, *platforms, "-d", str(wheels), pin],
            capture_output=True, text=True,
        )  # fmt: skip
        if binary.returncode == 0:
            continue
        # Published as source only: pure-Python ones build into a py3-none-any wheel here.
        built = subprocess.run(
            [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), pin],
            capture_output=True, text=True,
        )  # fmt: skip
        if built.returncode != 0 or not list(wheels.glob(f"{pin.split('==')[0]}*-none-any.whl")):
            sys.exit(f"gpu_check_prepare: no wheel for {pin} ({binary.stderr.strip()[-200:]})")


def write_baseline(ref: str, target: Path) -> None:
    """``ref``'s mtl_perception/ and a REF file into ``target`` (benchmarks/baseline.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from baseline import export

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except subprocess.CalledProcessError:
        sys.exit(f"gpu_check_prepare: --baseline {ref} is not a commit of this repository")
    export(commit, target)
    print(f"wrote the package of {commit[:7]} to {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-check")
    parser.add_argument("--python-version", default="3.12", help="the CUDA machine's Python")
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help=f"commit whose package is carried as OUT/baseline (default {BASELINE}; none: skip)",
    )
    args = parser.parse_args()
    if args.baseline != "none":
        write_baseline(args.baseline, args.out / "baseline")
    pins = sorted(
        f"{name}=={version}"
        for name, version in closure(ros_roots() + EXTRA_ROOTS).items()
        if name not in PROVIDED
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        wheels = Path(scratch) / "wheels"
        wheels.mkdir()
        download(pins, wheels, args.python_version, args.out / "wheels")
        size = sum(f.stat().st_size for f in wheels.iterdir())
        if size > LIMIT_BYTES:
            sys.exit(f"gpu_check_prepare: the wheels take {size / 2**20:.1f} MiB, over 64 MiB")
        (wheels / "MANIFEST").write_text(
            f"# python {args.python_version}; {len(pins)} packages\n" + "\n".join(pins) + "\n"
        )
        target = args.out / "wheels"
        if target.exists():
            for old in target.iterdir():
                old.unlink()
            target.rmdir()
        wheels.rename(target)
    print(f"wrote {len(pins)} wheels ({size / 2**20:.1f} MiB) to {target}")
    print("on the CUDA machine: scripts/gpu_check.sh OUTPUT_DIR (with this folder beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
