"""What can be checked of the launch file and parameter file without launch_ros."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from mtl_perception.ros.launch_support import (
    node_parameters,
    rviz_config_for_namespace,
)
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
    overrides = node_parameters("params.yaml", "model.pt")[1]
    assert overrides and set(overrides) <= set(declared)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_every_launch_argument_has_a_description():
    arguments = _calls(ast.parse(LAUNCH.read_text()), "DeclareLaunchArgument")
    assert len(arguments) == 5
    for call in arguments:
        name = call.args[0].value
        description = {k.arg: k.value for k in call.keywords}.get("description")
        assert isinstance(description, ast.Constant) and len(description.value) > 10, name


def test_checkpoint_in_the_params_file_survives_unless_the_argument_is_given():
    # The node's parameters are exactly what node_parameters decides...
    nodes = [
        call
        for call in _calls(ast.parse(LAUNCH.read_text()), "Node")
        if any(k.arg == "executable" and k.value.value == "perception_node" for k in call.keywords)
    ]
    assert len(nodes) == 1
    parameters = {k.arg: k.value for k in nodes[0].keywords}["parameters"]
    assert isinstance(parameters, ast.Call) and parameters.func.id == "node_parameters"
    # ...which adds no checkpoint override when the argument is left at its default "",
    assert node_parameters("/ws/my_params.yaml", "") == ["/ws/my_params.yaml"]
    # and puts a given one after the file, where it wins.
    assert node_parameters("/ws/my_params.yaml", "/m/best.pt") == [
        "/ws/my_params.yaml",
        {"checkpoint": "/m/best.pt"},
    ]


def _rviz_topics(text: str) -> set[str]:
    rviz = yaml.safe_load(text)
    return {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [("", ""), ("robot1", "/robot1"), ("/robot1/", "/robot1"), ("fleet/car_2", "/fleet/car_2")],
)
def test_rviz_config_follows_the_namespace(namespace, prefix):
    shipped = (REPO / "config" / "perception.rviz").read_text()
    text = rviz_config_for_namespace(shipped, namespace)
    assert _rviz_topics(text) == {
        f"{prefix}/perception_node/overlay",
        f"{prefix}/perception_node/semantic_color",
    }
    # Nothing but the topic names changes.
    assert len(text.splitlines()) == len(shipped.splitlines())
    changed = [a for a, b in zip(shipped.splitlines(), text.splitlines(), strict=True) if a != b]
    assert len(changed) == (2 if prefix else 0)


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((REPO / "config" / "perception.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"/perception_node/overlay", "/perception_node/semantic_color"}
