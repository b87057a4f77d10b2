"""Recording datasets to rosbag2 and evaluating the live node on bags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import assert_refused, invoke
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from vision_msgs.msg import Detection2DArray

from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.labels import ClassMap
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.read import BagTopics, GroundTruth, RunOutputs, read_camera
from mtl_perception.ros.bags.record import START_NS, record_dataset, typestore
from mtl_perception.ros.bags.score import score_run

CLASS_MAP = ClassMap.from_yaml()


def _mtl_bag_evaluate(
    bag: Path, checkpoint: Path | str, out: Path, *options: str, timeout: int = 300
):
    """Runs ``mtl-bag evaluate`` (it isolates its own network namespace) and returns the result."""
    command = [
        sys.executable,
        "-m",
        "mtl_perception.ros.bags.cli",
        "evaluate",
        "--bag",
        str(bag),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        *options,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bag_data")
    write_dataset(root, {"val": 3}, seed=12, width=512, height=256, progress=False)
    return root


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recorded_bag_reads_back_message_for_message(data, tmp_path, storage):
    bag = tmp_path / f"val_{storage}"
    assert record_dataset(data, "val", bag, storage=storage, rate=5.0, progress=False) == 3
    store = typestore()
    dataset = CityscapesDataset(data, "val", CLASS_MAP)
    with Reader(bag) as reader:
        assert {c.topic: c.msgcount for c in reader.connections} == {
            "/camera/image_raw": 3,
            "/ground_truth/semantic": 3,
            "/ground_truth/detections": 3,
        }
        assert all(c.msgdef.data for c in reader.connections)  # definitions embedded
        seen = small = 0
        for connection, timestamp, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            index = round((timestamp - START_NS) / 2e8)  # 5 Hz
            assert timestamp == START_NS + index * 200_000_000
            assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == timestamp
            sample = dataset.load(index)
            if connection.topic == "/camera/image_raw":
                assert message.encoding == "rgb8"
                assert np.array_equal(np.asarray(message.data).reshape(256, 512, 3), sample.image)
            elif connection.topic == "/ground_truth/semantic":
                expected = np.where(sample.segmentation == 0, 255, sample.segmentation)
                assert np.array_equal(np.asarray(message.data).reshape(256, 512), expected)
            else:
                # The same bytes read by rclpy with our vision_msgs: field for field.
                ours = deserialize_message(bytes(raw), Detection2DArray)
                assert len(ours.detections) == len(message.detections) > 0
                for a, b in zip(ours.detections, message.detections, strict=True):
                    assert a.bbox.center.position.x == b.bbox.center.position.x
                    assert (a.bbox.size_x, a.bbox.size_y) == (b.bbox.size_x, b.bbox.size_y)
                    assert a.results[0].hypothesis.class_id == b.results[0].hypothesis.class_id
                    assert a.results[0].hypothesis.score == b.results[0].hypothesis.score == 1.0
                    assert list(a.results[0].pose.covariance) == list(b.results[0].pose.covariance)
                    assert a.header.frame_id == b.header.frame_id == "camera" and a.id == b.id
                boxes = np.array(
                    [
                        [
                            d.bbox.center.position.x - d.bbox.size_x / 2,
                            d.bbox.center.position.y - d.bbox.size_y / 2,
                            d.bbox.center.position.x + d.bbox.size_x / 2,
                            d.bbox.center.position.y + d.bbox.size_y / 2,
                        ]
                        for d in ours.detections
                    ]
                )
                # EVERY ground-truth box: the scorer decides which count (counted_boxes at the
                # scored model's input width), not the recorder.
                assert np.allclose(boxes, sample.boxes)
                small += int(((sample.boxes[:, 2:] - sample.boxes[:, :2]) < 4 * 512 / 768).any())
                classes = [int(d.results[0].hypothesis.class_id) for d in ours.detections]
                assert classes == sample.classes.tolist()
            seen += 1
    assert seen == 9
    assert small > 0  # boxes the old fixed-width rule left out of the bag are in it


@pytest.mark.ros
@pytest.mark.slow
def test_bag_evaluation_reports_what_mtl_eval_reports(data, tmp_path):
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    bag = tmp_path / "val_bag"
    record_dataset(data, "val", bag, progress=False)
    out = tmp_path / "report"
    result = _mtl_bag_evaluate(
        bag, str(checkpoint), out, "--as-fast-as-possible", "--output-bag", timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    offline = tmp_path / "offline"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.evaluation",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--split",
            "val",
            "--out",
            str(offline),
        ],
        check=True,
        capture_output=True,
    )
    reference = json.loads((offline / "metrics.json").read_text())
    assert report["frames_with_output"] == report["frames_scored"] == 3
    assert report["miou"] == pytest.approx(reference["miou"], abs=1e-12) and report["miou"] > 0
    assert report["map"] == pytest.approx(reference["map"], abs=1e-12)
    assert report["iou"] == pytest.approx(reference["iou"], abs=1e-12)
    assert report["latency_ms"]["p50"] > 0 and report["node_counters"]["processed"] == 3
    for name in ("report.md", "latency_histogram.png", "node.log"):
        assert (out / name).is_file(), name
    assert len(list(out.glob("overlay_*.png"))) == 3
    with Reader(out / "outputs_bag") as reader:
        assert {c.topic for c in reader.connections} == {
            "/perception_node/semantic",
            "/perception_node/detections",
            "/diagnostics",
            "/mtl_bag/run",
        }
    assert "Mean IoU (mIoU)" in (out / "report.md").read_text() and "Mean IoU" in result.stdout


@pytest.mark.ros
@pytest.mark.slow
def test_camera_only_bag_is_evaluated_for_speed(data, tmp_path):
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    full = tmp_path / "full"
    record_dataset(data, "val", full, progress=False)
    camera_only = tmp_path / "camera_only"
    with (
        Reader(full) as reader,
        Writer(camera_only, version=9, storage_plugin=StoragePlugin.MCAP) as writer,
    ):
        (camera,) = [c for c in reader.connections if c.topic == "/camera/image_raw"]
        connection = writer.add_connection(camera.topic, camera.msgtype, typestore=typestore())
        for _, timestamp, raw in reader.messages(connections=[camera]):
            writer.write(connection, timestamp, raw)
    out = tmp_path / "speed"
    result = _mtl_bag_evaluate(
        camera_only, str(checkpoint), out, "--rate-factor", "2.0", timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["miou"] is None and report["map"] is None
    # At 2x the bag's 10 Hz the node may drop frames while busy (latest wins): every frame is
    # accounted for either way.
    counters = {k: int(v) for k, v in report["node_counters"].items()}
    assert counters["received"] == 3 == counters["processed"] + counters["dropped"]
    assert report["frames_with_output"] == counters["processed"] >= 1
    assert report["latency_ms"]["max"] > 0
    assert "speed and outputs only" in (out / "report.md").read_text()


def test_corrupt_missing_topic_and_unknown_bags_give_clear_errors(data, tmp_path):
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    bag = tmp_path / "bag"
    record_dataset(data, "val", bag, progress=False)
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])  # truncated
    with pytest.raises(ValueError, match="cannot read bag"):
        read_camera(bag)
    result = _mtl_bag_evaluate(bag, str(checkpoint), tmp_path / "out", timeout=120)
    assert (
        result.returncode == 2
        and "cannot read bag" in result.stderr
        and "Traceback" not in result.stderr
    ), result.stderr
    assert not (tmp_path / "out").exists()
    other = tmp_path / "other"
    record_dataset(data, "val", other, progress=False)
    with pytest.raises(
        ValueError,
        match=r"no camera topic /front/image .*/camera/image_raw \(sensor_msgs/msg/Image\)",
    ):
        read_camera(other, BagTopics(camera="/front/image"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot read bag: not a rosbag2 folder"):
        read_camera(tmp_path / "empty")
    with pytest.raises(ValueError, match="bag not found"):
        read_camera(tmp_path / "nowhere")


def test_scoring_counts_ground_truth_boxes_at_the_node_input_width():
    """The bag holds every box; the scorer leaves out what counted_boxes leaves out at the
    input width the node runs at (min_box_size 4 network px: a 3-px box in a 128-px image counts
    at input width 256, not at 128)."""
    big, small = [10.0, 10.0, 50.0, 40.0], [60.0, 10.0, 63.0, 13.0]
    frame = {"index": 0, "stamp": 1, "bag_stamp": 1, "size": [64, 128], "rejected": None}
    truth = GroundTruth(
        Path("bag"), None, "/boxes", boxes={1: [(np.array([big, small]), np.array([0, 0]))]}
    )

    def run_at(input_width: int) -> RunOutputs:
        info = {
            "frames": [{**frame, "sent": 0}],
            "node": {"parameters": {"input_width": input_width}},
        }
        return RunOutputs(
            Path("out"),
            info,
            masks={1: np.zeros((64, 128), np.uint8)},
            detections={1: (np.array([big]), np.array([0.9]), np.array([0]))},
            mask_received={1: 100},
            detections_received={1: 100},
        )

    assert CLASS_MAP.min_box_size == 4
    first = CLASS_MAP.det_names[0]
    assert score_run(run_at(128), truth, CLASS_MAP)[0]["ap"][first] == pytest.approx(1.0)
    assert score_run(run_at(256), truth, CLASS_MAP)[0]["ap"][first] < 0.9


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_refusal(tmp_path, where):
    argv = ["evaluate", "--bag", tmp_path / "nowhere", "--checkpoint", tmp_path / "x.pt"]
    argv += ["--out", tmp_path / "out"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    outcome = invoke(bag_cli.main, *argv)
    assert outcome.code == 2 and "Traceback" in outcome.stderr
    assert outcome.error_lines == [
        f"error: checkpoint not found: {tmp_path / 'x.pt'} (--checkpoint)"
    ]


def test_an_unreadable_bag_among_several_is_refused_before_any_run(data, tmp_path):
    """mtl-bag evaluate over a folder of bags reads every bag's metadata before it starts a run
    (a camera rig among them is refused there too): an unreadable bag is one line naming that
    bag and the problem, exit 2, and --out is not written."""
    checkpoint = save_model(tmp_path / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    broken = tmp_path / "bags" / "broken"
    broken.mkdir(parents=True)
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
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
    assert_refused(outcome, "cannot read bag", str(broken), "--bag")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.logs").exists()
