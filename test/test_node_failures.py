"""perception_node never fails silently (issue 22, section 2), over real rclpy/DDS:

* a transition that raises is logged with its reason and a plain run exits 3, whether it is the
  autostart's own activate or a later one asked for over the lifecycle services (rclpy swallows
  the exception and falls back to unconfigured: the node used to log nothing, stay up and exit 0);
* a camera that sends nothing goes WARN in /diagnostics with how long it has been silent;
* frames the middleware delivered but the executor had not yet taken when the node deactivates
  are counted (received = processed + dropped + rejected, per camera).

The activation failure is a real one: a checkpoint whose class name is not valid UTF-8 text
(a lone surrogate, as ``surrogateescape`` decoding of a label file leaves) loads and passes
configure, and fails when activate publishes the class map.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import rclpy
from conftest import ros_environment
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers.models import SEG_NAMES, SMALL_NAMED, calibrated_small_model, save_model
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.duration import Duration
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_client import RELIABLE, RosClient
from sensor_msgs.msg import Image

from mtl_perception.ros.node import EXIT_UNEXPECTED, PerceptionNode
from mtl_perception.ros.node_process import start_node
from mtl_perception.ros.parameter_files import override_sources, pattern_matches

NODE_PARAMS = {"input_width": 256, "input_height": 128}
SLOW_LOAD_NODE = Path(__file__).resolve().parent / "helpers" / "slow_load_node.py"
EXIT_TIMEOUT = 90  # seconds a node is given to load and exit (2 loaded cores)
_names = itertools.count()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(
        tmp_path_factory.mktemp("node") / "model.pt", calibrated_small_model(config=SMALL_NAMED)
    )


@pytest.fixture(scope="module")
def unpublishable_checkpoint(tmp_path_factory) -> Path:
    """Loads and configures; its class map cannot be serialised, so activate raises."""
    names = (*SEG_NAMES[:-1], "Rider\udc80")  # a byte 0x80 decoded with surrogateescape
    config = dataclasses.replace(SMALL_NAMED, seg_class_names=names)
    path = tmp_path_factory.mktemp("node") / "surrogate.pt"
    return save_model(path, calibrated_small_model(config=config))


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return ros_environment()


@pytest.fixture(scope="module")
def client(env):
    ros = RosClient(int(env["ROS_DOMAIN_ID"]), name="failures_client")
    ros.subscribe("/diagnostics", DiagnosticArray, RELIABLE)
    yield ros
    ros.close()


def _image(sec: int) -> Image:
    image = Image(height=32, width=64, encoding="rgb8", step=64 * 3, data=bytes(64 * 3 * 32))
    image.header.stamp.sec = sec
    return image


def _change(client: RosClient, node: str, transition: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    return client.call(ChangeState, f"/{node}/change_state", request, timeout=60).success


def _state(client: RosClient, node: str) -> str:
    return client.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.label


def _assert_reason_logged(text: str, line: str) -> None:
    assert line in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


# -- a transition that raises ---------------------------------------------------------------------


@pytest.mark.ros
@pytest.mark.slow
def test_an_activation_that_raises_is_logged_and_a_plain_run_exits_3(
    unpublishable_checkpoint, env, tmp_path
):
    log = tmp_path / "node.log"
    params = {"checkpoint": unpublishable_checkpoint, **NODE_PARAMS}
    with start_node("failing_activate", parameters=params, env=env, log=log) as node:
        code = node.process.wait(timeout=EXIT_TIMEOUT)
    text = log.read_text()
    assert code == EXIT_UNEXPECTED, text
    _assert_reason_logged(text, "activate failed: UnicodeEncodeError: ")
    assert "surrogates not allowed" in text and "could not activate; exiting" in text


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stop_while_the_model_loads_is_a_normal_stop(signal_name, checkpoint, env, tmp_path):
    """SIGTERM (a process manager) or SIGINT while configure loads the model: exit 0, and none
    of the node's failure lines (SIGTERM ended the run with exit 3 and "could not configure").
    rclpy itself still logs that it could not complete the transition of a shut-down context."""
    gate, log = tmp_path / "gate", tmp_path / "node.log"
    gate.mkdir()
    params = {"checkpoint": checkpoint, **NODE_PARAMS}
    command = [sys.executable, str(SLOW_LOAD_NODE), str(gate)]
    with start_node("slow_load", parameters=params, env=env, log=log, command=command) as node:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while not (gate / "loading").exists():  # configure is loading the model, for certain
            assert time.monotonic() < deadline and node.process.poll() is None, log.read_text()
            time.sleep(0.02)
        node.process.send_signal(getattr(signal, signal_name))
        code = node.process.wait(timeout=EXIT_TIMEOUT)
    text = log.read_text()
    assert code == 0, text
    assert "FATAL" not in text and "could not" not in text and "Traceback" not in text, text


@pytest.mark.ros
@pytest.mark.slow
def test_a_transition_that_raises_while_running_ends_a_plain_run_with_exit_3(
    checkpoint, unpublishable_checkpoint, env, client, tmp_path
):
    """The autostarted node is taken down to unconfigured over its services, given the other
    checkpoint and configured again; the activate asked for then raises: the caller is told it
    failed, the node logs why, releases what it had set up and the plain run ends with 3."""
    name = f"running_node_{next(_names)}"
    log = tmp_path / "node.log"
    params = {"checkpoint": checkpoint, **NODE_PARAMS}
    with start_node(name, parameters=params, env=env, log=log) as node:
        assert client.wait_for(
            lambda: f"/{name}/semantic" in dict(client.node.get_topic_names_and_types()),
            timeout=EXIT_TIMEOUT,
        ), log.read_text()
        assert _change(client, name, Transition.TRANSITION_DEACTIVATE)
        assert _change(client, name, Transition.TRANSITION_CLEANUP)
        value = ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=str(unpublishable_checkpoint)
        )
        request = SetParameters.Request(parameters=[ParameterMsg(name="checkpoint", value=value)])
        (result,) = client.call(SetParameters, f"/{name}/set_parameters", request).results
        assert result.successful, result.reason
        assert _change(client, name, Transition.TRANSITION_CONFIGURE)
        assert not _change(client, name, Transition.TRANSITION_ACTIVATE)
        code = node.process.wait(timeout=EXIT_TIMEOUT)
    text = log.read_text()
    assert code == EXIT_UNEXPECTED, text
    _assert_reason_logged(text, "activate failed: UnicodeEncodeError: ")
    assert "a transition failed; exiting" in text


# -- a camera that sends nothing ------------------------------------------------------------------


def _statuses(client: RosClient, node: str) -> dict[str, DiagnosticStatus]:
    """The newest /diagnostics of ``node``, by status name."""
    for msg in reversed(client.messages("/diagnostics")):
        if msg.status and msg.status[0].name.startswith(f"{node}:"):
            return {status.name: status for status in msg.status}
    return {}


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.mark.ros
@pytest.mark.slow
def test_a_camera_that_sends_nothing_goes_warn_with_how_long_it_has_been_silent(
    checkpoint, env, client, tmp_path
):
    """Two cameras, one of which never sends: its status says WARN and for how long it has
    been silent (more than stale_timeout_s), the node's status names it, while the camera that
    sends stays OK; once that one falls silent too, it goes WARN as well."""
    name = f"stale_node_{next(_names)}"
    log = tmp_path / "node.log"
    stale_timeout = 1.5
    params = {
        "checkpoint": checkpoint,
        **NODE_PARAMS,
        "cameras": ["front", "rear"],
        "diagnostics_period": 0.2,
        "stale_timeout_s": stale_timeout,
    }
    front = client.publisher("/front/image", Image, RELIABLE)
    with start_node(name, parameters=params, env=env, log=log) as node:
        stamps = itertools.count()

        def rear_warn_while_front_sends() -> dict[str, DiagnosticStatus] | None:
            assert node.process.poll() is None, log.read_text()
            front.publish(_image(next(stamps)))
            statuses = _statuses(client, name)
            rear = statuses.get(f"{name}: camera rear")
            current = statuses.get(f"{name}: camera front")
            if rear is None or current is None or rear.level != DiagnosticStatus.WARN:
                return None
            received = int(_values(current)["received"])
            return statuses if received and current.level == DiagnosticStatus.OK else None

        statuses = client.wait_for(rear_warn_while_front_sends, timeout=EXIT_TIMEOUT)
        assert statuses, (_statuses(client, name), log.read_text()[-3000:])
        rear = statuses[f"{name}: camera rear"]
        silent = float(_values(rear)["seconds_since_last_frame"])
        assert silent >= stale_timeout, _values(rear)  # rounded to 1 ms: never below it
        shown = re.fullmatch(r"no frame on /rear/image for (\d+\.\d) s", rear.message)
        assert shown, rear.message  # the message rounds to 0.1 s, the value to 1 ms
        assert float(shown.group(1)) == pytest.approx(silent, abs=0.0501), rear.message
        assert int(_values(rear)["received"]) == 0
        overall = statuses[f"{name}: perception"]
        assert overall.level == DiagnosticStatus.WARN and "/rear/image" in overall.message
        assert "/front/image" not in overall.message, overall.message

        def front_warn() -> bool:
            status = _statuses(client, name).get(f"{name}: camera front")
            return status is not None and status.level == DiagnosticStatus.WARN

        assert client.wait_for(front_warn, timeout=30), _statuses(client, name)
        front_status = _statuses(client, name)[f"{name}: camera front"]
        assert front_status.message.startswith("no frame on /front/image for ")
        assert float(_values(front_status)["seconds_since_last_frame"]) >= stale_timeout
        assert node.stop() == 0, log.read_text()[-3000:]


# -- frames in the reader queue at deactivate ------------------------------------------------------


DEPTH, BURST = 50, 100


@pytest.fixture
def deep_queue_node(ros_env, checkpoint):
    """An active two-camera PerceptionNode in this process, subscribed reliable with depth
    DEPTH, its executor never spun (its inference thread takes the frames)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    params = {
        "checkpoint": str(checkpoint),
        **NODE_PARAMS,
        "cameras": ["left", "right"],
        "qos_reliability": "reliable",
        "qos_depth": DEPTH,
    }
    overrides = [Parameter(key, value=value) for key, value in params.items()]
    node = PerceptionNode("deep_queue", context=context, parameter_overrides=overrides)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    yield node
    node._release_io()
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def _publishers(sender: RosClient) -> list:
    """The test's reliable publishers to both cameras of ``deep_queue_node``, once matched."""
    qos = QoSProfile(depth=BURST, reliability=ReliabilityPolicy.RELIABLE)
    publishers = [sender.publisher(f"/{cam}/image", Image, qos) for cam in ("left", "right")]
    assert sender.wait_for(
        lambda: all(p.get_subscription_count() == 1 for p in publishers), timeout=30
    )
    return publishers


def _deactivate_with_a_full_reader_queue(
    ros_env: dict[str, str], node: PerceptionNode, frame: Callable[[int], Image]
) -> None:
    """Holds the node's model on one frame of camera left (so that its inference thread takes
    nothing more), publishes ``frame(0) ... frame(BURST - 1)`` to both cameras, waits until its
    reliable readers have acknowledged every one (they keep the newest DEPTH), deactivates, and
    lets the model go once deactivate has closed the node's frame slots."""
    entered, release = threading.Event(), threading.Event()
    submit = node.predictor.submit

    def held(images, **options):
        entered.set()
        assert release.wait(60)
        return submit(images, **options)

    node.predictor.submit = held
    sender = RosClient(int(ros_env["ROS_DOMAIN_ID"]), name="burst_sender")
    try:
        left, right = _publishers(sender)
        left.publish(_image(10_000))
        assert entered.wait(30)  # the model holds frame 10000 of camera left
        for sec in range(BURST):
            for publisher in (left, right):
                publisher.publish(frame(sec))
        for publisher in (left, right):
            assert publisher.wait_for_all_acked(Duration(seconds=30))
    finally:
        sender.close()
    deactivate = threading.Thread(target=node.trigger_deactivate)
    deactivate.start()
    assert sender.wait_for(lambda: node._slots.closed, timeout=30)
    release.set()
    deactivate.join(60)
    assert not deactivate.is_alive()


@pytest.mark.ros
@pytest.mark.slow
def test_frames_in_the_reader_queue_at_deactivate_are_counted_as_dropped(ros_env, deep_queue_node):
    """A burst of BURST frames per camera while the model holds one frame, every one
    acknowledged by the node's reliable readers (which keep the newest DEPTH), then deactivate:
    the frame in the model is finished and published; the DEPTH frames of each camera that sat in
    its reader queue are counted received and dropped, not discarded. On camera left, whose
    publisher's frame 10000 was taken before, so are the BURST - DEPTH older ones the reader
    replaced (from the publisher's sequence numbers); on camera right nothing of that publisher
    was taken before, so nothing can tell its earlier frames from frames sent before the node
    subscribed, and they are not counted (frame_intake.py)."""
    _deactivate_with_a_full_reader_queue(ros_env, deep_queue_node, _image)
    for camera in deep_queue_node._cameras:
        counters = camera.counters
        held = camera.name == "left"  # frame 10000, finished after deactivate began
        sent = BURST if held else DEPTH  # as counted (docstring)
        assert counters.received == sent + held, (camera.name, counters)
        assert (counters.processed, counters.dropped, counters.rejected) == (held, sent, 0)
    totals = deep_queue_node.counters
    total = BURST + DEPTH + 1
    assert totals.received == totals.processed + totals.dropped + totals.rejected == total


@pytest.mark.ros
@pytest.mark.slow
def test_malformed_frames_in_the_reader_queue_at_deactivate_are_rejected_not_dropped(
    ros_env, deep_queue_node
):
    """Every other frame of the burst has 100 bytes of data instead of step x height: of the
    DEPTH frames left in each reader queue at deactivate, those are rejected with their reason
    (data_length), as they would have been when taken, and only the valid ones are dropped (with
    the BURST - DEPTH older ones the reader replaced, never read). They used to be taken raw and
    all counted as dropped."""

    def every_other_malformed(sec: int) -> Image:
        image = _image(sec)
        if sec % 2:
            image.data = bytes(100)
        return image

    _deactivate_with_a_full_reader_queue(ros_env, deep_queue_node, every_other_malformed)
    for camera in deep_queue_node._cameras:
        counters = camera.counters
        held = camera.name == "left"
        sent = BURST if held else DEPTH  # as counted (see the test above)
        assert counters.received == sent + held, (camera.name, counters)
        half = DEPTH // 2
        dropped = sent - DEPTH + half  # the replaced ones (left only) and the valid ones
        assert (counters.processed, counters.dropped, counters.rejected) == (held, dropped, half)
        assert counters.rejected_by_reason == {"data_length": half}, (camera.name, counters)
    totals = deep_queue_node.counters
    total = BURST + DEPTH + 1
    assert totals.received == totals.processed + totals.dropped + totals.rejected == total


@pytest.mark.ros
@pytest.mark.slow
def test_a_transition_that_raises_in_process_is_recorded_and_leaves_nothing_set_up(
    deep_queue_node,
):
    """An exception in deactivate (here the middleware refusing to destroy a publisher): the
    transition returns ERROR instead of vanishing, the reason is recorded for main() in one
    line, and on_error leaves the node unconfigured with its model unloaded."""

    destroy, calls = deep_queue_node.destroy_publisher, []

    def refuse_once(publisher) -> bool:
        calls.append(publisher)
        if len(calls) == 1:
            raise RuntimeError("injected: the middleware refused")
        return destroy(publisher)

    deep_queue_node.destroy_publisher = refuse_once
    assert deep_queue_node.trigger_deactivate() == TransitionCallbackReturn.ERROR
    assert deep_queue_node.transition_error.done()
    line = deep_queue_node.transition_error.result()
    assert line == "deactivate failed: RuntimeError: injected: the middleware refused"
    assert deep_queue_node._state_machine.current_state[1] == "unconfigured"
    assert deep_queue_node.predictor is None and deep_queue_node.params is None
    assert all(camera.subscription is None for camera in deep_queue_node._cameras)
    assert not any(camera.outputs for camera in deep_queue_node._cameras)


# -- which keys a parameter file addresses to the node by name (units, no ROS) --------------------


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("/**", "/ns/node", True),
        ("/**/node", "/node", True),
        ("/**/node", "/a/b/node", True),
        ("/*/node", "/node", False),
        ("/ns/*", "/ns/node", True),
        ("/ns/*", "/other/node", False),
        ("/ns/node", "/ns/node", True),
        ("node", "/ns/node", False),
    ],
)
def test_a_section_applies_as_rcl_matches_its_wildcards(pattern, name, matches):
    tokens = [token for token in pattern.split("/") if token]
    assert pattern_matches(tokens, [t for t in name.split("/") if t]) is matches


def test_keys_only_in_wildcard_sections_are_shared_and_the_rest_named(tmp_path):
    robot = tmp_path / "robot.yaml"
    robot.write_text(
        "/**:\n  ros__parameters:\n    frame_id: base\n    both: 1\n"
        "    qos_overrides:\n      /parameter_events:\n        publisher:\n          depth: 5\n"
        "/ns/*:\n  ros__parameters:\n    publish_rate: 10.0\n"
        "ns:\n  node:\n    ros__parameters:\n      both: 2\n      score_threshold: 0.3\n"
        "/other_node:\n  ros__parameters:\n    elsewhere: 1\n"
    )
    arguments = ["node", "--ros-args", "-p", "given:=1", "--params-file", str(robot)]
    sources = override_sources(arguments, "/ns/node")
    assert sources.named == {"given", "both", "score_threshold"}
    assert sources.shared == {
        "frame_id",
        "publish_rate",
        "qos_overrides./parameter_events.publisher.depth",
    }
    # outside --ros-args, rcl reads neither flag
    assert override_sources(["node", "--params-file", str(robot)], "/ns/node").shared == set()


@pytest.mark.parametrize(
    ("module", "config"),
    [
        ("mtl_perception.ros.node", "NodeParameters"),
        ("mtl_perception.ros.overlay_node", "OverlayParameters"),
    ],
)
def test_help_lists_every_parameter_and_a_stray_ros_argument_is_one_line(module, config, env):
    """``--help`` printed "configure failed: parameter 'checkpoint' is empty" (perception node)
    or started the node (overlay node); ``--ros-args ... --help`` ended in a traceback."""
    import importlib
    import subprocess
    from dataclasses import fields

    names = [spec.name for spec in fields(getattr(importlib.import_module(module), config))]
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and shown.stdout.startswith("usage: "), shown
    listed = [line.split()[0] for line in shown.stdout.splitlines() if line.startswith("  ")]
    assert listed == names
    stray = subprocess.run(
        [sys.executable, "-m", module, "--ros-args", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )
    assert stray.returncode == 2, stray
    assert stray.stderr.strip().splitlines() == [
        "error: unknown ROS argument(s) ['--help'] (node options go before --ros-args)"
    ], stray.stderr
