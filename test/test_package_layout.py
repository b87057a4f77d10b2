"""The package is a proper ament_python package that colcon builds the way a robot does."""

from __future__ import annotations

import configparser
import os
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


def test_package_xml_declares_ros_dependencies():
    package = parse_package(REPO / "package.xml")
    assert package.package_format == 3
    assert package.name == "mtl_perception"
    assert package.get_build_type() == "ament_python"
    runtime = {d.name for d in package.exec_depends + package.build_export_depends}
    wanted = {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "cv_bridge", "diagnostic_msgs"}
    wanted |= {"python3-numpy", "python3-opencv", "python3-yaml"}
    assert wanted <= runtime, wanted - runtime
    assert "python3-pytest" in {d.name for d in package.test_depends}


def test_vision_msgs_copy_is_hidden_from_colcon():
    """On a robot, colcon must use the distribution's vision_msgs, not build ours beside it."""
    assert (REPO / "interfaces" / "vision_msgs" / "COLCON_IGNORE").exists()


@pytest.mark.slow
def test_colcon_build_installs_where_ros2_tools_look(tmp_path):
    source = tmp_path / "src" / "mtl_perception"
    source.mkdir(parents=True)
    for name in PACKAGE_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
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
