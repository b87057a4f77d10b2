"""mtl-bag as a regression gate: run once, score again, per-frame results, criteria, baselines.

Two checkpoints of the same network, one trained longer, each evaluated ONCE through the real
node (``mtl-bag evaluate``, session fixture); everything else scores their recorded output bags
(``mtl-bag score``, no model, no node), which is what a CI job does with a stored run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ros_environment
from helpers.attached import start_robot_node
from helpers.models import save_model, trained_small_models
from helpers.refusal import assert_refused, invoke, run_module
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mtl_perception import __version__
from mtl_perception.data.labels import ClassMap
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.provenance import content_hash
from mtl_perception.ros.bags.read import GroundTruth, RunOutputs, read_run
from mtl_perception.ros.bags.record import record_dataset, typestore
from mtl_perception.ros.bags.score import match_ground_truth, parse_frames, score_run

CLASS_MAP = ClassMap.from_yaml()
MS = 10**6
# evaluate's own gate: every frame sent must have outputs (paced by the node, none is dropped)
EVALUATE_GATE = ("--fail-under", "coverage=1.0")
WORSE_STEPS, BETTER_STEPS = 10, 50  # one training run, kept after 10 and after 50 steps


@pytest.fixture(scope="session")
def gate_inputs(tmp_path_factory):
    """(folder, better checkpoint, worse checkpoint, bag of the scenes they were trained on)."""
    root = tmp_path_factory.mktemp("gate")
    shorter, longer = trained_small_models(root / "data", (WORSE_STEPS, BETTER_STEPS))
    better = save_model(root / "better.pt", longer)
    worse = save_model(root / "worse.pt", shorter)
    bag = root / "bag"
    record_dataset(root / "data", "train", bag, progress=False)
    return root, better, worse, bag


@pytest.fixture(scope="session")
def evaluated(gate_inputs):
    """name -> (outcome, report folder) of ``mtl-bag evaluate`` for each checkpoint."""
    root, better, worse, bag = gate_inputs
    runs = {}
    for name, checkpoint in (("better", better), ("worse", worse)):
        out = root / f"evaluate_{name}"
        outcome = run_module(
            "mtl_perception.ros.bags.cli",
            "evaluate",
            "--bag",
            bag,
            "--checkpoint",
            checkpoint,
            "--out",
            out,
            "--as-fast-as-possible",
            *EVALUATE_GATE,
            env=ros_environment(),
        )
        runs[name] = (outcome, out)
    return runs


def _score(run: Path, out: Path, *options: object):
    return invoke(bag_cli.main, "score", "--run", run, "--out", out, *options)


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


@pytest.mark.ros
@pytest.mark.slow
def test_score_reproduces_evaluate_exactly_and_twice_alike(evaluated, tmp_path):
    outcome, out = evaluated["better"]
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert "gate: PASS" in outcome.stdout
    first = _score(out / "outputs_bag", tmp_path / "first", *EVALUATE_GATE)
    second = _score(out / "outputs_bag", tmp_path / "second", *EVALUATE_GATE)
    assert first.code == second.code == 0, first.stderr + second.stderr
    for name in ("report.json", "frames.jsonl"):
        evaluated_bytes = (out / name).read_bytes()
        assert (tmp_path / "first" / name).read_bytes() == evaluated_bytes, name
        assert (tmp_path / "second" / name).read_bytes() == evaluated_bytes, name
    report = _report(out)
    assert report["frames_scored"] == 4 and report["miou"] > 0.2
    assert report["gate"] == "pass" and report["criteria"][0]["verdict"] == "pass"


@pytest.mark.ros
@pytest.mark.slow
def test_gate_passes_the_better_checkpoint_and_fails_the_worse(evaluated, tmp_path):
    (_, better), (_, worse) = evaluated["better"], evaluated["worse"]
    assert evaluated["worse"][0].code == 0, evaluated["worse"][0].stderr
    old, new = _report(worse), _report(better)
    assert new["miou"] > old["miou"] + 0.05, (new["miou"], old["miou"])
    drop = ("--max-drop", "miou=1.0,map50=2.0", "--max-rise", "latency_p95_ms=1000%")
    passed = _score(better / "outputs_bag", tmp_path / "pass", "--baseline", worse, *drop)
    assert passed.code == 0 and "gate: PASS (3 criteria)" in passed.stdout, passed.stdout
    failed = _score(
        worse / "outputs_bag", tmp_path / "fail", "--baseline", better / "report.json", *drop
    )
    assert failed.code == 1, failed.stdout + failed.stderr
    table = failed.stdout[failed.stdout.index("gate: FAIL") :]
    assert "--max-drop miou=1" in table and "FAIL" in table
    assert "latency_p95_ms" not in table  # only what failed is printed
    criteria = {c["criterion"]: c for c in _report(tmp_path / "fail")["criteria"]}
    assert len(criteria) == 3  # the report lists every criterion, failed or not
    miou = criteria["--max-drop miou=1"]
    assert miou["verdict"] == "fail"
    assert miou["value"] == pytest.approx(100 * old["miou"])
    assert miou["baseline"] == pytest.approx(100 * new["miou"])
    assert miou["limit"] == pytest.approx(100 * new["miou"] - 1.0)
    # an absolute floor between the two: the better passes, the worse fails
    floor = f"miou={50 * (old['miou'] + new['miou']):.2f}"
    assert _score(better / "outputs_bag", tmp_path / "f1", "--fail-under", floor).code == 0
    below = _score(worse / "outputs_bag", tmp_path / "f2", "--fail-under", floor)
    assert below.code == 1 and f"--fail-under {floor}" in below.stdout


@pytest.mark.ros
@pytest.mark.slow
def test_frames_jsonl_coverage_and_frames_left_out(evaluated, gate_inputs, tmp_path):
    _, out = evaluated["better"]
    report = _report(out)
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert len(records) == 4 and report["coverage"] == 1.0 and report["skipped_frames"] == []
    for record in records:
        assert record["status"] == "scored" and record["latency_ms"] > 0
        assert set(record["iou"]) == set(CLASS_MAP.seg_names) - {"void"}
        assert set(record["detections"]) == set(CLASS_MAP.det_names)
    # the per-frame counts add up to the run's
    for name, counts in report["detection_counts"].items():
        for key in ("tp", "fp", "fn"):
            assert counts[key] == sum(r["detections"][name][key] for r in records)
    frames = ("--frames", "first:1", "--frames", "last:1")
    left = _score(out / "outputs_bag", tmp_path / "left", *frames)
    assert left.code == 0, left.stderr
    report = _report(tmp_path / "left")
    assert report["frames_left_out"] == 2 and report["frames_scored"] == 2
    assert report["frames_spec"] == "first:1,last:1"  # a repeated --frames: all of them count
    assert "2 sent and counted (2 more sent but left out by --frames)" in (
        (tmp_path / "left" / "report.md").read_text()
    )
    assert report["frames_sent"] == 2 and report["coverage"] == 1.0
    statuses = [json.loads(line)["status"] for line in (tmp_path / "left/frames.jsonl").open()]
    assert statuses == ["left out", "scored", "scored", "left out"]


@pytest.mark.ros
@pytest.mark.slow
def test_frames_later_than_the_deadline_are_late_not_covered(evaluated, tmp_path):
    """--deadline-ms from the recorded latencies: the two slowest frames are late."""
    _, out = evaluated["better"]
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    latencies = sorted(r["latency_ms"] for r in records)
    deadline = (latencies[1] + latencies[2]) / 2
    assert latencies[1] < deadline < latencies[2]
    scored = _score(out / "outputs_bag", tmp_path / "late", "--deadline-ms", f"{deadline!r}")
    assert scored.code == 0, scored.stderr
    report = _report(tmp_path / "late")
    late = [json.loads(line) for line in (tmp_path / "late" / "frames.jsonl").open()]
    for record in late:
        in_time = record["latency_ms"] <= deadline
        assert record["status"] == ("scored" if in_time else "skipped"), record
        assert in_time or record["skip_reason"].startswith("late (outputs after the deadline")
    assert report["frames_sent"] == 4 and report["frames_with_output"] == 2
    assert report["coverage"] == 0.5 and report["frames_scored"] == 2
    assert sum(report["skipped"].values()) == 2
    # the latency figures still describe every output, late or not
    assert report["latency_ms"]["max"] == pytest.approx(latencies[-1])
    refused = _score(out / "outputs_bag", tmp_path / "bad", "--deadline-ms", "0")
    assert_refused(refused, "--deadline-ms")


@pytest.mark.ros
@pytest.mark.slow
def test_report_records_what_reproduces_it(evaluated, gate_inputs):
    _, better, _, bag = gate_inputs
    repro = _report(evaluated["better"][1])["reproducibility"]
    assert repro["bag_hash"] == content_hash(bag)
    assert repro["checkpoint_hash"] == content_hash(better)
    assert repro["node_parameters"]["input_width"] == 256
    assert repro["node_parameters"]["score_threshold"] == 0.001
    assert repro["package_version"] == __version__ and repro["torch_version"] == torch.__version__
    assert repro["ros_distro"].split()[0] in ("kilted", "jazzy", os.environ.get("ROS_DISTRO"))
    assert repro["git_commit"] and repro["host"]["cpu"] and repro["host"]["cpu_count"] >= 1


@pytest.mark.ros
@pytest.mark.slow
def test_run_then_score_gives_evaluate_figures_and_a_ground_truth_bag_of_its_own(
    evaluated, gate_inputs, tmp_path
):
    """`mtl-bag run` alone records a bag `score` reads; ground truth may come from another bag."""
    _, _, worse, bag = gate_inputs
    outputs = tmp_path / "outputs"
    params = tmp_path / "node.yaml"
    params.write_text("/**:\n  ros__parameters:\n    stale_timeout_s: 7.5\n")
    ran = run_module(
        "mtl_perception.ros.bags.cli",
        "run",
        "--bag",
        bag,
        "--checkpoint",
        worse,
        "--out",
        outputs,
        "--as-fast-as-possible",
        "--node-params",
        params,
    )
    assert ran.code == 0, ran.stdout + ran.stderr
    assert (outputs / "metadata.yaml").is_file() and (outputs / "node.log").is_file()
    # the pace and the parameter file reached the run (a refactoring once dropped both)
    info = read_run(outputs).info
    assert info["replay"]["as_fast_as_possible"] is True and info["replay"]["rate_factor"] is None
    assert info["node"]["params_file"] == str(params)
    assert info["node"]["parameters"]["stale_timeout_s"] == 7.5  # default 3.0
    truth_only = tmp_path / "ground_truth"
    with (
        Reader(bag) as reader,
        Writer(truth_only, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        for connection in reader.connections:
            if connection.topic.startswith("/ground_truth/"):
                copy = writer.add_connection(
                    connection.topic, connection.msgtype, typestore=typestore()
                )
                for _, timestamp, raw in reader.messages(connections=[connection]):
                    writer.write(copy, timestamp, raw)
    scored = _score(outputs, tmp_path / "report", "--ground-truth", truth_only)
    assert scored.code == 0, scored.stderr
    report, reference = _report(tmp_path / "report"), _report(evaluated["worse"][1])
    for key in ("frames_scored", "iou", "miou", "ap", "map", "detection_counts", "coverage"):
        assert report[key] == reference[key], key
    assert report["ground_truth"]["bag"] == str(truth_only)
    assert report["reproducibility"]["ground_truth_hash"] == content_hash(truth_only)
    # a --ground-truth bag without ground-truth topics (here the output bag itself) is a mistake,
    # not a speed-only run (that is a bag without ground truth and no --ground-truth)
    no_truth = _score(outputs, tmp_path / "speed", "--ground-truth", outputs)
    assert_refused(no_truth, "has no ground truth", "/ground_truth/semantic", "--ground-truth")
    assert not (tmp_path / "speed").exists()


@pytest.mark.ros
@pytest.mark.slow
def test_attach_replays_into_a_node_started_separately(evaluated, gate_inputs, tmp_path, ros_env):
    """A node started on its own (as ros2 launch would, in a namespace) is evaluated by
    `mtl-bag run --attach`: the same figures as `evaluate` with the same model and settings."""
    _, _, worse, bag = gate_inputs
    node = start_robot_node(worse, tmp_path / "node.log")
    try:
        ran = run_module(
            "mtl_perception.ros.bags.cli",
            "run",
            "--bag",
            bag,
            "--checkpoint",
            worse,
            "--out",
            tmp_path / "outputs",
            "--as-fast-as-possible",
            "--attach",
            "/robot",
        )
        assert node.failure() is None, node.log.read_text()[-2000:]  # still running: not ours
    finally:
        node.stop()
    assert ran.code == 0, ran.stdout + ran.stderr
    assert not (tmp_path / "outputs" / "node.log").exists()  # no node of its own
    info = read_run(tmp_path / "outputs").info
    assert info["node"]["attached"] is True
    assert info["node"]["outputs"]["semantic"] == "/robot/perception_node/semantic"
    assert {"input_width", "score_threshold", "checkpoint"} <= set(
        info["node"]["reported_parameters"]
    )
    assert info["node"]["parameters"]["checkpoint"] == str(worse)
    scored = _score(tmp_path / "outputs", tmp_path / "report")
    assert scored.code == 0, scored.stderr
    report, reference = _report(tmp_path / "report"), _report(evaluated["worse"][1])
    assert report["frames_with_output"] == report["frames_scored"] == 4
    for key in ("iou", "miou", "ap", "map", "detection_counts"):
        assert report[key] == reference[key], key


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--fail-under", "miou65"], ["'miou65'", "--fail-under", "name=number"]),
        (["--fail-under", "miou=65,mIoU=3"], ["'mIoU'", "known: miou"]),
        (["--fail-under", "latency_p95_ms=20%"], ["needs a baseline", "--fail-under"]),
        (["--baseline", "B", "--max-drop", "latency_p95_ms=5"], ["use --max-rise"]),
        (["--baseline", "B", "--max-rise", "miou=1"], ["use --max-drop"]),
        (["--max-drop", "miou=1"], ["add --baseline"]),
        (["--baseline", "nowhere.json", "--max-drop", "miou=1"], ["baseline report not found"]),
        (["--frames", "first:2,7-3"], ["'7-3'", "--frames"]),
        (["--frames", "last2"], ["'last2'", "--frames"]),
        (["--match-tolerance-ms", "-5"], ["--match-tolerance-ms"]),
        (["--fail-under", "coverage=1.5"], ["coverage is at most 1", "--fail-under"]),
        (["--fail-under", "miou=101"], ["miou is at most 100%", "--fail-under"]),
        (["--baseline", "B", "--max-drop", "miou=1"], ["not a report.json of mtl-bag"]),
        (["--baseline", "", "--max-drop", "miou=1"], ["--baseline", "an empty path"]),
        (["--frames", ""], ["--frames", "has an empty part"]),
        (["--frames", "2", "--frames", " "], ["--frames", "has an empty part"]),
    ],
)
def test_bad_criteria_and_options_are_one_line_and_exit_2(tmp_path, options, mentions):
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "report.json").write_text("{}")
    options = [str(tmp_path / o) if o in ("B", "nowhere.json") else o for o in options]
    outcome = _score(tmp_path / "no_run", tmp_path / "out", *options)
    assert_refused(outcome, *mentions)
    assert not (tmp_path / "out").exists()


def test_node_name_without_attach_is_refused(tmp_path):
    outcome = invoke(
        bag_cli.main,
        "run",
        "--bag",
        tmp_path / "bag",
        "--checkpoint",
        tmp_path / "c.pt",
        "--out",
        tmp_path / "out",
        "--node-name",
        "other",
    )
    assert_refused(outcome, "--node-name names the node of --attach")
    assert not (tmp_path / "out").exists()


def test_frames_spec_positions():
    assert parse_frames("first:2,last:1,4-5", 8) == {0, 1, 4, 5, 7}
    assert parse_frames("first:2", 3) == {0, 1} and parse_frames(None, 3) == set()
    assert parse_frames("6", 8) == {6} and parse_frames("0-6", 8) == set(range(7))
    # positions past the last frame, or nothing left to score: refused, naming the token
    for spec, mention in (("5-9", "'5-9' goes past the last frame"), ("8", "'8' goes past")):
        with pytest.raises(ValueError, match=mention):
            parse_frames(spec, 8)
    for spec in ("first:20", "0-7", "first:4,last:4"):
        with pytest.raises(ValueError, match="leaves out every one of the 8 frames"):
            parse_frames(spec, 8)
    assert parse_frames("first:20", 0) == set()  # the form alone, before the frames are known


@pytest.mark.ros
@pytest.mark.slow
def test_frames_past_the_run_and_baselines_that_cannot_judge_are_refused(evaluated, tmp_path):
    """Checked against the recorded run before any scoring: exit 2, one line, nothing written."""
    (_, better), (_, worse) = evaluated["better"], evaluated["worse"]
    run = better / "outputs_bag"
    past = _score(run, tmp_path / "past", "--frames", "2-9")
    assert_refused(past, "'2-9' goes past the last frame", "4 frames", "--frames")
    every = _score(run, tmp_path / "every", "--frames", "first:2,last:2")
    assert_refused(every, "leaves out every one of the 4 frames", "--frames")
    # mtl-eval's metrics.json has figures but is not a bag report
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"miou": 0.5, "map": 0.3}))
    other = _score(run, tmp_path / "o", "--baseline", metrics, "--max-drop", "miou=1")
    assert_refused(other, "not a report.json of mtl-bag", "metrics.json", "--baseline")
    # a bag report without the figure a criterion compares: refused, not a FAIL with exit 1
    report = _report(worse)
    report["miou"] = None
    no_miou = tmp_path / "no_miou.json"
    no_miou.write_text(json.dumps(report))
    missing = _score(run, tmp_path / "m", "--baseline", no_miou, "--max-drop", "miou=1")
    assert_refused(missing, "has no miou to compare with", "--baseline")
    # figures that are not numbers, or out of their range: refused (exit 2), never a crash
    for value, mention in (("high", "miou 'high', not a finite number"), (1.5, "outside 0-100%")):
        report["miou"] = value
        no_miou.write_text(json.dumps(report))
        odd = _score(run, tmp_path / "n", "--baseline", no_miou, "--max-drop", "miou=1")
        assert_refused(odd, mention, "--baseline")
    classes = _score(run, tmp_path / "c", "--classes", tmp_path / "nowhere.yaml")
    assert_refused(classes, "nowhere.yaml", "--classes")
    for out in ("past", "every", "o", "m", "n", "c"):
        assert not (tmp_path / out).exists()


@pytest.mark.ros
@pytest.mark.slow
def test_gate_options_given_several_times_all_count(evaluated, tmp_path):
    _, better = evaluated["better"]
    outcome = _score(
        better / "outputs_bag",
        tmp_path / "r",
        "--fail-under",
        "miou=99",
        "--fail-under",
        "coverage=0.5",
        "--baseline",
        better,
        "--max-drop",
        "miou=1",
        "--max-drop",
        "map50=1",
    )
    assert outcome.code == 1, outcome.stdout + outcome.stderr
    rows = _report(tmp_path / "r")["criteria"]
    # a floor has no baseline value, a comparison has one
    assert [row["baseline"] is None for row in rows] == [True, True, False, False]
    criteria = [row["criterion"] for row in rows]
    assert criteria == [
        "--fail-under miou=99",
        "--fail-under coverage=0.5",
        "--max-drop miou=1",
        "--max-drop map50=1",
    ]
    twice = _score(better / "outputs_bag", tmp_path / "t", "--fail-under", "miou=9,miou=8")
    assert_refused(twice, "miou is given twice", "--fail-under")


def _frames(*bag_stamps: int) -> list[dict]:
    return [
        {"index": i, "stamp": s or 10**9 + i, "bag_stamp": s, "size": [4, 4], "rejected": None}
        for i, s in enumerate(bag_stamps)
    ]


def test_ground_truth_within_a_tolerance_and_ambiguous_stamps():
    mask = np.zeros((4, 4), np.uint8)
    frames = _frames(100 * MS, 200 * MS, 300 * MS, 300 * MS, 0)
    truth = GroundTruth(Path("gt"), "/semantic", None)
    truth.masks = {
        130 * MS: [mask],  # 30 ms after frame 0
        250 * MS: [mask],  # as near to frame 1 (200) as to the two frames at 300: ambiguous
        300 * MS: [mask],  # two frames share this stamp: ambiguous
        900 * MS: [mask],  # no frame near
    }
    exact = match_ground_truth(frames, truth, 0)
    assert exact.masks == {} and exact.unmatched == {"semantic": 3}
    assert exact.left_out == {"semantic": 1}
    near = match_ground_truth(frames, truth, 75 * MS)
    assert list(near.masks) == [0] and near.offset_ns == {0: -30 * MS}
    assert near.left_out == {"semantic": 2} and near.unmatched == {"semantic": 1}
    assert any("within 75 ms" in w for w in near.warnings)
    # two ground-truth messages nearest to one frame: the nearer one counts
    truth.masks = {95 * MS: [mask], 120 * MS: [mask]}
    claimed = match_ground_truth(frames, truth, 75 * MS)
    assert claimed.offset_ns == {0: 5 * MS} and claimed.left_out == {"semantic": 1}


def test_every_frame_without_outputs_has_its_reason():
    frames = [{**f, "sent": 1000} for f in _frames(1, 2, 3, 4)]
    frames[1]["rejected"] = "encoding 'yuv9' is not supported"
    info = {"frames": frames, "node": {"parameters": {"input_width": 256}}}
    detections = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    run = RunOutputs(
        Path("run"),
        info,
        masks={1: np.zeros((4, 4), np.uint8), 3: np.zeros((4, 4), np.uint8)},
        detections={1: detections},
        mask_received={1: 3000, 3: 3000},
        detections_received={1: 2000},
        node_counters={"dropped": "1"},
    )
    figures, records = score_run(run, None, CLASS_MAP)
    assert [r["skip_reason"] for r in records] == [
        None,
        "rejected: encoding 'yuv9' is not supported",
        "partial output (mask only)",
        "dropped (latest frame wins)",
    ]
    assert records[0]["latency_ms"] == pytest.approx(2000 / MS)
    assert figures["coverage"] == 0.25 and figures["frames_without_output"] == 3
    assert len(figures["skipped_frames"]) == 3 and sum(figures["skipped"].values()) == 3


# -- where the model got worse (item 5) and several bags at once (item 8) ----------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.ros
@pytest.mark.slow
def test_report_shows_where_the_model_got_worse_from_the_scored_data(evaluated, tmp_path):
    """AP by size, TP/FP/FN, both confusion matrices, precision-recall curves and the worst
    frames, from the output bag alone; scoring twice writes the same bytes, pictures included."""
    _, out = evaluated["worse"]
    first = _score(out / "outputs_bag", tmp_path / "first")
    second = _score(out / "outputs_bag", tmp_path / "second")
    assert first.code == second.code == 0, first.stderr + second.stderr
    files = _files(tmp_path / "first")
    assert files == _files(tmp_path / "second")
    for name in ("confusion_segmentation.png", "confusion_detection.png", "precision_recall.png"):
        assert files[name].startswith(b"\x89PNG") and files[name] == (out / name).read_bytes()
    report = _report(tmp_path / "first")
    records = [json.loads(line) for line in (tmp_path / "first/frames.jsonl").open()]
    counts = report["detection_counts"]
    ground_truth = sum(c["tp"] + c["fn"] for c in counts.values())
    kept = sum(c["tp"] + c["fp"] for c in counts.values())
    # every counted object has one size; sizes bounded at 512 px wide (COCO's x 512/640)
    by_size = report["ap_by_size"]
    assert sum(by_size[s]["ground_truth"] for s in ("small", "medium", "large")) == ground_truth
    assert list(report["size_rule"]["bounds_px2"]) == ["512"]
    assert report["size_rule"]["bounds_px2"]["512"] == pytest.approx([25.6**2, 76.8**2])
    assert "640 px wide" in report["size_rule"]["rule"]
    # the detection confusion matrix: every object in one row, every kept detection in a column
    detection = np.array(report["detection_confusion"]["counts"])
    assert report["detection_confusion"]["labels"][-1] == "background"
    assert detection[:-1].sum() == ground_truth and detection[:, :-1].sum() == kept
    assert np.trace(detection[:-1, :-1]) >= sum(c["tp"] for c in counts.values())
    assert detection[:-1, -1].sum() <= sum(c["fn"] for c in counts.values())
    # the pixel confusion matrix gives the report's IoU
    pixels = np.array(report["segmentation_confusion"]["counts"], float)
    names = report["segmentation_confusion"]["labels"]
    for c, name in enumerate(names):
        union = pixels[c].sum() + pixels[:, c].sum() - pixels[c, c]
        if name in report["iou"] and report["iou"][name] is not None:
            assert report["iou"][name] == pytest.approx(pixels[c, c] / union)
    # the worst frames are those of frames.jsonl, lowest mIoU / most misses first, drawn
    lowest = sorted((r["miou"], r["position"]) for r in records if r["status"] == "scored")
    worst = report["worst_frames"]
    assert [(w["miou"], w["position"]) for w in worst["by_miou"]] == lowest[:3]
    misses = sorted(
        ((-sum(c["fn"] for c in r["detections"].values()), r["position"]) for r in records),
    )
    assert [(-w["missed"], w["position"]) for w in worst["by_missed"]] == [
        m for m in misses if m[0] < 0
    ][:3]
    for kind, entries in (("miou", worst["by_miou"]), ("missed", worst["by_missed"])):
        for entry in entries:
            assert f"worst_{kind}_{entry['position']}.png" in files
    markdown = files["report.md"].decode()
    assert "AP@0.5 by object size" in markdown and "| small |" in markdown
    assert "![confusion_detection](confusion_detection.png)" in markdown


def _subset_bag(source: Path, target: Path, frames: int) -> None:
    """A copy of ``source`` holding the first ``frames`` stamps of every topic."""
    with Reader(source) as reader:
        stamps = sorted({t for _, t, _ in reader.messages()})[:frames]
    with (
        Reader(source) as reader,
        Writer(target, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        copies = {
            c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore())
            for c in reader.connections
        }
        for connection, timestamp, raw in reader.messages():
            if timestamp in stamps:
                writer.write(copies[connection.id], timestamp, raw)


# what a bag's report must repeat exactly from a single run (timing figures cannot)
ACCURACY_KEYS = (
    "frames_sent",
    "frames_with_output",
    "frames_scored",
    "coverage",
    "iou",
    "miou",
    "ap",
    "map",
    "ap_by_size",
    "detection_counts",
    "detection_confusion",
    "segmentation_confusion",
    "worst_frames",
)


def _accuracy_records(folder: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "latency_ms"}
        for line in (folder / "frames.jsonl").open()
    ]


@pytest.mark.ros
@pytest.mark.slow
def test_jobs_2_over_two_bags_repeats_the_single_runs_and_adds_them_up(
    evaluated, gate_inputs, tmp_path
):
    """Two bags evaluated at once, each in its own namespace and domain, report what each
    reports alone (accuracy figures exactly; latencies differ by nature and are not compared);
    the overall figures add the bags' frames up and the criteria judge them."""
    _, better, _, bag = gate_inputs
    bags = tmp_path / "bags"
    bags.mkdir()
    shutil.copytree(bag, bags / "all_four")
    _subset_bag(bag, bags / "first_two", 2)
    alone = tmp_path / "alone"
    single = run_module(
        "mtl_perception.ros.bags.cli",
        "evaluate",
        "--bag",
        bags / "first_two",
        "--checkpoint",
        better,
        "--out",
        alone,
        "--as-fast-as-possible",
    )
    assert single.code == 0, single.stdout + single.stderr
    out = tmp_path / "both"
    both = run_module(
        "mtl_perception.ros.bags.cli",
        "evaluate",
        "--bag",
        f"{bags}/*",  # a glob, as a CI script passes it (quoted)
        "--jobs",
        "2",
        "--checkpoint",
        better,
        "--out",
        out,
        "--as-fast-as-possible",
        "--fail-under",
        "coverage=1.0,miou=99",
    )
    # the criteria judge the overall figures: all frames have outputs, mIoU is under 99%
    assert both.code == 1, both.stdout + both.stderr
    table = both.stdout[both.stdout.index("gate: FAIL") :]
    assert "--fail-under miou=99" in table and "coverage" not in table
    singles = {"all_four": evaluated["better"][1], "first_two": alone}
    overall = _report(out)
    criteria = {c["criterion"]: c for c in overall["criteria"]}
    assert criteria["--fail-under coverage=1"]["verdict"] == "pass"
    assert criteria["--fail-under miou=99"]["value"] == pytest.approx(100 * overall["miou"])
    assert [b["name"] for b in overall["bags"]] == ["all_four", "first_two"]
    rescored = _score(out, tmp_path / "rescored")  # several runs: each is scored on its own
    assert_refused(rescored, "report of several bags", "bags/<bag>/outputs_bag", "--run")
    assert len({b["ros_domain_id"] for b in overall["bags"]}) == 2
    for name, reference in singles.items():
        mine, theirs = _report(out / "bags" / name), _report(reference)
        assert mine["gate"] is None  # the bags are not judged one by one
        for key in ACCURACY_KEYS:
            assert mine[key] == theirs[key], (name, key)
        assert _accuracy_records(out / "bags" / name) == _accuracy_records(reference)
        assert mine["reproducibility"]["bag_hash"] == theirs["reproducibility"]["bag_hash"]
    parts = [_report(folder) for folder in singles.values()]
    assert overall["frames_scored"] == 6 and overall["coverage"] == 1.0
    for name in overall["detection_counts"]:
        for key in ("tp", "fp", "fn"):
            assert overall["detection_counts"][name][key] == sum(
                p["detection_counts"][name][key] for p in parts
            )
    pixels = sum(np.array(p["segmentation_confusion"]["counts"]) for p in parts)
    assert overall["segmentation_confusion"]["counts"] == pixels.tolist()
    tp = np.diag(pixels).astype(float)
    union = pixels.sum(0) + pixels.sum(1) - tp
    present = [c for c in range(1, len(tp)) if union[c] > 0]  # 0: void
    assert overall["miou"] == pytest.approx(np.mean(tp[present] / union[present]))
    records = [json.loads(line) for line in (out / "frames.jsonl").open()]
    assert [r["bag"] for r in records] == ["all_four"] * 4 + ["first_two"] * 2
    assert {"report.md", "confusion_detection.png", "latency_histogram.png"} <= set(_files(out))


@pytest.mark.parametrize(
    ("bag", "options", "mentions"),
    [
        ("nothing_*", [], ["'", "nothing_*", "matches", "--bag"]),
        ("empty_folder", [], ["holds no bag", "--bag"]),
        ("folder/*", [], ["no bag", "--bag"]),
        ("folder", ["--jobs", "0"], ["--jobs", "must be >= 1"]),
    ],
)
def test_bad_bag_sets_are_one_line_and_exit_2(tmp_path, bag, options, mentions):
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "folder" / "not_a_bag").mkdir(parents=True)
    outcome = invoke(
        bag_cli.main,
        "evaluate",
        "--bag",
        tmp_path / bag,
        "--checkpoint",
        tmp_path / "x.pt",
        "--out",
        tmp_path / "out",
        *options,
    )
    assert_refused(outcome, *mentions)
    assert not (tmp_path / "out").exists()
