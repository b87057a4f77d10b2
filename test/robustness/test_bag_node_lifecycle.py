"""The node process of ``mtl-bag run`` / ``evaluate`` when the tool cannot finish (issue 22
follow-up): SIGKILLed, and on a full disk.

A SIGKILLed tool left its node running, re-parented to PID 1, its ``.ev.XXXXXXXX.partial/node.log``
open, and the next run removed that folder under it. Now the node is sent SIGTERM by the kernel
when the tool dies (mtl_perception/ros/node_process.py) and shares the flock that owns the folder,
so the folder is removed only once no process holds it. A full disk left ``<out>.failed-node.log``
beside an output the error said nothing was kept of; now nothing is left.

The fast cases use a stand-in node (a Python process started the same way) inside a stand-in tool;
the others a real ``mtl-bag`` and a real node.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import ros_environment
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import Snapshot, assert_refused, invoke
from helpers.small_disk import entries, small_disk

from mtl_perception.data.synthetic import write_dataset
from mtl_perception.outputs import remove_stale_partials
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.record import record_dataset
from mtl_perception.ros.node_process import start_node

pytestmark = pytest.mark.bad_input

PAUSE = Path(__file__).resolve().parent.parent / "helpers" / "pause_mid_write.py"
PAUSED_AT = "mtl_perception.ros.bags.replay:serialize_message"  # the node's first message recorded
EXIT_TIMEOUT = 60.0  # s: bound on a process's exit that is due (a loaded machine's node shutdown)

# A stand-in node: waits until killed.
WAITS = "import signal\nwhile True:\n    signal.pause()\n"
# The same, SIGTERM blocked before it says it is ready (the signal then stays pending: /proc).
BLOCKS_SIGTERM = (
    "import signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    signal.pause()\n"
)
# A stand-in tool: an output folder made as mtl-bag makes it, a node logging into it (argv[2]:
# "blocked" starts it with SIGTERM blocked, so that it outlives its tool), the node's pid printed,
# then waiting to be killed.
TOOL = (
    "import signal, sys\n"
    "from pathlib import Path\n"
    "from mtl_perception.outputs import atomic_directory\n"
    "from mtl_perception.ros.node_process import start_node\n"
    "if sys.argv[2] == 'blocked':\n"
    "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the node inherits it\n"
    f"code = {WAITS!r}\n"
    "with atomic_directory(Path(sys.argv[1])) as work:\n"
    "    node = start_node(command=[sys.executable, '-c', code], log=work / 'node.log')\n"
    "    print(node.pid, flush=True)\n"
    "    while True:\n"
    "        signal.pause()\n"
)


def _wait_gone(pid: int, timeout: float = EXIT_TIMEOUT) -> bool:
    """Whether process ``pid`` (not necessarily a child) has exited within ``timeout`` s: waits
    on its pidfd, which becomes readable when it exits."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], timeout)[0])
    finally:
        os.close(handle)


def _wait_for(condition, timeout: float = EXIT_TIMEOUT) -> bool:
    """Whether ``condition()`` holds within ``timeout`` s, re-checked every 10 ms (for what no
    descriptor announces: a log line, a thread's exit)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _sigterm_pending(pid: int) -> bool:
    """Whether SIGTERM waits, blocked, in process ``pid`` (/proc: process-wide or its main
    thread's pending signals)."""
    fields = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    pending = int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)
    return bool(pending & (1 << (signal.SIGTERM - 1)))


def _start_tool(out: Path, sigterm: str) -> tuple[subprocess.Popen, int]:
    """The stand-in tool, with its node started; returns it and the node's pid."""
    tool = subprocess.Popen(
        [sys.executable, "-c", TOOL, str(out), sigterm],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = tool.stdout.readline()
    if not line.strip().isdigit():
        tool.kill()
        pytest.fail(f"the stand-in tool did not start its node: {line}{tool.communicate()[1]}")
    return tool, int(line)


def _kill(tool: subprocess.Popen) -> None:
    tool.kill()
    tool.communicate(timeout=EXIT_TIMEOUT)
    assert tool.returncode == -signal.SIGKILL


def _partials(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


# -- a stand-in node ----------------------------------------------------------------------------


def test_a_node_dies_with_the_tool_that_started_it(tmp_path):
    """SIGKILL of the tool: its node gets SIGTERM (here its default: death) from the kernel."""
    tool, node = _start_tool(tmp_path / "run", "unblocked")
    try:
        _kill(tool)
        assert _wait_gone(node), "the node outlived the tool that started it"
    finally:
        if not _wait_gone(node, 0):
            os.kill(node, signal.SIGKILL)


def test_the_output_folder_is_not_removed_while_the_tools_node_still_runs(tmp_path):
    """The node shares the flock that owns the tool's ``.partial`` folder: the next run's
    clean-up leaves the folder alone while the node lives (here it outlives the SIGTERM it was
    sent), and removes it once the node is gone."""
    out = tmp_path / "ev"
    tool, node = _start_tool(out, "blocked")
    try:
        _kill(tool)
        assert _sigterm_pending(node), "the node was not told that its tool died"
        partials = _partials(out)
        assert len(partials) == 1 and (partials[0] / "node.log").is_file()
        assert remove_stale_partials(out) == []
        assert partials[0].is_dir()
    finally:
        os.kill(node, signal.SIGKILL)
    assert _wait_gone(node)
    assert remove_stale_partials(out) == partials
    assert not partials[0].exists()


def test_a_node_started_from_a_short_lived_thread_outlives_the_thread(tmp_path):
    """The parent-death signal comes when the THREAD that forked the node ends: a node started
    from a thread other than the main one is forked by one that lives as long as the process."""
    log = tmp_path / "node.log"
    started = []

    def start() -> None:  # returns once the node blocks SIGTERM (a signal then stays pending)
        started.append(start_node(command=[sys.executable, "-c", BLOCKS_SIGTERM], log=log))
        assert _wait_for(lambda: "ready" in log.read_text())

    thread = threading.Thread(target=start)
    thread.start()
    native_id = thread.native_id
    thread.join()
    (node,) = started
    try:
        assert "ready" in log.read_text()
        # the join returns a moment before the thread itself is gone (and signals, if it does)
        assert _wait_for(lambda: not Path(f"/proc/self/task/{native_id}").exists())
        assert node.process.poll() is None and not _sigterm_pending(node.pid)
    finally:
        node.process.kill()
        node.stop()


# -- a real mtl-bag and node --------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A 2-frame ground-truth bag (val split, 128x64) and a small checkpoint."""
    root = tmp_path_factory.mktemp("bag_node")
    write_dataset(root / "data", {"val": 2}, seed=3, width=128, height=64, progress=False)
    record_dataset(root / "data", "val", root / "bag", progress=False)
    save_model(root / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    return root


@pytest.fixture
def ros_process_env(monkeypatch) -> dict[str, str]:
    """This process's environment with a ROS domain of its own (a tool run here or as a child)."""
    env = ros_environment()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _tool_args(command: str, inputs: Path, out: Path) -> list[str]:
    bag, checkpoint = inputs / "bag", inputs / "model.pt"
    return [
        command,
        "--bag",
        bag,
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        "--as-fast-as-possible",
    ]


@pytest.mark.ros
@pytest.mark.parametrize("command", ["evaluate", "run"])
def test_a_sigkilled_bag_tool_takes_its_node_with_it_and_the_rerun_cleans_up(
    inputs, tmp_path, ros_process_env, command
):
    """The node had stayed alive (PID 1's child) for good; the rerun removed its folder."""
    out = tmp_path / "ev"
    argv = _tool_args(command, inputs, out)
    # paused once the node runs: the first of its messages (/diagnostics) is being recorded
    tool = subprocess.Popen(
        [sys.executable, str(PAUSE), PAUSED_AT, "1", "mtl_perception.ros.bags.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    nodes: list[psutil.Process] = []
    try:
        printed = []
        while not printed or printed[-1] not in ("paused\n", ""):
            printed.append(tool.stdout.readline())
        assert printed[-1] == "paused\n", "".join(printed) + tool.stderr.read()[-3000:]
        nodes = [
            child
            for child in psutil.Process(tool.pid).children()
            if "mtl_perception.ros.node" in child.cmdline()
        ]
        assert len(nodes) == 1, [child.cmdline() for child in psutil.Process(tool.pid).children()]
    finally:
        tool.kill()
        tool.communicate(timeout=EXIT_TIMEOUT)
    try:
        assert _wait_gone(nodes[0].pid), "the node outlived the SIGKILLed mtl-bag evaluate"
    finally:
        if not _wait_gone(nodes[0].pid, 0):
            nodes[0].kill()
    partials = _partials(out)
    assert len(partials) == 1 and (partials[0] / "node.log").is_file()
    outcome = invoke(bag_cli.main, *argv)
    assert outcome.code == 0, outcome.stderr[-3000:]
    notes = [line for line in outcome.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "removed 1 unfinished temporary folder" in notes[0], notes
    assert partials[0].name in notes[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert (out / "node.log").is_file() if command == "run" else (out / "report.json").is_file()


@pytest.mark.ros
@pytest.mark.parametrize("command", ["evaluate", "run"])
def test_a_full_disk_leaves_no_node_log(inputs, tmp_path, ros_process_env, command):
    """The node ran and logged; its output bag filled the disk: ``<out>.failed-node.log`` was
    kept although the one line says nothing of ``--out`` was kept."""
    with small_disk(tmp_path / "disk", 2048, 8) as disk:
        out = disk / "ev"
        before = Snapshot(inputs)
        outcome = invoke(bag_cli.main, *_tool_args(command, inputs, out))
        line = assert_refused(outcome, "no space left on device", f"--out {out}")
        assert "nothing of it was kept" in line
        assert entries(disk) == ["filler"]
        before.assert_unchanged()


def _descendants_when(tool: subprocess.Popen, ready, timeout: float) -> list[psutil.Process]:
    """The tool's descendants once ``ready(descendants)`` holds (polled; bounded by timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and tool.poll() is None:
        descendants = psutil.Process(tool.pid).children(recursive=True)
        if ready(descendants):
            return descendants
        time.sleep(0.1)
    raise AssertionError(f"the tool's workers and nodes never all ran (exit {tool.poll()})")


@pytest.mark.ros
def test_a_sigkilled_jobs_evaluation_takes_its_workers_and_their_nodes_with_it(
    inputs, tmp_path, ros_process_env
):
    """``evaluate --jobs 2``: the per-bag workers (and so their nodes) had lived on as PID 1's
    children, and written into the hidden folder after a rerun had removed it."""
    bags = tmp_path / "bags"
    bags.mkdir()
    for name in ("a", "b"):
        (bags / name).symlink_to(inputs / "bag", target_is_directory=True)
    out = tmp_path / "ev"
    argv = [*_tool_args("evaluate", inputs, out)[:-1], "--jobs", "2"]
    argv[argv.index(inputs / "bag")] = bags
    tool = subprocess.Popen(
        [sys.executable, "-m", "mtl_perception.ros.bags.cli", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def two_workers_with_their_nodes(descendants: list[psutil.Process]) -> bool:
        lines = [" ".join(p.cmdline()) for p in descendants if p.is_running()]
        nodes = [line for line in lines if "mtl_perception.ros.node " in f"{line} "]
        return len(nodes) == 2

    try:
        descendants = _descendants_when(tool, two_workers_with_their_nodes, 10 * EXIT_TIMEOUT)
    finally:
        tool.kill()
        tool.communicate(timeout=EXIT_TIMEOUT)
    survivors = [p for p in descendants if not _wait_gone(p.pid)]
    for process in survivors:
        process.kill()
    assert not survivors, [" ".join(p.cmdline()) for p in survivors]
    # an orphaned worker finished its bag (report.json) in the folder left behind; killed with
    # the tool, none did
    finished = [str(path) for partial in _partials(out) for path in partial.rglob("report.json")]
    assert not finished, finished
    outcome = invoke(bag_cli.main, *argv)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert "removed 1 unfinished temporary folder" in outcome.stderr, outcome.stderr[-3000:]
    assert not _partials(out)
