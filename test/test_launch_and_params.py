"""What can be checked of the launch file and parameter file without launch_ros."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtl_perception.ros.fastdds import (
    LARGE_IMAGES_PROFILE,
    PROFILE_VARIABLES,
    profile_environment,
    startup_line,
)
from mtl_perception.ros.launch_support import (
    check_launch_arguments,
    node_parameters,
    require_rviz2,
    rviz_config_for_namespace,
    write_rviz_config,
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
    for name in ("perception.yaml", "perception.rviz"):
        assert name in strings and (REPO / "config" / name).is_file(), name
    assert (REPO / "config" / LARGE_IMAGES_PROFILE).is_file()
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
        expected = list(default) if isinstance(default, tuple) else default  # YAML has lists
        assert params[name] == expected, name
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


def test_rviz_config_file_is_one_per_namespace_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    template = REPO / "config" / "perception.rviz"
    first = write_rviz_config(template, "robot1")
    again = write_rviz_config(template, "/robot1/")
    other = write_rviz_config(template, "robot2")
    assert first == again != other
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mtl_perception_robot1.rviz",
        "mtl_perception_robot2.rviz",
    ]
    assert "/robot2/perception_node/overlay" in other.read_text()


def test_bad_launch_arguments_are_refused_before_anything_starts(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**: {ros__parameters: {}}\n")
    check_launch_arguments(str(params), "/camera/image_raw")
    with pytest.raises(FileNotFoundError, match=r"params_file:=.*nope\.yaml is not a file"):
        check_launch_arguments(str(tmp_path / "nope.yaml"), "/camera/image_raw")
    with pytest.raises(ValueError, match="camera_topic"):
        check_launch_arguments(str(params), " ")


def test_use_rviz_needs_rviz2_and_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"needs rviz2.*apt install ros-\$ROS_DISTRO-rviz2"):
        require_rviz2()
    marker = tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "rviz2"
    marker.parent.mkdir(parents=True)
    marker.touch()
    require_rviz2()  # found in the ament index: no error


def test_launch_file_checks_its_arguments_and_sets_both_profile_variables():
    calls = {
        getattr(node.func, "id", None)
        for node in ast.walk(ast.parse(LAUNCH.read_text()))
        if isinstance(node, ast.Call)
    }
    assert {"check_launch_arguments", "require_rviz2", "profile_environment"} <= calls


@pytest.mark.parametrize("distro", ["kilted", "jazzy", "humble", ""])
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, "SHIPPED"),
        ({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}, "/mine.xml"),
        ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/jazzy.xml"}, "/jazzy.xml"),
        ({"FASTDDS_DEFAULT_PROFILES_FILE": "", "FASTRTPS_DEFAULT_PROFILES_FILE": ""}, "SHIPPED"),
    ],
)
def test_fastdds_profile_reaches_the_variable_each_fast_dds_reads(given, expected, distro):
    """Fast DDS 3 (Kilted) reads FASTDDS_... (and warns on every start that FASTRTPS_... is
    deprecated when that is set); 2.x (Humble, Jazzy) reads only FASTRTPS_...: the profile goes to
    the ones the distribution reads, the user's choice first; the venv's start-up line agrees."""
    names = PROFILE_VARIABLES if distro in ("jazzy", "humble") else PROFILE_VARIABLES[:1]
    assert profile_environment(given, "SHIPPED", distro) == dict.fromkeys(names, expected)
    assert profile_environment({**given, "ROS_DISTRO": distro}, "SHIPPED") == dict.fromkeys(
        names, expected
    )
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES} | given
    probe = (
        f"{startup_line('SHIPPED', distro)}; "
        f"print([os.environ.get(n) or None for n in {PROFILE_VARIABLES!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    unset = {name: given.get(name) or None for name in PROFILE_VARIABLES}
    assert out.strip() == str([expected if n in names else unset[n] for n in PROFILE_VARIABLES])
