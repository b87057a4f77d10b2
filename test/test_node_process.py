"""mtl_perception.ros.node_process: what a started node is given and how it is stopped.

The parameters are read back by a real rclpy node (their types included); the stop semantics
are checked on small Python programs that do exactly one thing with SIGINT.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ros_environment

from mtl_perception.ros.node_process import NodeProcess, start_node, stop_nodes

# A node that declares whatever it is given and prints its name, its "image" topic as remapped,
# and each parameter's type and value, then exits.
PROBE = """
import json, sys
import rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv)
node = Node("unnamed", automatically_declare_parameters_from_overrides=True)
params = node.get_parameters_by_prefix("")
print(json.dumps({
    "name": node.get_fully_qualified_name(),
    "image": node.resolve_topic_name("image"),
    "params": {
        k: [p.type_.name, list(p.value) if "ARRAY" in p.type_.name else p.value]
        for k, p in params.items()
    },
}))
node.destroy_node()
rclpy.shutdown()
"""

IGNORES_SIGINT = (
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(3600)"
)
EXITS_ON_SIGINT = (
    "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(0)); "
    "print('ready', flush=True); time.sleep(3600)"
)


def _wait_ready(node: NodeProcess) -> None:
    """Until the program has printed 'ready' (its SIGINT handling is set up)."""
    deadline = time.monotonic() + 60
    while "ready" not in node.log.read_text():
        assert node.process.poll() is None, node.log.read_text()
        assert time.monotonic() < deadline, "the program never got ready"
        time.sleep(0.05)


@pytest.mark.ros
def test_a_node_reads_back_name_remaps_and_typed_parameters_in_order(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "/**:\n  ros__parameters:\n    file_wins: 2\n    override_wins: file\n    from_file: 7\n"
    )
    log = tmp_path / "probe.log"
    node = start_node(
        "probe_node",
        namespace="/robot",
        remaps={"image": "/camera/image_raw"},
        parameters={
            "flag": True,
            "off": False,
            "ratio": 1.0,
            "small": 1e-05,
            "count": 3,
            "label": "x",
            "path": Path("/a/b"),
            "names": ["front", "rear"],
            "checks": [True, False],
            "weights": [1.0, 2.5],
            "file_wins": 1,
            "override_wins": "before",
        },
        params_file=params_file,
        overrides={"override_wins": "after"},
        command=[sys.executable, "-c", PROBE],
        env=ros_environment(),
        log=log,
    )
    assert node.process.wait(timeout=120) == 0, log.read_text()
    assert node.stop() == 0 and node.stream.closed
    reported = json.loads(log.read_text().strip().splitlines()[-1])
    assert reported["name"] == "/robot/probe_node"
    assert reported["image"] == "/camera/image_raw"
    rclpy_own = {"use_sim_time", "start_type_description_service"}  # declared by rclpy itself
    assert {k: v for k, v in reported["params"].items() if k not in rclpy_own} == {
        "flag": ["BOOL", True],
        "off": ["BOOL", False],
        "ratio": ["DOUBLE", 1.0],
        "small": ["DOUBLE", 1e-05],
        "count": ["INTEGER", 3],
        "label": ["STRING", "x"],
        "path": ["STRING", "/a/b"],
        "names": ["STRING_ARRAY", ["front", "rear"]],
        "checks": ["BOOL_ARRAY", [True, False]],
        "weights": ["DOUBLE_ARRAY", [1.0, 2.5]],
        "file_wins": ["INTEGER", 2],  # the file wins over `parameters`...
        "override_wins": ["STRING", "after"],  # ...and `overrides` over the file
        "from_file": ["INTEGER", 7],
    }


def test_stop_interrupts_and_returns_the_exit_code(tmp_path):
    node = start_node(command=[sys.executable, "-c", EXITS_ON_SIGINT], log=tmp_path / "a.log")
    _wait_ready(node)
    assert node.failure() is None
    assert node.stop() == 0
    assert node.stream.closed


def test_stop_kills_a_node_that_ignores_sigint(tmp_path):
    node = start_node(command=[sys.executable, "-c", IGNORES_SIGINT], log=tmp_path / "a.log")
    _wait_ready(node)
    assert node.stop(timeout=0.5) == -signal.SIGKILL
    assert node.stream.closed


def test_stop_nodes_interrupts_all_and_returns_each_code(tmp_path):
    nodes = [
        start_node(command=[sys.executable, "-c", code], log=tmp_path / f"{i}.log")
        for i, code in enumerate([EXITS_ON_SIGINT, IGNORES_SIGINT])
    ]
    for node in nodes:
        _wait_ready(node)
    assert stop_nodes(nodes, timeout=0.5) == [0, -signal.SIGKILL]


def test_the_context_stops_the_node_on_an_error(tmp_path):
    with (
        pytest.raises(RuntimeError),
        start_node(command=[sys.executable, "-c", EXITS_ON_SIGINT], log=tmp_path / "a.log") as node,
    ):
        _wait_ready(node)
        raise RuntimeError("the test's own failure")
    assert node.process.returncode == 0 and node.stream.closed


def test_failure_names_the_exit_code_and_the_telling_log_line(tmp_path):
    lines = [
        "[INFO] [node]: starting",
        "[ERROR] [node]: configure failed: parameter 'precision' must be one of (...)",
        "[ERROR] [node]: shutting down after the failure",
    ]
    code = f"print({chr(10).join(lines)!r}); raise SystemExit(1)"
    node = start_node(command=[sys.executable, "-c", code], log=tmp_path / "a.log")
    node.process.wait(timeout=60)
    assert node.failure() == f"the node exited with code 1: {lines[1]}"
    assert node.stop() == 1


def test_failure_without_error_lines_names_the_last_line_or_no_output(tmp_path):
    code = "print('one'); print('last words'); raise SystemExit(3)"
    node = start_node(command=[sys.executable, "-c", code], log=tmp_path / "a.log")
    node.process.wait(timeout=60)
    assert node.failure() == "the node exited with code 3: last words"
    silent = start_node(command=[sys.executable, "-c", "exit(4)"], log=tmp_path / "b.log")
    silent.process.wait(timeout=60)
    assert silent.failure() == "the node exited with code 4: (no output)"
    unlogged = start_node(command=[sys.executable, "-c", "exit(5)"])
    unlogged.process.wait(timeout=60)
    assert unlogged.failure() == "the node exited with code 5"


@pytest.mark.ros
def test_the_default_program_is_the_perception_node_of_this_interpreter(tmp_path):
    log = tmp_path / "node.log"
    node = start_node("bad_node", parameters={"checkpoint": "/nowhere.pt"}, log=log)
    assert node.process.args[:3] == [sys.executable, "-m", "mtl_perception.ros.node"]
    assert node.process.wait(timeout=120) != 0
    assert "checkpoint not found: /nowhere.pt" in node.failure()
    node.stop()
