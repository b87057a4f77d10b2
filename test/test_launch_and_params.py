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
    NODE_NAME,
    OVERLAY_NODE_NAME,
    LaunchArguments,
    check_namespace,
    node_parameters,
    node_topic_resolver,
    params_file_cameras,
    plan_node,
    plan_overlay,
    require_rviz2,
    starts_overlay,
)
from mtl_perception.ros.overlay_node import OverlayParameters
from mtl_perception.ros.parameters import NodeParameters
from mtl_perception.ros.rviz_config import rviz_config, write_rviz_config

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
    assert "overlay_node" in strings
    assert "overlay_node = mtl_perception.ros.overlay_node:main" in (REPO / "setup.py").read_text()


LAUNCH_ARGUMENTS = {f.name for f in dataclasses.fields(LaunchArguments)} | {"use_rviz", "overlay"}


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
    overrides = node_parameters("params.yaml", "model.pt", ("front",))[1]
    assert set(overrides) == {"checkpoint", "cameras"} and set(overrides) <= set(declared)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == name
    ]


def test_every_launch_argument_is_declared_once_with_a_description():
    """The launch file reads every LaunchArguments field by its name (and use_rviz, overlay):
    each must be declared, or ros2 launch would fail on it ("launch configuration ... does not
    exist")."""
    arguments = _calls(ast.parse(LAUNCH.read_text()), "DeclareLaunchArgument")
    names = [call.args[0].value for call in arguments]
    assert sorted(names) == sorted(LAUNCH_ARGUMENTS)
    for call in arguments:
        description = {k.arg: k.value for k in call.keywords}.get("description")
        assert isinstance(description, ast.Constant) and len(description.value) > 10, call


def test_the_node_gets_the_planned_parameters_and_remappings():
    nodes = [
        call
        for call in _calls(ast.parse(LAUNCH.read_text()), "Node")
        if any(k.arg == "executable" and k.value.value == "perception_node" for k in call.keywords)
    ]
    assert len(nodes) == 1
    keywords = {k.arg: ast.unparse(k.value) for k in nodes[0].keywords}
    assert keywords["parameters"] == "node.parameters"
    assert keywords["remappings"] == "node.remappings"
    assert keywords["namespace"] == "node.namespace"
    assert "node = plan_node(arguments)" in LAUNCH.read_text()


def test_the_overlay_node_gets_its_planned_parameters_and_remappings_when_asked_for():
    source = LAUNCH.read_text()
    nodes = [
        call
        for call in _calls(ast.parse(source), "Node")
        if any(k.arg == "executable" and k.value.value == "overlay_node" for k in call.keywords)
    ]
    assert len(nodes) == 1
    keywords = {k.arg: ast.unparse(k.value) for k in nodes[0].keywords}
    assert keywords["name"] == "OVERLAY_NODE_NAME" and OVERLAY_NODE_NAME == "overlay_node"
    assert keywords["parameters"] == "drawing.parameters"
    assert keywords["remappings"] == "drawing.remappings"
    assert keywords["namespace"] == "drawing.namespace"
    assert "drawing = plan_overlay(node, arguments.params_file)" in source
    assert "if starts_overlay(use_rviz, overlay):" in source
    # rviz shows the overlay node's pictures; overlay:=true gives them without rviz.
    assert [starts_overlay(r, o) for r in (False, True) for o in (False, True)] == [
        False,
        True,
        True,
        True,
    ]


def test_the_overlay_node_reads_the_cameras_as_the_perception_node_does(tmp_path):
    """Same namespace, cameras and remappings as the perception node, and the perception
    node's camera parameters from the params file whichever section gives them (here one
    naming the node), passed by name: every key is one of the overlay node's."""
    params = _params_file(
        tmp_path,
        "/**:\n  ros__parameters:\n    cameras: [front, rear]\n    max_pixels: 1000\n"
        "    checkpoint: /m.pt\n"
        "/**/perception_node:\n  ros__parameters:\n    qos_reliability: reliable\n"
        "    rear:\n      input_transport: compressed\n"
        "other_node:\n  ros__parameters:\n    input_transport: compressed\n",
    )
    node = plan_node(LaunchArguments(params, namespace="robot1", camera_topics="front:/f/img"))
    overlay = plan_overlay(node, params)
    assert overlay.namespace == node.namespace == "/robot1"
    assert overlay.remappings == node.remappings
    assert overlay.parameters == [
        {
            "perception_node": "perception_node",
            "cameras": ["front", "rear"],
            "qos_reliability": "reliable",
            "max_pixels": 1000,
            "rear.input_transport": "compressed",
        }
    ]
    known = {f.name for f in dataclasses.fields(OverlayParameters)}
    assert set(overlay.parameters[0]) - known == {"rear.input_transport"}
    # One unnamed camera, nothing in the file: the overlay node's defaults are the node's.
    default = plan_node(LaunchArguments(_params_file(tmp_path)))
    assert plan_overlay(default, _params_file(tmp_path)).parameters == [
        {"perception_node": "perception_node", "cameras": [""]}
    ]
    assert plan_overlay(default, _params_file(tmp_path)).remappings == default.remappings


def test_checkpoint_in_the_params_file_survives_unless_the_argument_is_given():
    # No checkpoint override when the argument is left at its default "",
    assert node_parameters("/ws/my_params.yaml", "") == ["/ws/my_params.yaml"]
    # and a given one after the file, where it wins.
    assert node_parameters("/ws/my_params.yaml", "/m/best.pt") == [
        "/ws/my_params.yaml",
        {"checkpoint": "/m/best.pt"},
    ]


def _params_file(tmp_path, text="/**: {ros__parameters: {}}\n"):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return str(path)


def test_one_unnamed_camera_reads_camera_topic(tmp_path):
    params = _params_file(tmp_path)
    default = plan_node(LaunchArguments(params))
    assert default.cameras == ("",)
    assert default.parameters == [params]
    assert default.remappings == [
        ("image", "/camera/image_raw"),
        ("image/compressed", "/camera/image_raw/compressed"),
    ]
    given = plan_node(LaunchArguments(params, camera_topic="/cam/image", namespace="robot1"))
    assert given.remappings == [
        ("image", "/cam/image"),
        ("image/compressed", "/cam/image/compressed"),
    ]


def test_named_cameras_from_the_argument_are_given_to_the_node_and_remapped(tmp_path):
    params = _params_file(tmp_path)
    for value in ("front,rear", "[front, rear]", " front , rear "):
        plan = plan_node(
            LaunchArguments(
                params,
                checkpoint="/m.pt",
                cameras=value,
                camera_topics="rear:/cams/rear/image_raw, front:/cams/front/image_raw",
            )
        )
        assert plan.cameras == ("front", "rear"), value
        assert plan.parameters == [params, {"checkpoint": "/m.pt", "cameras": ["front", "rear"]}]
        assert sorted(plan.remappings) == [
            ("front/image", "/cams/front/image_raw"),
            ("front/image/compressed", "/cams/front/image_raw/compressed"),
            ("rear/image", "/cams/rear/image_raw"),
            ("rear/image/compressed", "/cams/rear/image_raw/compressed"),
        ]
    # A camera left out of camera_topics keeps its own <name>/image (no remapping).
    partly = plan_node(LaunchArguments(params, cameras="front,rear", camera_topics="rear:r/img"))
    assert partly.remappings == [
        ("rear/image", "r/img"),
        ("rear/image/compressed", "r/img/compressed"),
    ]
    assert plan_node(LaunchArguments(params, cameras="front,rear")).remappings == []


RIG = "/**:\n  ros__parameters:\n    cameras: [front, rear]\n    device: cpu\n"


def test_named_cameras_of_the_params_file_are_seen_by_the_launch(tmp_path):
    """The issue: with cameras in the params file, the launch remapped 'image' (which no camera
    reads) and showed /perception_node/overlay in rviz; now it knows the file's cameras."""
    params = _params_file(tmp_path, RIG)
    plan = plan_node(LaunchArguments(params, camera_topics="front:/f/image_raw"))
    assert plan.cameras == ("front", "rear")
    assert plan.parameters == [params]  # the file's cameras stand: nothing overrides them
    assert plan.remappings == [
        ("front/image", "/f/image_raw"),
        ("front/image/compressed", "/f/image_raw/compressed"),
    ]
    # cameras:= overrides the file's
    plan = plan_node(LaunchArguments(params, cameras="left"))
    assert plan.cameras == ("left",) and plan.parameters[1] == {"cameras": ["left"]}


@pytest.mark.parametrize(
    ("text", "namespace", "expected"),
    [
        ("/**: {ros__parameters: {device: cpu}}", "", ("",)),
        ("/**: {ros__parameters: {cameras: ['']}}", "", ("",)),
        ("perception_node: {ros__parameters: {cameras: [a]}}", "", ("a",)),
        ("perception_node: {ros__parameters: {cameras: [a]}}", "robot1", ("",)),
        ("/robot1/perception_node: {ros__parameters: {cameras: [a]}}", "/robot1/", ("a",)),
        ("/**/perception_node: {ros__parameters: {cameras: [a]}}", "", ("a",)),
        ("/*/perception_node: {ros__parameters: {cameras: [a]}}", "x/y", ("",)),
        ("/*/perception_node: {ros__parameters: {cameras: [a]}}", "x", ("a",)),
        ("/*: {ros__parameters: {cameras: [a]}}", "x", ("",)),
        ("other_node: {ros__parameters: {cameras: [a]}}", "", ("",)),
        # a later section wins (as rclpy reads the file; test_launch_cameras checks rclpy)
        (
            "perception_node: {ros__parameters: {cameras: [a]}}\n"
            "/**: {ros__parameters: {cameras: [b]}}",
            "",
            ("b",),
        ),
        (
            "/**: {ros__parameters: {cameras: [b]}}\n"
            "perception_node: {ros__parameters: {cameras: [a]}}",
            "",
            ("a",),
        ),
    ],
)
def test_the_params_files_cameras_for_the_node_in_its_namespace(
    tmp_path, text, namespace, expected
):
    assert params_file_cameras(_params_file(tmp_path, text + "\n"), namespace) == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # the issue: camera_topic:= with named cameras was silently ignored
        (
            {"cameras": "front,rear", "camera_topic": "/camera/image_raw"},
            r"camera_topic:=/camera/image_raw is for one unnamed camera, but the node has cameras "
            r"front, rear; give each camera's topic with "
            r"camera_topics:=front:/front/image_raw,rear:/rear/image_raw",
        ),
        (
            {"params": RIG, "camera_topic": "/x"},
            r"camera_topic:=/x is for one unnamed camera, but the node has cameras front, rear",
        ),
        (
            {"camera_topics": "front:/x"},
            r"camera_topics:=front:/x is for named cameras, but the node has one unnamed camera",
        ),
        (
            {"cameras": "front", "camera_topics": "rear:/x"},
            r"camera_topics:=rear:/x: 'rear' is not one of the node's cameras \(front\)",
        ),
        (
            {"cameras": "front", "camera_topics": "front:/x,front:/y"},
            r"camera 'front' is named twice",
        ),
        (
            {"cameras": "front", "camera_topics": "/front/image_raw"},
            r"'/front/image_raw' is not camera:topic",
        ),
        (
            {"cameras": "front", "camera_topics": "front:/a b"},
            r"camera_topics:=front:/a b names '/a b', not a topic name \(topic name must not "
            r"contain",
        ),
        (
            {"cameras": "front", "camera_topics": "front:"},
            r"names '', not a topic name \(topic name must not be empty",
        ),
        ({"camera_topic": " "}, r"camera_topic:=  names ' ', not a topic name"),
        ({"cameras": "front,2nd"}, r"cameras:=front,2nd: '2nd' is not a camera name"),
        ({"cameras": "front,front"}, r"cameras:=front,front: names front more than once"),
        ({"cameras": "front,"}, r"cameras:=front,: '' is not a camera name"),
        ({"cameras": "[front"}, r"cameras:=\[front is not a list of camera names"),
        ({"cameras": "[1, 2]"}, r"is not a list of camera names"),
        ({"cameras": "['']"}, r"names no camera"),
        (
            {"params": "/**: {ros__parameters: {cameras: front}}"},
            r"params_file:=.*: parameter 'cameras' must be a list of camera names, got 'front'",
        ),
        (
            {"params": "/**: {ros__parameters: {cameras: [9]}}"},
            r"params_file:=.*: parameter 'cameras' must be a list of camera names",
        ),
        (
            {"params": "/**: {ros__parameters: {cameras: [a, a]}}"},
            r"params_file:=.*: parameter 'cameras' names a more than once",
        ),
        ({"params": "/**: [unclosed"}, r"params_file .*params\.yaml"),
    ],
)
def test_bad_camera_arguments_are_refused_in_one_line(tmp_path, arguments, message):
    arguments = dict(arguments)
    params = _params_file(tmp_path, arguments.pop("params", "/**: {ros__parameters: {}}") + "\n")
    with pytest.raises(ValueError, match=message) as refused:
        plan_node(LaunchArguments(params, **arguments))
    assert "\n" not in str(refused.value)


def _rviz_topics(text: str) -> set[str]:
    rviz = yaml.safe_load(text)
    return {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [("", ""), ("robot1", "/robot1"), ("/robot1/", "/robot1"), ("fleet/car_2", "/fleet/car_2")],
)
def test_rviz_config_follows_the_namespace(namespace, prefix):
    shipped = (REPO / "config" / "perception.rviz").read_text()
    text = rviz_config(shipped, namespace)
    assert _rviz_topics(text) == {
        f"{prefix}/perception_node/overlay",
        f"{prefix}/perception_node/semantic_color",
    }
    # Nothing but the topic names changes.
    expected = yaml.safe_load(shipped)
    for display, topic in zip(
        expected["Visualization Manager"]["Displays"], ("overlay", "semantic_color"), strict=True
    ):
        display["Topic"]["Value"] = f"{prefix}/perception_node/{topic}"
    assert yaml.safe_load(text) == expected


@pytest.mark.parametrize(("namespace", "prefix"), [("", ""), ("robot1", "/robot1")])
def test_rviz_config_has_one_display_per_named_camera(namespace, prefix):
    """The issue: with named cameras rviz showed /perception_node/overlay, which no camera
    publishes. Now one group per camera, named after it, shows its overlay and colour mask."""
    shipped = (REPO / "config" / "perception.rviz").read_text()
    rviz = yaml.safe_load(rviz_config(shipped, namespace, ("front", "rear")))
    groups = rviz["Visualization Manager"]["Displays"]
    assert [(g["Class"], g["Name"], g["Enabled"]) for g in groups] == [
        ("rviz_common/Group", "front", True),
        ("rviz_common/Group", "rear", True),
    ]
    template = yaml.safe_load(shipped)["Visualization Manager"]["Displays"]
    for group in groups:
        camera = group["Name"]
        assert [d["Topic"]["Value"] for d in group["Displays"]] == [
            f"{prefix}/perception_node/{camera}/overlay",
            f"{prefix}/perception_node/{camera}/semantic_color",
        ]
        for display, original in zip(group["Displays"], template, strict=True):
            assert {k: v for k, v in display.items() if k != "Topic"} == {
                k: v for k, v in original.items() if k != "Topic"
            }
    # Everything outside the displays is the shipped config's.
    rviz["Visualization Manager"].pop("Displays")
    shipped_rest = yaml.safe_load(shipped)
    shipped_rest["Visualization Manager"].pop("Displays")
    assert rviz == shipped_rest


def test_rviz_config_refuses_a_template_display_showing_no_node_output():
    shipped = (REPO / "config" / "perception.rviz").read_text()
    broken = shipped.replace("/perception_node/overlay", "/camera/image_raw")
    with pytest.raises(
        ValueError, match=r"rviz display 'Overlay \(mask \+ detections\)' shows /camera/image_raw"
    ):
        rviz_config(broken, "", ("front",))


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load((REPO / "config" / "perception.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"/perception_node/overlay", "/perception_node/semantic_color"}


def test_rviz_config_file_is_one_per_namespace_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    template = REPO / "config" / "perception.rviz"
    first = write_rviz_config(template, "robot1")
    again = write_rviz_config(template, "/robot1/", ("front", "rear"))
    other = write_rviz_config(template, "robot2")
    assert first == again != other
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])
    assert first.name.startswith("mtl_perception_robot1_") and first.suffix == ".rviz"
    assert "/robot2/perception_node/overlay" in other.read_text()
    assert "/robot1/perception_node/rear/overlay" in again.read_text()


def test_namespaces_that_read_alike_get_rviz_files_of_their_own(tmp_path, monkeypatch):
    """The finding: /a/b and a_b both wrote mtl_perception_a_b.rviz, so two launches running at
    once showed each other's topics. The longest namespace the node can have is a short name."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    template = REPO / "config" / "perception.rviz"
    paths = {ns: write_rviz_config(template, ns) for ns in ("/a/b", "a_b", "a/b_", "", "/")}
    assert paths["/a/b"] != paths["a_b"] != paths["a/b_"] != paths["/a/b"]
    assert paths[""] == paths["/"]
    assert "/a/b/perception_node/overlay" in paths["/a/b"].read_text()
    assert "/a_b/perception_node/overlay" in paths["a_b"].read_text()
    assert "/perception_node/overlay" in paths[""].read_text()
    longest = "n" * 204  # /<204 n>/perception_node/get_available_transitions: 247 characters
    written = write_rviz_config(template, longest, ("front",))
    assert len(written.name) < 80 and written.parent == tmp_path
    assert f"/{longest}/perception_node/front/overlay" in written.read_text()
    # Written atomically: no temporary left beside the files.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {p.name for p in paths.values()} | {written.name}
    )


LONG_NAMESPACE = "n" * 205  # a namespace, but /<ns>/perception_node/get_available_transitions
# is 248 characters: longer than rcl's 247


@pytest.mark.parametrize(
    ("namespace", "message"),
    [
        (
            "1bad ns",
            r"^namespace:=1bad ns is not a ROS namespace \(namespace must not contain characters "
            r"other than alphanumerics",
        ),
        ("a//b", r"^namespace:=a//b is not a ROS namespace \(namespace must not contain repeated"),
        (
            "n" * 250,
            r"^namespace:=n{50}\.\.\. \(250 characters\) is not a ROS namespace \(namespace "
            r"should not exceed",
        ),
        (
            LONG_NAMESPACE,
            r"^namespace:=n{50}\.\.\. \(205 characters\) is too long for the node: its service "
            r"'/n{49}\.\.\. \(248 characters\)' is not a valid name \(topic length should not "
            r"exceed",
        ),
    ],
)
def test_a_namespace_the_node_cannot_have_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, namespace, message
):
    """The finding: namespace:='1bad ns' was accepted (and named an rviz file with a space),
    250 characters raised OSError 'File name too long' from the rviz writer."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    params = _params_file(tmp_path)
    for refuse in (
        lambda: plan_node(LaunchArguments(params, namespace=namespace)),
        lambda: write_rviz_config(REPO / "config" / "perception.rviz", namespace),
    ):
        with pytest.raises(ValueError, match=message) as refused:
            refuse()
        assert "\n" not in str(refused.value)
    assert not (tmp_path / "tmp").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # the finding: 300 c's passed the camera-name check and made an rviz file of bad topics
        (
            {"cameras": "c" * 300},
            r"^cameras:=c{50}\.\.\. \(300 characters\): camera 'c{40}\.\.\.' \(300 characters\) "
            r"makes an invalid topic 'c{40}\.\.\./image': topic length should not exceed",
        ),
        # a name that fits at the root does not under a namespace: topics resolve in it
        (
            {"cameras": "front," + "b" * 200, "namespace": "n" * 30},
            r"^cameras:=front,b{44}\.\.\. \(206 characters\): camera 'b{40}\.\.\.' \(200 "
            r"characters\) makes an invalid topic '~/b{40}\.\.\./semantic'",
        ),
        (
            {"params": "/**: {ros__parameters: {cameras: [%s]}}" % ("c" * 230)},
            r"^params_file:=.*params\.yaml: parameter 'cameras': camera 'c{40}\.\.\.' \(230 "
            r"characters\) makes an invalid topic '~/c{40}\.\.\./semantic'",
        ),
        # a remapped input is resolved in the namespace too (and its /compressed)
        (
            {"cameras": "front", "camera_topics": "front:" + "r" * 220, "namespace": "n" * 20},
            r"^camera_topics:=front:r{44}\.\.\. \(226 characters\) makes the node read "
            r"'/n{20}/r{28}\.\.\. \(253 characters\)', not a topic name \(topic length",
        ),
        (
            {"camera_topic": "/" + "t" * 240},
            r"^camera_topic:=/t{49}\.\.\. \(241 characters\) makes the node read '/t{49}\.\.\. "
            r"\(252 characters\)', not a topic name",
        ),
    ],
)
def test_names_the_node_would_refuse_at_configure_stop_the_launch(tmp_path, arguments, message):
    arguments = dict(arguments)
    params = _params_file(tmp_path, arguments.pop("params", "/**: {ros__parameters: {}}") + "\n")
    with pytest.raises(ValueError, match=message) as refused:
        plan_node(LaunchArguments(params, **arguments))
    assert "\n" not in str(refused.value)


def test_the_rviz_config_refuses_a_camera_the_node_refuses(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(ValueError, match=r"^parameter 'cameras': camera 'c{40}\.\.\.' \(300 "):
        write_rviz_config(REPO / "config" / "perception.rviz", "", ("front", "c" * 300))
    assert list(tmp_path.iterdir()) == []


def test_the_launch_gives_the_node_its_namespace_as_rclpy_takes_it(tmp_path):
    """launch_ros refuses '/robot1/' (rclpy: "must not end with a '/'"): the plan's is absolute,
    without the trailing '/' the rviz config and the params file matching assume."""
    params = _params_file(tmp_path)
    for given, planned in (("", ""), ("/", ""), ("robot1", "/robot1"), ("/robot1/", "/robot1")):
        assert plan_node(LaunchArguments(params, namespace=given)).namespace == planned, given


def test_a_params_file_that_is_not_a_file_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"params_file:=.*nope\.yaml is not a file"):
        plan_node(LaunchArguments(str(tmp_path / "nope.yaml")))
    with pytest.raises(FileNotFoundError, match=r"params_file:=.* is not a file"):
        plan_node(LaunchArguments(str(tmp_path)))


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
    assert {"plan_node", "plan_overlay", "require_rviz2", "profile_environment"} <= calls


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


def test_the_launch_checks_import_no_torch():
    """The launch process lives as long as the node: its checks must not pull in torch (it
    took the launch process from 48 to 258 MiB when they did)."""
    probe = (
        "import sys, mtl_perception.ros.launch_support, mtl_perception.ros.rviz_config\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout[:300]


@pytest.fixture(scope="module")
def rclpy_context():
    """One rclpy context for the comparisons with rclpy's own names (nodes that talk to none)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.mark.ros
def test_the_longest_namespace_the_launch_takes_is_the_longest_a_lifecycle_node_takes(
    rclpy_context,
):
    """The launch's copy of the node's service names (NODE_SERVICES) against rclpy: the node
    (a LifecycleNode, which makes its services) is made in the longest namespace the launch
    accepts and refused in one character more."""
    from rclpy.lifecycle import LifecycleNode

    longest = max(n for n in range(1, 250) if _namespace_accepted("n" * n))
    assert not _namespace_accepted("n" * (longest + 1))
    made = LifecycleNode(NODE_NAME, namespace="/" + "n" * longest, context=rclpy_context)
    made.destroy_node()
    with pytest.raises(Exception, match="should not exceed"):
        LifecycleNode(NODE_NAME, namespace="/" + "n" * (longest + 1), context=rclpy_context)


def _namespace_accepted(namespace: str) -> bool:
    try:
        check_namespace(namespace)
    except ValueError:
        return False
    return True


@pytest.mark.ros
@pytest.mark.parametrize("namespace", ["", "/robot1", "/" + "n" * 30])
def test_the_launch_resolves_topics_as_the_node_does(rclpy_context, namespace):
    """node_topic_resolver against rclpy's resolve_topic_name for a node given the same
    remappings (as launch_ros passes them): the same name, or both refuse."""
    from rclpy.node import Node

    remappings = [
        ("front/image", "/cams/front/image_raw"),
        ("front/image/compressed", "/cams/front/image_raw/compressed"),
        ("rear/image", "rel/rear"),
        (f"{namespace}/side/image", "~/side_in"),
        ("image", "b" * 220),  # too long in the 30-character namespace only
    ]
    cli_args = ["--ros-args"] + [arg for rule in remappings for arg in ("-r", ":=".join(rule))]
    node = Node(
        NODE_NAME,
        namespace=namespace or None,
        context=rclpy_context,
        cli_args=cli_args,
        start_parameter_services=False,
        enable_rosout=False,
    )
    resolve = node_topic_resolver(namespace, remappings)
    topics = [
        "front/image",
        "front/image/compressed",
        "rear/image",
        "side/image",
        "image",
        "other/image",
        "~/front/overlay",
        "~/label_info",
        "c" * 200 + "/image",
        "~/" + "c" * 230 + "/semantic_color",
    ]
    resolved = {}
    try:
        for topic in topics:
            try:
                expected = node.resolve_topic_name(topic)
            except Exception:  # rclpy raises RCLError
                expected = None
            try:
                got = resolve(topic)
            except ValueError:
                got = None
            assert got == expected, (topic[:40], namespace[:10])
            resolved[topic] = got
    finally:
        node.destroy_node()
    # The comparison covers remapped, private and refused names.
    assert resolved["rear/image"] == f"{namespace}/rel/rear"
    assert resolved["side/image"] == f"{namespace}/perception_node/side_in"
    assert resolved["~/" + "c" * 230 + "/semantic_color"] is None
    assert (resolved["image"] is None) == (len(namespace) > 10)
