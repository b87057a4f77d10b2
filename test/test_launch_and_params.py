"""What can be checked of the launch file and parameter file without launch_ros."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import yaml

from mtl_perception.ros.parameters import NodeParameters

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch" / "perception.launch.py"


def _strings(tree: ast.AST) -> set[str]:
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_launch_file_compiles_and_names_existing_files_and_executables():
    source = LAUNCH.read_text()
    tree = ast.parse(source)
    compile(source, str(LAUNCH), "exec")
    assert any(
        isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
        for n in tree.body
    )
    strings = _strings(tree)
    for name in ("perception.yaml", "perception.rviz", "fastdds_large_images.xml"):
        assert name in strings and (REPO / "config" / name).is_file(), name
    assert "perception_node" in strings
    assert "perception_node = mtl_perception.ros.node:main" in (REPO / "setup.py").read_text()
    for argument in ("camera_topic", "params_file", "namespace", "use_rviz", "checkpoint"):
        assert argument in strings, argument


def test_parameter_file_holds_every_declared_parameter_with_its_default():
    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())["/**"][
        "ros__parameters"
    ]
    declared = {f.name: f.default for f in dataclasses.fields(NodeParameters)} | {"autostart": True}
    assert set(params) == set(declared)
    for name, default in declared.items():
        assert params[name] == default, name
    # Parameters the launch file sets must be declared by the node.
    overrides = re.findall(r'\{"(\w+)": LaunchConfiguration', LAUNCH.read_text())
    assert overrides and set(overrides) <= set(declared)


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((REPO / "config" / "perception.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"/perception_node/overlay", "/perception_node/semantic_color"}
