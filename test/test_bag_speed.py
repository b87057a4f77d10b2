"""Speed as ros2_benchmark measures it: the node process's resources over a replay, and
``--find-peak-rate``, the highest input rate at which the node loses < 5 % of the frames.

Real node over DDS (``mtl-bag evaluate`` starts it in its own network namespace), small model.
The peak-rate run searches between 1 Hz (one frame a second: the small CPU model answers well
within it) and 100 Hz (a frame every 10 ms for 1 s: the node's one-frame slot keeps only the
newest while it works on one), so the upper bound loses frames by construction of the node, not
by a timing the test sets. The search's logic itself is checked without ROS on a node whose
capacity is known exactly.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path

import pytest
from conftest import ros_environment
from helpers.attached import start_robot_node
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import assert_refused, invoke, run_module

from mtl_perception.cli import ToolError
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.peak import (
    LOST_LIMIT,
    TOLERANCE_FRACTION,
    PeakSearch,
    find_peak_rate,
    peak_line,
)
from mtl_perception.ros.bags.read import BagFrames, Frame, read_run
from mtl_perception.ros.bags.record import record_dataset
from mtl_perception.ros.bags.replay import Collected, NodeTopics, replay, restamped, schedule
from mtl_perception.ros.bags.resources import NO_GPU, Sample, _Gpus, resources_line, summarize
from mtl_perception.ros.bags.settings import NODE_NAME

FRAMES = 6
TOLERANCE_1 = ("--peak-rate-tolerance", "1")
PEAK_OPTIONS = (
    "--find-peak-rate",
    "--peak-rate-min",
    "1",
    "--peak-rate-max",
    "100",
    "--peak-rate-tolerance",
    "30",
    "--peak-trial-seconds",
    "1",
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(folder, checkpoint, bag of FRAMES frames with ground truth)."""
    root = tmp_path_factory.mktemp("speed")
    write_dataset(root / "data", {"val": FRAMES}, seed=3, width=512, height=256, progress=False)
    bag = root / "bag"
    record_dataset(root / "data", "val", bag, progress=False)
    checkpoint = save_model(root / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    return root, checkpoint, bag


def _evaluate(inputs, name: str, *options: object):
    """``mtl-bag evaluate`` of the module's bag (or of ``--bag`` among ``options``)."""
    root, checkpoint, bag = inputs
    out = root / name
    outcome = run_module(
        "mtl_perception.ros.bags.cli",
        "evaluate",
        *(() if "--bag" in options else ("--bag", bag)),
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        *options,
        env=ros_environment(),
    )
    assert outcome.code == 0, outcome.stdout + outcome.stderr[-3000:]
    return outcome, out


@pytest.fixture(scope="module")
def paced(inputs):
    """``mtl-bag evaluate --as-fast-as-possible``: (outcome, report folder)."""
    return _evaluate(inputs, "paced", "--as-fast-as-possible")


@pytest.fixture(scope="module")
def peak(inputs):
    """``mtl-bag evaluate --find-peak-rate`` between 1 and 100 Hz: (outcome, report folder)."""
    return _evaluate(inputs, "peak", *PEAK_OPTIONS)


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _rescore(run: Path, out: Path, *options: object):
    return invoke(bag_cli.main, "score", "--run", run, "--out", out, *options)


@pytest.mark.ros
@pytest.mark.slow
def test_node_process_resources_are_sampled_and_scored_again_from_the_output_bag(paced, tmp_path):
    outcome, out = paced
    resources = _report(out)["resources"]
    assert resources["sampled"] is True and resources["samples"] > 0
    assert resources["interval_s"] == pytest.approx(0.2)
    cpu, rss = resources["cpu_percent"], resources["rss_mib"]
    assert 0 <= cpu["mean"] <= cpu["max"]
    assert 50 < rss["mean"] <= rss["max"] and rss["final"] > 50  # torch and rclpy are loaded
    missing = _Gpus().missing
    if missing is not None:  # this machine: the report says plainly that there is no GPU
        assert resources["gpu"] == {"note": missing} and missing.startswith("n/a: no NVIDIA GPU")
    else:
        assert "devices" in resources["gpu"]
    assert "Resources of the node process: CPU mean" in (out / "report.md").read_text()
    assert "node process: CPU mean" in outcome.stdout
    rescored = _rescore(out / "outputs_bag", tmp_path / "again")
    assert rescored.code == 0, rescored.stderr
    assert (tmp_path / "again" / "report.json").read_bytes() == (out / "report.json").read_bytes()
    assert "node process: CPU mean" in rescored.stdout


@pytest.mark.ros
@pytest.mark.slow
def test_find_peak_rate_reports_every_trial_and_scores_the_peak(peak, tmp_path):
    outcome, out = peak
    report = _report(out)
    search = report["peak_rate"]
    trials = search["trials"]
    assert [t["rate_hz"] for t in trials[:2]] == [100.0, 1.0]  # the bounds first
    assert search["low_hz"] == 1.0 and search["high_hz"] == 100.0
    assert search["trial_seconds"] == 1.0
    assert search["peak_hz"] is not None and search["recorded_trial_hz"] == search["peak_hz"]
    for trial in trials:
        # a trial loops the bag for 1 s, and sends it at least once
        assert trial["sent"] == max(FRAMES, math.ceil(trial["rate_hz"])) and not trial["rejected"]
        assert trial["lost_fraction"] == pytest.approx(trial["lost"] / trial["sent"])
        assert trial["passed"] == (trial["lost_fraction"] < LOST_LIMIT)
        # the peak is the highest passing rate: every trial above it failed, none below it did
        assert trial["passed"] == (trial["rate_hz"] <= search["peak_hz"])
    assert not trials[0]["passed"] and trials[0]["lost"] >= 1
    (at_peak,) = [t for t in trials if t["rate_hz"] == search["peak_hz"]]
    assert at_peak["lost_fraction"] < LOST_LIMIT and at_peak["latency_p50_ms"] > 0
    # The report's figures are those of one pass of the bag at the peak rate, its node counters
    # only that pass's (the node's own are cumulative over every trial).
    assert report["frames_sent"] == FRAMES
    assert report["reproducibility"]["replay"]["rate_hz"] == search["peak_hz"]
    counters = report["node_counters"]
    assert counters["received"] == FRAMES == counters["processed"] + counters["dropped"]
    assert report["frames_with_output"] == counters["processed"]
    assert report["miou"] is not None and report["resources"]["samples"] > 0
    markdown = (out / "report.md").read_text()
    assert f"Peak input rate (--find-peak-rate; highest rate with < {100 * LOST_LIMIT:g} %" in (
        markdown
    )
    assert markdown.count("| fail |") == sum(not t["passed"] for t in trials)
    assert f"peak input rate {search['peak_hz']:.3g} Hz" in outcome.stdout
    # the score of the output bag alone gives the same report, and the gate judges the peak
    floor = f"peak_rate_hz={search['peak_hz'] / 2:g}"
    passed = _rescore(out / "outputs_bag", tmp_path / "pass", "--fail-under", floor)
    assert passed.code == 0, passed.stdout + passed.stderr
    rescored = _report(tmp_path / "pass")
    assert rescored["peak_rate"] == search and rescored["resources"] == report["resources"]
    failed = _rescore(out / "outputs_bag", tmp_path / "fail", "--fail-under", "peak_rate_hz=100")
    assert failed.code == 1 and "--fail-under peak_rate_hz=100" in failed.stdout
    dropped = _rescore(
        out / "outputs_bag",
        tmp_path / "drop",
        "--baseline",
        out,
        "--max-drop",
        "peak_rate_hz=0",
    )
    assert dropped.code == 0, dropped.stdout + dropped.stderr  # the same run: no drop


@pytest.mark.ros
@pytest.mark.slow
def test_an_attached_node_is_not_sampled_and_counts_only_its_own_frames(inputs, tmp_path, ros_env):
    """Two runs attached to one node started apart (as on a robot): no process of ours to
    sample, and the second run's counters are its own frames, not the node's running total."""
    _, checkpoint, bag = inputs
    node = start_robot_node(checkpoint, tmp_path / "node.log")
    try:
        for name in ("first", "second"):
            ran = run_module(
                "mtl_perception.ros.bags.cli",
                "run",
                "--bag",
                bag,
                "--checkpoint",
                checkpoint,
                "--out",
                tmp_path / name,
                "--as-fast-as-possible",
                "--attach",
                "/robot",
            )
            assert ran.code == 0, ran.stdout + ran.stderr[-3000:]
            assert "node process: not sampled (attached node)" in ran.stdout
    finally:
        node.stop()
    second = read_run(tmp_path / "second")
    assert second.info["replay"]["as_fast_as_possible"] is True  # run's pace reaches the replay
    assert second.info["resources"] == {"sampled": False, "note": "not sampled (attached node)"}
    assert int(second.info["node_counters_at_start"]["received"]) == FRAMES
    counts = {k: int(second.node_counters[k]) for k in ("received", "processed", "dropped")}
    assert counts["received"] == FRAMES == counts["processed"] + counts["dropped"]
    scored = _rescore(tmp_path / "second", tmp_path / "report")
    assert scored.code == 0, scored.stderr
    assert _report(tmp_path / "report")["node_counters"]["received"] == FRAMES
    assert "Resources of the node process: not sampled (attached node)." in (
        (tmp_path / "report" / "report.md").read_text()
    )


@pytest.mark.ros
@pytest.mark.slow
def test_a_rig_run_reports_its_one_node_process_for_every_camera_and_in_total(inputs):
    root = inputs[0]
    bag = root / "rig_bag"
    record_dataset(root / "data", "val", bag, progress=False, cameras=("front", "rear"))
    outcome, out = _evaluate(inputs, "rig", "--bag", bag, "--as-fast-as-possible")
    total = _report(out)["resources"]
    assert total["sampled"] is True and total["samples"] > 0 and total["rss_mib"]["max"] > 50
    for camera in ("front", "rear"):  # one node: the same figures in each camera's report
        assert _report(out / "cameras" / camera)["resources"] == total
    assert "Resources of the node process: CPU mean" in (out / "report.md").read_text()
    assert "node process: CPU mean" in outcome.stdout
    # each camera's player is a node of its own name: rcl does not warn of a second publisher
    assert "already registered" not in outcome.stderr, outcome.stderr[-3000:]


@pytest.mark.ros
def test_waiting_for_an_absent_node_is_said_at_once_and_the_timeout_names_it(ros_env):
    """``--attach`` to a namespace without the node: one line when the wait begins, and the
    error names the node it waited for (no node can appear: nothing else runs in this domain)."""
    said: list[str] = []
    node = NodeTopics.of(NODE_NAME, "/nobody")
    with pytest.raises(ToolError) as refused:
        replay(_bag(2), node, rate_factor=1.0, discovery_timeout=0.5, on_wait=said.append)
    assert said == [
        f"waiting up to 0.5 s for the node /nobody/{NODE_NAME} to subscribe to /camera/image_raw"
    ]
    assert str(refused.value) == (
        f"the node /nobody/{NODE_NAME} did not subscribe to /camera/image_raw and publish "
        f"/nobody/{NODE_NAME}/detections within 0.5 s"
    )


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (("--find-peak-rate", "--peak-rate-min", "5", "--peak-rate-max", "2"), ["below"]),
        (("--peak-rate-max", "5"), ["add --find-peak-rate", "--peak-rate-max"]),
        (
            ("--find-peak-rate", "--peak-rate-min", "1", "--peak-rate-max", "2", *TOLERANCE_1),
            ["--peak-rate-tolerance", "nothing to search"],
        ),
        (("--find-peak-rate", "--peak-rate-max", "0"), ["--peak-rate-max", "> 0"]),
        (("--find-peak-rate", "--peak-rate-min", "inf"), ["--peak-rate-min", "finite"]),
        (("--find-peak-rate", "--as-fast-as-possible"), ["not allowed with"]),
        (("--find-peak-rate", "--rate-factor", "2"), ["not allowed with"]),
    ],
)
@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_bad_peak_rate_options_are_refused_in_one_line(tmp_path, command, options, mentions):
    outcome = invoke(
        bag_cli.main,
        command,
        "--bag",
        tmp_path / "no_bag",
        "--checkpoint",
        tmp_path / "no.pt",
        "--out",
        tmp_path / "out",
        *options,
    )
    assert_refused(outcome, *mentions)
    assert not (tmp_path / "out").exists()


# -- the search's logic, on a node whose capacity is known exactly ----------------------------


def _bag(count: int) -> BagFrames:
    header = b"\x00\x01\x00\x00" + bytes(8)  # CDR: encapsulation, then the stamp
    frames = [Frame(i, i * 10**8, i * 10**8, i * 10**8, header, (4, 4)) for i in range(count)]
    return BagFrames(Path("bag"), "/camera/image_raw", "sensor_msgs/msg/Image", 16, frames)


def _node_with_capacity(
    capacity_hz: float, bag: BagFrames, played: list, paced_hz: float | None = None
):
    """A replay into a node that answers every frame up to ``capacity_hz`` and every other
    frame above it (paced by the node: at ``paced_hz``, default its capacity); ``played``:
    (rate, frames) of each."""

    def play(rate_hz: float | None, frames: int | None) -> Collected:
        played.append((rate_hz, frames))
        collected = Collected()
        period_ns = round(1e9 / (rate_hz or paced_hz or capacity_hz))
        # at most 2000 frames: a trial at 1e9 Hz asks for billions (a real replay stops one
        # that falls behind; here only the lost fraction matters)
        for i, (_, stamp, _) in enumerate(itertools.islice(schedule(bag, frames), 2000)):
            collected.sent[stamp] = i * period_ns
            if rate_hz is None or rate_hz <= capacity_hz or i % 2 == 0:
                collected.mask_stamps.add(stamp)
                collected.detection_stamps.add(stamp)
                collected.arrived[stamp] = i * period_ns + 10**7
        return collected

    return play


@pytest.mark.parametrize("capacity", [3.0, 7.5, 0.2, 100.0])
def test_the_search_finds_the_highest_passing_rate_within_the_tolerance(capacity):
    bag, played = _bag(20), []
    search = PeakSearch(low_hz=0.5, high_hz=40.0, tolerance_hz=0.25, trial_seconds=2.0)
    recorded, record = find_peak_rate(_node_with_capacity(capacity, bag, played), bag, search)
    *trials, (last_rate, last_frames) = played
    # each trial loops the bag for 2 s (at least once); the recorded run is the bag once
    assert all(frames == max(20, math.ceil(2 * rate)) for rate, frames in trials)
    assert last_frames is None and last_rate == record["recorded_trial_hz"]
    assert len(recorded.sent) == 20
    played = [rate for rate, _ in trials]
    assert None not in played  # both bounds given: no paced trial
    if capacity >= 40:  # the upper bound passes: nothing more to try
        assert played == [40.0] and record["peak_hz"] == 40.0
        assert "upper bound" in record["note"]
    elif capacity < 0.5:  # the lower bound fails: no peak, the lower bound recorded
        assert played == [40.0, 0.5] and record["peak_hz"] is None
        assert record["recorded_trial_hz"] == 0.5
    else:
        assert played[:2] == [40.0, 0.5]
        assert capacity - 0.25 <= record["peak_hz"] <= capacity
        failing = [t["rate_hz"] for t in record["trials"] if not t["passed"]]
        assert min(failing) - record["peak_hz"] <= 0.25
    assert all(t["passed"] == (t["rate_hz"] <= capacity) for t in record["trials"])
    assert len(record["trials"]) == len(played)


def test_default_bounds_come_from_a_paced_first_trial():
    bag, played = _bag(20), []
    _, record = find_peak_rate(_node_with_capacity(5.0, bag, played), bag, PeakSearch())
    assert played[0] == (None, None) and record["trials"][0]["passed"] is None
    throughput = record["trials"][0]["throughput_fps"]
    assert record["low_hz"] == pytest.approx(throughput / 2)
    assert record["high_hz"] == pytest.approx(throughput * 2)
    # the default tolerance: an eighth of the passing rate
    assert record["tolerance_hz"] is None and record["tolerance_fraction"] == TOLERANCE_FRACTION
    assert 5.0 / (1 + TOLERANCE_FRACTION) < record["peak_hz"] <= 5.0
    fixed = len(record["trials"]) - 1
    assert peak_line(record).endswith(
        f"a paced trial and {fixed} fixed-rate trials at "
        + ", ".join(f"{t['rate_hz']:.3g}" for t in record["trials"][1:])
        + " Hz)"
    )


@pytest.mark.parametrize("capacity", [2.7, 3.4, 4.9, 5.1, 7.0, 10.4])
def test_the_default_search_resolves_the_peak_in_at_most_six_fixed_rate_trials(capacity):
    """A node paced at 5 fps whose peak lies anywhere between the default bounds (half and
    twice that): the peak within an eighth of itself, in at most 6 fixed-rate trials."""
    bag, played = _bag(20), []
    node = _node_with_capacity(capacity, bag, played, paced_hz=5.0)
    _, record = find_peak_rate(node, bag, PeakSearch())
    assert 1 + TOLERANCE_FRACTION > capacity / record["peak_hz"] >= 1
    assert len(record["trials"]) - 1 <= 6


def test_a_far_upper_bound_is_narrowed_geometrically_and_the_peak_still_resolved():
    """``--peak-rate-max 1e9`` for a node of 10 Hz: not a halving from 1e9 that stops a
    tolerance of 1e9 / 8 short and calls the lower bound the peak."""
    bag, played = _bag(20), []
    _, record = find_peak_rate(_node_with_capacity(10.0, bag, played), bag, PeakSearch(high_hz=1e9))
    assert 10.0 / (1 + TOLERANCE_FRACTION) < record["peak_hz"] <= 10.0
    assert record["note"] is None
    rates = [t["rate_hz"] for t in record["trials"][1:]]
    assert rates[:2] == [1e9, record["low_hz"]]
    assert len(rates) <= 12  # 2 bounds, ~5 geometric steps down from 1e9, ~3 to the tolerance
    # while the failing rate is over twice the passing one, the next is their geometric mean
    good, bad = rates[1], rates[0]
    for rate, trial in zip(rates[2:], record["trials"][3:], strict=True):
        if bad > 2 * good:
            assert rate == pytest.approx(math.sqrt(good * bad))
        else:
            assert rate == pytest.approx((good + bad) / 2)
        good, bad = (rate, bad) if trial["passed"] else (good, rate)


def test_the_summary_line_without_a_paced_trial_lists_every_trial():
    bag, played = _bag(20), []
    search = PeakSearch(low_hz=1.0, high_hz=8.0, tolerance_hz=1.0)
    _, record = find_peak_rate(_node_with_capacity(3.0, bag, played), bag, search)
    rates = [t["rate_hz"] for t in record["trials"]]
    assert peak_line(record) == (
        f"peak input rate {record['peak_hz']:.3g} Hz (< 5 % frames lost; {len(rates)} "
        "fixed-rate trials at " + ", ".join(f"{r:.3g}" for r in rates) + " Hz)"
    )


def test_a_looped_trial_sends_every_stamp_once_and_changes_nothing_but_the_stamp():
    """A trial longer than the bag sends its frames again, each later pass re-stamped (a node
    answers each frame with its stamp, so a repeated stamp could not be told apart)."""
    for encapsulation in (b"\x00\x01\x00\x00", b"\x00\x00\x00\x00"):  # CDR LE, BE
        order = "<" if encapsulation[1] == 1 else ">"
        raw = encapsulation + struct.pack(f"{order}iI", 12, 5) + b"frame_id and pixels"
        frame = Frame(0, 0, 12 * 10**9 + 5, 12 * 10**9 + 5, raw, (4, 4))
        bag = BagFrames(Path("bag"), "/camera/image_raw", "sensor_msgs/msg/Image", 16, [frame])
        (_, first, once), *later = schedule(bag, 3)
        assert first == frame.stamp and once is raw  # the first pass as recorded
        for cycle, (_, stamp, message) in enumerate(later, start=1):
            assert stamp == frame.stamp + cycle * 10**9  # a 1-frame bag: one second apart
            assert message[:4] == raw[:4] and message[12:] == raw[12:]
            assert struct.unpack(f"{order}iI", message[4:12]) == divmod(stamp, 10**9)
    bag = _bag(20)
    stamps = [stamp for _, stamp, _ in schedule(bag, 65)]
    assert len(set(stamps)) == 65 and stamps[:20] == [f.stamp for f in bag.frames]
    # a real message: rclpy reads the new stamp and the same pixels
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    image = Image(height=1, width=2, encoding="mono8", step=2, data=b"\x07\x09")
    image.header.stamp.sec, image.header.stamp.nanosec = 3, 4
    again = deserialize_message(restamped(serialize_message(image), 7 * 10**9 + 8), Image)
    assert (again.header.stamp.sec, again.header.stamp.nanosec) == (7, 8)
    assert bytes(again.data) == b"\x07\x09" and again.encoding == "mono8"


# -- the GPU's figures, which need NVML and a GPU this machine lacks: NVML's answers given ------


class _FakeNvml:
    """NVML's answers for two devices: the node (pid 7) on device 1 with 300 MiB, another
    process on device 0; device 1 is 40 % busy."""

    class NVMLError(Exception):
        pass

    @staticmethod
    def nvmlDeviceGetComputeRunningProcesses(handle):
        process = type("Process", (), {})
        mine, other = process(), process()
        mine.pid, mine.usedGpuMemory = 7, 300 * 2**20
        other.pid, other.usedGpuMemory = 8, None
        return [other] if handle == 0 else [mine, other]

    @staticmethod
    def nvmlDeviceGetUtilizationRates(handle):
        return type("Rates", (), {"gpu": 10 if handle == 0 else 40})()


def test_gpu_memory_and_utilisation_are_the_node_process_devices():
    gpus = _Gpus.__new__(_Gpus)
    gpus.nvml, gpus.handles, gpus.names, gpus.missing = _FakeNvml, [0, 1], ["A", "B"], None
    assert gpus.usage(7) == (300.0, 40.0)
    assert gpus.usage(99) == (None, None)  # not on any GPU: nothing to report for it
    samples = [Sample(i, 50.0 + i, 400.0 + i, *gpus.usage(7)) for i in range(3)]
    summary = summarize(samples, 0.2, gpu_missing=None, gpu_names=gpus.names)
    assert summary["gpu"]["memory_mib"] == {"mean": 300.0, "max": 300.0, "final": 300.0}
    assert summary["gpu"]["utilization_percent"] == {"mean": 40.0, "max": 40.0}
    line = resources_line(summary)
    assert "GPU memory mean 300 MiB" in line and "GPU utilisation mean 40 %" in line
    assert "RSS mean 401 MiB, max 402 MiB, final 402 MiB" in line and "(3 samples" in line
    cpu_only = summarize([Sample(0, 5.0, 100.0)], 0.2, gpu_missing=None, gpu_names=gpus.names)
    assert "no GPU lists the node's process" in resources_line(cpu_only)
    absent = summarize([Sample(0, 5.0, 100.0)], 0.2, gpu_missing=NO_GPU, gpu_names=[])
    assert resources_line(absent).endswith("GPU n/a: no NVIDIA GPU (1 samples every 0.2 s)")
