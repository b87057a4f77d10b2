"""The package is a proper ament_python package that colcon builds the way a robot does."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parent.parent
PACKAGE_FILES = [
    "setup.py",
    "setup.cfg",
    "package.xml",
    "resource",
    "mtl_perception",
    "launch",
    "config",
]


# Every third-party module the package imports (mtl_perception/ and the launch file) and how it
# reaches a robot: ("ros", package.xml key) for ROS packages; ("rosdep", key, pip name) for
# libraries a distribution provides; ("pip", key or None, pip name) for libraries that come from
# pip into the robot's venv (README "On a robot"); ("optional", key or None) for imports guarded
# by `except ImportError`.
IMPORTS = {
    "rclpy": ("ros", "rclpy"),
    "ament_index_python": ("ros", "ament_index_python"),
    "rcl_interfaces": ("ros", "rcl_interfaces"),
    "builtin_interfaces": ("ros", "builtin_interfaces"),
    "std_msgs": ("ros", "std_msgs"),
    "sensor_msgs": ("ros", "sensor_msgs"),
    "vision_msgs": ("ros", "vision_msgs"),
    "diagnostic_msgs": ("ros", "diagnostic_msgs"),
    "launch": ("ros", "launch"),
    "launch_ros": ("ros", "launch_ros"),
    "numpy": ("rosdep", "python3-numpy", "numpy"),
    "cv2": ("rosdep", "python3-opencv", "opencv-python-headless"),
    "yaml": ("rosdep", "python3-yaml", "pyyaml"),
    "tqdm": ("rosdep", "python3-tqdm", "tqdm"),
    "matplotlib": ("rosdep", "python3-matplotlib", "matplotlib"),
    "PIL": ("rosdep", "python3-pil", "pillow"),
    "torch": ("pip", "python3-torch", "torch"),
    "rosbags": ("pip", "python3-rosbags-pip", "rosbags"),
    "onnxruntime": ("pip", "python3-onnxruntime-pip", "onnxruntime"),
    "tensorboard": ("pip", "python3-tensorboard-pip", "tensorboard"),
    "cityscapesscripts": ("pip", None, "cityscapesscripts"),
    "safetensors": ("pip", None, "safetensors"),
    "onnx": ("pip", None, "onnx"),
    "psutil": ("rosdep", "python3-psutil", "psutil"),
    "pynvml": ("pip", None, "nvidia-ml-py"),
    "cv_bridge": ("optional", "cv_bridge"),
    "torchvision": ("optional", None),
}
# Needed at run time without an import of their own.
INDIRECT = {
    "lifecycle_msgs": ("ros", "lifecycle_msgs"),  # rclpy.lifecycle
    "ros2launch": ("ros", "ros2launch"),  # `ros2 launch` for the shipped launch file
    "onnxscript": ("pip", None, "onnxscript"),  # torch.onnx.export(dynamo=True)
    "setuptools": ("pip", None, "setuptools"),  # torch's; held below 80 for colcon
}


def _imported_modules() -> dict[str, set[str]]:
    """Top-level third-party module -> files importing it (``torch.utils.tensorboard`` counts
    as tensorboard, which it needs)."""
    found: dict[str, set[str]] = {}
    files = [*(REPO / "mtl_perception").rglob("*.py"), *(REPO / "launch").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = "tensorboard" if name.startswith("torch.utils.tensorboard") else name
                top = top.split(".")[0]
                if top not in sys.stdlib_module_names and top != "mtl_perception":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _pins(name: str) -> dict[str, str]:
    """package name -> version pinned in requirements/NAME and the files it includes."""
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            pins |= _pins(line[3:].strip())
        elif line:
            package, _, version = line.partition("==")
            assert version, f"requirements/{name}: {line} is not pinned with =="
            pins[package.lower()] = version
    return pins


def test_every_import_is_declared_in_package_xml_and_pinned():
    imported = _imported_modules()
    unknown = set(imported) - set(IMPORTS)
    assert not unknown, f"undeclared imports: { {m: imported[m] for m in unknown} }"
    assert set(IMPORTS) - set(imported) == set(), "stale entries in IMPORTS"

    package = parse_package(REPO / "package.xml")
    assert package.package_format == 3
    assert package.name == "mtl_perception"
    assert package.get_build_type() == "ament_python"
    declared = {d.name for d in package.exec_depends + package.build_export_depends}
    rosdep_pins, pip_pins = _pins("runtime-rosdep.txt"), _pins("runtime-pip.txt")
    assert _pins("python.txt") == rosdep_pins | pip_pins
    wanted_keys = set()
    for module, (kind, key, *pip) in {**IMPORTS, **INDIRECT}.items():
        if key:
            wanted_keys.add(key)
        if kind == "rosdep":
            assert pip[0] in rosdep_pins, (module, "requirements/runtime-rosdep.txt")
        elif kind == "pip":
            assert pip[0] in pip_pins, (module, "requirements/runtime-pip.txt")
    assert declared - wanted_keys == set(), "package.xml depends on what nothing needs"
    assert wanted_keys - declared == set(), "package.xml lacks these keys"
    # Nothing is pinned twice or pinned without a use.
    assert not set(rosdep_pins) & set(pip_pins)
    users = {pip[0] for kind, _, *pip in {**IMPORTS, **INDIRECT}.values() if pip}
    assert set(rosdep_pins) | set(pip_pins) == users
    assert "python3-pytest" in {d.name for d in package.test_depends}


def _catches_import_error(handler_type: ast.expr) -> bool:
    names = {ast.unparse(e) for e in getattr(handler_type, "elts", [handler_type])}
    return bool(names & {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def test_optional_imports_are_guarded():
    for module in (m for m, (kind, *_) in IMPORTS.items() if kind == "optional"):
        for file in _imported_modules()[module]:
            tree = ast.parse((REPO / file).read_text())
            guarded = [
                node
                for node in ast.walk(tree)
                if isinstance(node, ast.Try)
                and any(
                    isinstance(inner, (ast.Import, ast.ImportFrom)) and module in ast.unparse(inner)
                    for inner in ast.walk(ast.Module(body=node.body, type_ignores=[]))
                )
                and any(h.type is None or _catches_import_error(h.type) for h in node.handlers)
            ]
            assert guarded, f"{file} imports {module} without `except ImportError`"


def test_robot_recipe_skips_exactly_the_keys_pip_installs():
    """README: rosdep installs apt keys only; the pip-installed ones go into the venv."""
    readme = (REPO / "README.md").read_text()
    skipped = re.findall(r'--skip-keys "([^"]+)"', readme)
    assert len(skipped) == 1, "README's robot recipe must run rosdep with one --skip-keys list"
    pip_keys = {key for kind, key, *_ in IMPORTS.values() if kind == "pip" and key}
    assert set(skipped[0].split()) == pip_keys
    assert "pip install -r src/mtl_perception/requirements/runtime-pip.txt" in readme
    assert "--system-site-packages" in readme


def test_vision_msgs_copy_is_hidden_from_colcon():
    """On a robot, colcon must use the distribution's vision_msgs, not build ours beside it."""
    assert (REPO / "interfaces" / "vision_msgs" / "COLCON_IGNORE").exists()


@pytest.mark.slow
def _copy_package(source: Path) -> Path:
    """The package's files in ``source`` (builds write into their source tree: never into the
    checkout, which a concurrent set-up may be building)."""
    source.mkdir(parents=True)
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    return source


def test_colcon_build_installs_where_ros2_tools_look(tmp_path):
    _copy_package(tmp_path / "src" / "mtl_perception")
    colcon = Path(sys.executable).parent / "colcon"
    result = subprocess.run(
        [str(colcon), "--log-base", "log", "build", "--base-paths", "src"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "COLCON_HOME": str(tmp_path / ".colcon")},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    prefix = tmp_path / "install" / "mtl_perception"
    share = prefix / "share" / "mtl_perception"
    assert (prefix / "share/ament_index/resource_index/packages/mtl_perception").is_file()
    assert (share / "package.xml").is_file()
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.xml", "config/*.rviz"):
        expected = sorted(p.name for p in REPO.glob(pattern))
        assert sorted(p.name for p in share.glob(pattern)) == expected, pattern

    # Every console script lands in lib/mtl_perception, where `ros2 run` looks.
    parser = configparser.ConfigParser()
    parser.read(prefix.glob("lib/python*/site-packages/mtl_perception*/entry_points.txt"))
    scripts = list(parser["console_scripts"]) if parser.has_section("console_scripts") else []
    for script in scripts:
        assert (prefix / "lib" / "mtl_perception" / script).is_file(), script


def test_no_path_into_the_source_tree():
    """Resources come from mtl_perception.resources (package data), never from parents[N]."""
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "mtl_perception").rglob("*.py")
        if re.search(r"parents\[\d\]|parent\.parent", path.read_text())
    ]
    assert offenders == []


@pytest.mark.slow
def test_a_wheel_install_finds_its_resources_from_any_directory(tmp_path):
    """A non-editable install (what a wheel or colcon gives) reads its class map, configs and
    vision_msgs definitions from inside itself, run from a directory with no config/."""
    target = tmp_path / "site"
    source = _copy_package(tmp_path / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import mtl_perception, pathlib\n"
        "from mtl_perception.data.labels import ClassMap\n"
        "from mtl_perception.training.config import TrainConfig\n"
        "from mtl_perception.resources import config_files, vision_msgs_definitions\n"
        f"assert mtl_perception.__file__.startswith({str(target)!r}), mtl_perception.__file__\n"
        "print(ClassMap.from_yaml().num_seg_classes)\n"
        "print(ClassMap.from_yaml('config/classes_cityscapes.yaml').num_det_classes)\n"
        "print(TrainConfig.from_yaml('config/train_synthetic_small.yaml').data.classes)\n"
        "print(sorted(p.name for p in config_files()))\n"
        "print(len(list(vision_msgs_definitions().glob('*.msg'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    from mtl_perception.data.labels import ClassMap

    source = ClassMap.from_yaml(REPO / "config" / "classes_cityscapes.yaml")
    assert lines[:3] == [
        str(source.num_seg_classes),
        str(source.num_det_classes),
        "config/classes_cityscapes.yaml",
    ]
    assert lines[3] == str(sorted(p.name for p in (REPO / "config").iterdir()))
    assert lines[4] == "10"


@pytest.mark.parametrize("distro", ["humble", "Jazzy", "rolling"])
def test_setup_refuses_a_distribution_without_wheels_in_one_line(tmp_path, distro):
    """ROS_DISTRO picks the wheels (kilted, jazzy) when no system ROS 2 is sourced; any other
    value is one error line naming the supported ones, and no venv is created."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    base_python = str(Path(sys.base_prefix) / "bin" / "python3")  # no ROS 2 importable
    result = subprocess.run(
        [str(REPO / "scripts" / "setup_env.sh")],
        env={**env, "ROS_DISTRO": distro, "VENV": str(venv), "PYTHON": base_python},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"[setup] error: ROS_DISTRO='{distro}' has no ROS 2 wheels here and no sourced system "
        "ROS 2 provides rclpy; supported: kilted (default), jazzy"
    ]
    assert not venv.exists()


def _gpu_check(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMPDIR": str(tmp), **env}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


def test_gpu_check_script_answers_help_and_refuses_bad_arguments(tmp_path):
    """The CUDA machine's one command (its steps need CUDA; its arguments are checked here)."""
    helped = _gpu_check("--help", tmp=tmp_path)
    assert helped.returncode == 0 and "OUTPUT_DIR" in helped.stdout and "STEP" in helped.stdout
    assert not (tmp_path / "--help").exists()
    for args, mention in (
        ((), "usage: scripts/gpu_check.sh OUTPUT_DIR"),
        (("-x",), "unknown option '-x'"),
        ((str(tmp_path / "o"), "bogus"), "unknown step 'bogus'"),
    ):
        refused = _gpu_check(*args, tmp=tmp_path)
        assert refused.returncode == 2 and mention in refused.stderr, (args, refused.stderr)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "summary.txt").write_text("the last run's figures\n")
    refused = _gpu_check(str(earlier), tmp=tmp_path)
    assert refused.returncode == 2 and "exists and is not an empty folder" in refused.stderr
    assert (earlier / "summary.txt").read_text() == "the last run's figures\n"
    # a run that stops early (here: no wheels carried) leaves no work folder behind
    stopped = _gpu_check(str(tmp_path / "new"), tmp=tmp_path, GPU_CHECK_DIR=str(tmp_path / "no"))
    assert stopped.returncode == 1 and "MANIFEST" in stopped.stderr
    assert not list(tmp_path.glob("mtl-gpu-check.*"))
