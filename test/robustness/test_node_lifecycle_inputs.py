"""The perception node's start-up under bad input (issue 22, sections 2, 4 and 8): names too long
for ROS 2's topics, parameter files that are missing, unreadable or shared with other nodes, and
bad ``stale_timeout_s`` values. Each is refused in one line naming what is wrong, with exit 2 and
no traceback; keys that a shared ``/**`` section holds for other nodes are named once at WARN and
the node runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import assert_refused, run_module

from mtl_perception.ros.node import EXIT_BAD_INPUT
from mtl_perception.ros.node_process import NODE_MODULE, start_node

pytestmark = [pytest.mark.bad_input, pytest.mark.ros]

NODE = "lifecycle_inputs"
NODE_PARAMS = {"input_width": 256, "input_height": 128}
EXIT_TIMEOUT = 90  # seconds a node is given to load and exit (2 loaded cores)
OTHER_NODES_KEYS = ("frame_id", "publish_rate", "qos_overrides./parameter_events.publisher.depth")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("node") / "model.pt", calibrated_small_model(config=SMALL_NAMED)
    )


def _run(tmp_path: Path, env: dict[str, str], **options) -> tuple[int, str]:
    """Starts the node (a plain run: it configures and activates itself) and waits for its exit:
    (exit code, what it printed)."""
    log = tmp_path / "node.log"
    with start_node(NODE, env=env, log=log, **options) as node:
        code = node.process.wait(timeout=EXIT_TIMEOUT)
    return code, log.read_text()


def _assert_configure_refused(code: int, text: str, reason: str) -> None:
    assert code == EXIT_BAD_INPUT, text[-3000:]
    errors = [line for line in text.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and f"configure failed: {reason}" in errors[0], text[-3000:]
    assert "Traceback" not in text, text[-3000:]


def _params_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text(text)
    return path


# -- names too long for ROS 2 ---------------------------------------------------------------------


def test_a_camera_name_too_long_for_its_output_topics_fails_configure(
    checkpoint, ros_env, tmp_path
):
    """A 220-character camera name passes the name check but makes ~/<name>/semantic_color
    longer than ROS 2's 247 characters: activate used to raise, unlogged, and the node ran on
    subscribed to nothing. Now configure refuses it, naming the camera and the topic."""
    long_name = "c" * 220
    params = {"checkpoint": checkpoint, **NODE_PARAMS, "cameras": ["front", long_name]}
    code, text = _run(tmp_path, ros_env, parameters=params)
    _assert_configure_refused(
        code, text, f"parameter 'cameras': camera '{'c' * 40}...' (220 characters) makes an invalid"
    )
    assert "topic length should not exceed" in text


def test_a_namespace_that_makes_a_camera_topic_too_long_fails_configure(
    checkpoint, ros_env, tmp_path
):
    """A 200-character camera name fits at the root; under a 30-character namespace its input
    topic still does (238 characters), its output topics do not: topics are checked as resolved,
    namespace included."""
    params = {"checkpoint": checkpoint, **NODE_PARAMS, "cameras": ["b" * 200]}
    code, text = _run(tmp_path, ros_env, namespace="/" + "n" * 30, parameters=params)
    _assert_configure_refused(code, text, "parameter 'cameras': camera 'bbbb")
    assert "(200 characters) makes an invalid topic '~/" in text


@pytest.mark.parametrize("option", ["namespace", "name"])
def test_a_node_name_or_namespace_too_long_for_its_services_is_one_line(option, ros_env):
    """rclpy raised InvalidServiceNameException from the constructor, with a traceback."""
    remap = "__ns:=/" if option == "namespace" else "__node:="
    outcome = run_module(NODE_MODULE, "--ros-args", "-r", remap + "n" * 240, env=ros_env)
    assert_refused(outcome, "invalid service name", "characters", "__ns:=")


@pytest.mark.parametrize(
    ("remap", "refusal"),
    [("__ns:=/", "invalid node namespace"), ("__node:=", "invalid node name")],
)
def test_a_node_name_or_namespace_too_long_for_the_middleware_is_one_line(remap, refusal, ros_env):
    """Over 255 characters rcl refuses to create the node at all: it was RCLError's traceback,
    a RuntimeWarning about the half-made node's rosout publisher, and exit 1."""
    outcome = run_module(NODE_MODULE, "--ros-args", "-r", remap + "n" * 300, env=ros_env)
    assert_refused(outcome, refusal, "should not exceed", "__node:=", "__ns:=")
    assert "Warning" not in outcome.stderr, outcome.stderr[-3000:]


# -- parameter files ------------------------------------------------------------------------------


def test_a_missing_params_file_is_one_line_naming_it(ros_env, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    outcome = run_module(NODE_MODULE, "--ros-args", "--params-file", missing, env=ros_env)
    assert_refused(outcome, "not found", str(missing), "--params-file")


def test_a_params_file_that_is_a_folder_is_one_line_naming_it(ros_env, tmp_path):
    outcome = run_module(NODE_MODULE, "--ros-args", "--params-file", tmp_path, env=ros_env)
    assert_refused(outcome, "is not a file", str(tmp_path), "--params-file")


def test_a_params_file_ros_cannot_parse_is_one_line_naming_it(ros_env, tmp_path):
    path = _params_file(tmp_path, "/**:\n  ros__parameters:\n    cameras: [front, 3]\n")
    outcome = run_module(NODE_MODULE, "--ros-args", "--params-file", path, env=ros_env)
    assert_refused(outcome, "Couldn't parse params file", str(path), "line_num 3")


@pytest.mark.parametrize("section", [f"/{NODE}", f"/**/{NODE}", NODE])
def test_an_unknown_key_in_a_section_naming_the_node_is_refused(
    section, checkpoint, ros_env, tmp_path
):
    path = _params_file(
        tmp_path,
        f"{section}:\n  ros__parameters:\n    checkpoint: {checkpoint}\n"
        "    input_width: 256\n    input_height: 128\n    scor_threshold: 0.3\n",
    )
    code, text = _run(tmp_path, ros_env, params_file=path)
    _assert_configure_refused(code, text, "unknown parameter 'scor_threshold'")


def test_an_unknown_key_in_both_the_shared_and_the_named_section_is_refused(
    checkpoint, ros_env, tmp_path
):
    path = _params_file(
        tmp_path,
        "/**:\n  ros__parameters:\n    frame_id: base_link\n"
        f"/{NODE}:\n  ros__parameters:\n    checkpoint: {checkpoint}\n"
        "    input_width: 256\n    input_height: 128\n    frame_id: camera\n",
    )
    code, text = _run(tmp_path, ros_env, params_file=path)
    _assert_configure_refused(code, text, "unknown parameter 'frame_id'")


def test_keys_of_other_nodes_under_the_shared_section_are_named_once_and_the_node_runs(
    checkpoint, ros_env, tmp_path
):
    """One file per robot: /** holds other nodes' keys and a typo of one of ours. The node
    starts, names every one of them in one WARN line, and stops cleanly; its own section is read
    as usual."""
    shared = "".join(f"    {key}: 1\n" for key in ("frame_id", "publish_rate", "scor_threshold"))
    path = _params_file(
        tmp_path,
        "/**:\n  ros__parameters:\n"
        + shared
        + "    qos_overrides:\n      /parameter_events:\n        publisher:\n          depth: 5\n"
        + f"/{NODE}:\n  ros__parameters:\n    checkpoint: {checkpoint}\n"
        "    input_width: 256\n    input_height: 128\n",
    )
    log = tmp_path / "node.log"
    with start_node(NODE, params_file=path, env=ros_env, log=log) as node:
        while "active: listening on" not in log.read_text() and node.process.poll() is None:
            time.sleep(0.1)  # until it is active, or exits (pytest's timeout bounds this)
        assert node.process.poll() is None, log.read_text()[-3000:]
        code = node.stop()
    text = log.read_text()
    assert code == 0, text[-3000:]
    warnings = [line for line in text.splitlines() if "ignoring" in line]
    assert len(warnings) == 1 and "[WARN]" in warnings[0], text[-3000:]
    names = (*OTHER_NODES_KEYS, "scor_threshold")
    assert all(name in warnings[0] for name in names), warnings[0]
    assert "[ERROR]" not in text and "Traceback" not in text, text[-3000:]


# -- stale_timeout_s ------------------------------------------------------------------------------


def test_a_stale_timeout_of_zero_fails_configure_naming_it(checkpoint, ros_env, tmp_path):
    params = {"checkpoint": checkpoint, **NODE_PARAMS, "stale_timeout_s": 0.0}
    code, text = _run(tmp_path, ros_env, parameters=params)
    _assert_configure_refused(code, text, "parameter 'stale_timeout_s' must be more than 0")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1.0, "out of range"),
        (".inf", "out of range"),  # YAML's infinity
        (".nan", "out of range"),
        ("soon", "expecting type 'DOUBLE'"),
    ],
)
def test_a_stale_timeout_out_of_range_or_not_a_number_is_refused_naming_it(
    value, problem, checkpoint, ros_env, tmp_path
):
    params = {"checkpoint": checkpoint, **NODE_PARAMS, "stale_timeout_s": value}
    code, text = _run(tmp_path, ros_env, parameters=params)
    assert code == EXIT_BAD_INPUT, text[-3000:]
    assert "invalid parameter" in text and "stale_timeout_s" in text and problem in text, text
    assert "Traceback" not in text, text[-3000:]


# -- model paths that are no model file -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink_loop"])
def test_a_checkpoint_path_that_is_no_regular_file_is_named_for_what_it_is(kind, ros_env, tmp_path):
    """The path exists, so "checkpoint not found" (what configure said) was wrong; a FIFO must
    not be opened (configure would block until a writer came)."""
    if kind == "fifo":
        path = tmp_path / "model.pt"
        os.mkfifo(path)
        reason = f"checkpoint {path} is not a regular file: it is a FIFO (named pipe)"
    elif kind == "device":
        path = Path("/dev/zero")
        reason = f"checkpoint {path} is not a regular file: it is a character device"
    else:
        path = tmp_path / "model.pt"
        path.symlink_to(path)
        reason = f"checkpoint {path} is a symlink loop"
    params = {"checkpoint": path, **NODE_PARAMS}
    code, text = _run(tmp_path, ros_env, parameters=params)
    _assert_configure_refused(code, text, reason)


def test_a_torch_checkpoint_given_as_onnx_model_is_named_a_checkpoint(
    checkpoint, ros_env, tmp_path
):
    """onnx's bare "(DecodeError)" did not say what the file was nor where it goes."""
    params = {**NODE_PARAMS, "backend": "onnxruntime", "onnx_model": checkpoint}
    code, text = _run(tmp_path, ros_env, parameters=params)
    reason = f"{checkpoint} is not an ONNX model: it is a torch checkpoint (give it to the node"
    _assert_configure_refused(code, text, reason)
    assert "checkpoint:=FILE" in text, text[-3000:]
