"""mtl-bag with several cameras: a synthetic rig recorded by record-dataset --cameras, evaluated
by one node serving every camera, reported per camera and in total."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ros_environment
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import assert_refused, invoke, run_module
from rosbags.rosbag2 import Reader

from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.labels import ClassMap
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.record import typestore

CLASS_MAP = ClassMap.from_yaml()
CAMERAS = ("front", "rear")
FRAMES = 3
# what a camera's report must repeat exactly from that camera evaluated alone
ACCURACY_KEYS = (
    "frames_sent",
    "frames_with_output",
    "frames_scored",
    "coverage",
    "iou",
    "miou",
    "ap",
    "map",
    "detection_counts",
    "detection_confusion",
    "segmentation_confusion",
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """(folder, checkpoint, dataset folder, rig bag of CAMERAS recorded by the CLI)."""
    root = tmp_path_factory.mktemp("rig")
    write_dataset(root / "data", {"val": FRAMES}, seed=12, width=512, height=256, progress=False)
    checkpoint = save_model(root / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    bag = root / "rig_bag"
    outcome = invoke(
        bag_cli.main,
        "record-dataset",
        "--data",
        root / "data",
        "--split",
        "val",
        "--out",
        bag,
        "--cameras",
        ",".join(CAMERAS),
    )
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    return root, checkpoint, root / "data", bag


def test_rig_bag_holds_each_camera_s_own_view_and_ground_truth(rig):
    """Camera k shows scene (i + k) mod n at frame i, mirrored when k is odd; its ground truth
    is transformed alike; every camera's frames share the stamps."""
    _, _, data, bag = rig
    dataset = CityscapesDataset(data, "val", CLASS_MAP)
    store = typestore()
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {
            f"/{name}/{topic}": FRAMES
            for name in CAMERAS
            for topic in ("image", "ground_truth/semantic", "ground_truth/detections")
        }
        stamps: dict[str, list[int]] = {}
        for connection, timestamp, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            name = connection.topic.split("/")[1]
            assert message.header.frame_id == name
            k = CAMERAS.index(name)
            frame = len(stamps.setdefault(connection.topic, []))
            stamps[connection.topic].append(timestamp)
            sample = dataset.load((frame + k) % FRAMES)
            flip = (lambda a: a[:, ::-1]) if k % 2 else (lambda a: a)
            if connection.topic.endswith("/image"):
                image = np.asarray(message.data).reshape(256, 512, 3)
                assert np.array_equal(image, flip(sample.image))
            elif connection.topic.endswith("/semantic"):
                mask = np.asarray(message.data).reshape(256, 512)
                assert np.array_equal(mask, flip(CLASS_MAP.to_published(sample.segmentation)))
            else:
                boxes = [
                    (d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.size_x)
                    for d in message.detections
                ]
                expected = [
                    (512 - x1 if k % 2 else x0, x1 - x0) for x0, _, x1, _ in sample.boxes.tolist()
                ]
                assert len(boxes) == len(expected) > 0
                np.testing.assert_allclose(np.array(boxes), np.array(expected), atol=1e-3)
    assert len({tuple(s) for s in stamps.values()}) == 1  # a synchronised rig


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _evaluate(bag: Path, checkpoint: Path, out: Path, *options: object):
    return run_module(
        "mtl_perception.ros.bags.cli",
        "evaluate",
        "--bag",
        bag,
        "--checkpoint",
        checkpoint,
        "--out",
        out,
        "--as-fast-as-possible",
        *options,
        env=ros_environment(),
    )


@pytest.mark.ros
@pytest.mark.slow
def test_rig_evaluation_repeats_each_camera_alone_and_adds_them_up(rig):
    """One node serves both cameras (replayed at once); each camera's report has the accuracy
    figures of that camera evaluated alone by a one-camera node (its topics named); the total
    adds the cameras' counts up, and the criteria judge the total."""
    root, checkpoint, _, bag = rig
    out = root / "evaluate_rig"
    both = _evaluate(bag, checkpoint, out, "--fail-under", "coverage=1.0,miou=99")
    # every frame of both cameras has outputs, mIoU is under 99%: the total fails on miou only
    assert both.code == 1, both.stdout + both.stderr
    failed = both.stdout[both.stdout.index("gate: FAIL") :]
    assert "--fail-under miou=99" in failed and "coverage" not in failed
    lines = both.stdout.splitlines()
    for name in (*CAMERAS, "total"):
        assert any(line.startswith(f"| {name} | ") for line in lines), both.stdout
    total = _report(out)
    assert [c["name"] for c in total["cameras"]] == list(CAMERAS)
    criteria = {c["criterion"]: c for c in total["criteria"]}
    assert criteria["--fail-under miou=99"]["value"] == pytest.approx(100 * total["miou"])
    parts = []
    for name in CAMERAS:
        mine = _report(out / "cameras" / name)
        assert mine["gate"] is None  # the cameras are not judged one by one
        assert mine["camera_topic"] == f"/{name}/image"
        assert mine["node_counters"]["received"] == FRAMES
        assert mine["node_counters"]["processed"] == FRAMES
        alone = root / f"alone_{name}"
        single = _evaluate(
            bag,
            checkpoint,
            alone,
            "--camera-topic",
            f"/{name}/image",  # its ground truth, /<name>/ground_truth/..., found by the name
        )
        assert single.code == 0, single.stdout + single.stderr
        theirs = _report(alone)
        for key in ACCURACY_KEYS:
            assert mine[key] == theirs[key], (name, key)
        parts.append(mine)
    assert parts[0]["segmentation_confusion"] != parts[1]["segmentation_confusion"]
    assert total["frames_sent"] == total["frames_scored"] == 2 * FRAMES
    assert total["coverage"] == 1.0
    pixels = sum(np.array(p["segmentation_confusion"]["counts"]) for p in parts)
    assert total["segmentation_confusion"]["counts"] == pixels.tolist()
    for cls in total["detection_counts"]:
        for key in ("tp", "fp", "fn"):
            assert total["detection_counts"][cls][key] == sum(
                p["detection_counts"][cls][key] for p in parts
            )
    assert total["node_counters"]["received"] == 2 * FRAMES
    records = [json.loads(line) for line in (out / "frames.jsonl").open()]
    assert [r["camera"] for r in records] == ["front"] * FRAMES + ["rear"] * FRAMES
    markdown = (out / "report.md").read_text()
    assert "| front |" in markdown and "| total |" in markdown
    # a stored rig run (mtl-bag run's layout: one output bag per camera) scores to the same
    # report without a node
    stored = root / "stored_run"
    for name in CAMERAS:
        shutil.copytree(out / "cameras" / name / "outputs_bag", stored / name)
    rescored = invoke(bag_cli.main, "score", "--run", stored, "--out", root / "rescored")
    assert rescored.code == 0, rescored.stdout + rescored.stderr
    again = _report(root / "rescored")
    for key in (*ACCURACY_KEYS, "cameras", "node_counters", "latency_ms"):
        assert again[key] == total[key], key
    # the report folder itself is accepted as --run (its cameras' output bags)
    folder = invoke(bag_cli.main, "score", "--run", out, "--out", root / "from_folder")
    assert folder.code == 0, folder.stdout + folder.stderr
    assert _report(root / "from_folder")["miou"] == total["miou"]
    # one camera's output bag alone is scored against THAT camera's ground truth
    for name in CAMERAS:
        alone = invoke(
            bag_cli.main,
            "score",
            "--run",
            out / "cameras" / name / "outputs_bag",
            "--out",
            root / f"one_{name}",
        )
        assert alone.code == 0, alone.stdout + alone.stderr
        one, mine = _report(root / f"one_{name}"), _report(out / "cameras" / name)
        assert one["frames_scored"] == FRAMES
        for key in ACCURACY_KEYS:
            assert one[key] == mine[key], (name, key)


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--cameras", "0"], ["--cameras", "1 to"]),
        (["--cameras", "front,rear,front"], ["--cameras", "front", "more than once"]),
        (["--cameras", "front,2x"], ["--cameras", "'2x' is not a camera name", "in 'front,2x'"]),
        (["--cameras", "2", "--camera-topic", "/cam"], ["--cameras", "--camera-topic"]),
    ],
)
def test_bad_cameras_are_one_line_and_exit_2(rig, tmp_path, options, mentions):
    _, _, data, _ = rig
    outcome = invoke(
        bag_cli.main,
        "record-dataset",
        "--data",
        data,
        "--out",
        tmp_path / "bag",
        *options,
    )
    assert_refused(outcome, *mentions)
    assert not (tmp_path / "bag").exists()


def test_a_rig_bag_among_several_is_refused_in_one_line(rig, tmp_path):
    _, checkpoint, _, bag = rig
    (tmp_path / "bags").mkdir()
    shutil.copytree(bag, tmp_path / "bags" / "rig")
    outcome = invoke(
        bag_cli.main,
        "evaluate",
        "--bag",
        tmp_path / "bags",
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "out",
    )
    assert_refused(outcome, "rig", "--bag")
    assert not (tmp_path / "out").exists()
