"""Bad and unusual inputs to ``mtl-bag record-dataset`` and ``mtl-bag evaluate``.

A refused case: exit 2, exactly one ``error:`` line naming the problem and the file, topic or
option, no traceback, every file that existed before byte-identical after and nothing left
behind (``Snapshot`` over the input bag, the output's parent folder and the data folder).
Refusals happen before any node starts, so they run in-process (``bag_cli.main``).

Cases that must succeed need the live node; they are grouped into four ``evaluate`` runs (a node
start costs seconds on two cores), each shared by parametrized cases: every raw encoding the
node accepts plus two frames it rejects in one bag, JPEG and PNG in one sqlite3 bag, zero and
repeated header stamps in one bag, and a node that cannot start. Those runs call ``bag_cli.main``
in-process too (the node is its subprocess either way); test/test_bags.py covers the console
path through ``python -m``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ros_environment
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import Outcome, Snapshot, assert_refused, invoke
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from vision_msgs.msg import Detection2DArray

from mtl_perception.data.cityscapes import CityscapesDataset
from mtl_perception.data.labels import ClassMap
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.model.checkpoint import read_checkpoint, save_checkpoint
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.record import START_NS, record_dataset, typestore
from mtl_perception.ros.bags.report import OVERLAY_MAX_BOXES, OVERLAY_SCORE
from mtl_perception.ros.bags.rig import check_rig_cameras, player_name
from mtl_perception.ros.messages import detections_message
from mtl_perception.visualization import draw_overlay

bad_input = pytest.mark.bad_input
WIDTH, HEIGHT = 128, 64
CAMERA = "/camera/image_raw"
SEMANTIC = "/ground_truth/semantic"
DETECTIONS = "/ground_truth/detections"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
DETECTION_ARRAY = "vision_msgs/msg/Detection2DArray"
STEP_NS = 100_000_000  # 10 Hz
PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


# -- building bags -------------------------------------------------------------------------


def header(stamp: int) -> Header:
    result = Header(frame_id="camera")
    result.stamp.sec, result.stamp.nanosec = stamp // 10**9, stamp % 10**9
    return result


def image_msg(array: np.ndarray, encoding: str, stamp: int, step: int | None = None) -> Image:
    """(H, W[, C]) uint8 -> Image; ``step`` larger than a row pads each row."""
    rows = np.ascontiguousarray(array, np.uint8).reshape(array.shape[0], -1)
    step = step or rows.shape[1]
    rows = np.pad(rows, ((0, 0), (0, step - rows.shape[1])), constant_values=77)
    return Image(
        header=header(stamp),
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=rows.tobytes(),
    )


def write_bag(path: Path, topics: dict, storage: str = "mcap") -> Path:
    """``topics``: {topic: (type, [(receive time ns, message or CDR bytes)])}."""
    store = typestore()
    with Writer(path, version=9, storage_plugin=PLUGINS[storage]) as writer:
        for topic, (msgtype, messages) in topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=store)
            for received, message in messages:
                raw = message if isinstance(message, bytes) else serialize_message(message)
                writer.write(connection, received, raw)
    return path


def scene_topics(scenes, stamps=None, *, mask=None, mask_encoding="mono8", class_id=None):
    """Camera (rgb8), ground-truth masks and detections of ``scenes`` at ``stamps`` (header),
    received 0.1 s apart; ``mask`` and ``class_id`` spoil the ground truth."""
    stamps = stamps or [START_NS + i * STEP_NS for i in range(len(scenes))]
    camera, semantic, detections = [], [], []
    for i, (scene, stamp) in enumerate(zip(scenes, stamps, strict=True)):
        received = START_NS + i * STEP_NS
        camera.append((received, image_msg(scene.image, "rgb8", stamp)))
        labels = np.where(scene.segmentation == 0, 255, scene.segmentation).astype(np.uint8)
        labels = mask(labels) if mask else labels
        if mask_encoding == "rgb8":
            labels = np.dstack([labels] * 3)
        semantic.append((received, image_msg(labels, mask_encoding, stamp)))
        boxes = detections_message(
            header(stamp), scene.boxes, np.ones(len(scene.boxes)), scene.classes
        )
        if class_id is not None:
            boxes.detections[0].results[0].hypothesis.class_id = class_id
        detections.append((received, boxes))
    return {
        CAMERA: (IMAGE, camera),
        SEMANTIC: (IMAGE, semantic),
        DETECTIONS: (DETECTION_ARRAY, detections),
    }


def uyvy(rgb: np.ndarray) -> np.ndarray:
    """RGB -> packed UYVY (sensor_msgs' yuv422), chroma averaged over pixel pairs."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.int32)
    packed = np.empty((rgb.shape[0], rgb.shape[1] * 2), np.uint8)
    packed[:, 0::4] = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) // 2
    packed[:, 1::4] = yuv[:, 0::2, 0]
    packed[:, 2::4] = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) // 2
    packed[:, 3::4] = yuv[:, 1::2, 0]
    return packed.reshape(rgb.shape[0], rgb.shape[1], 2)


def bayer_rggb(rgb: np.ndarray) -> np.ndarray:
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


# -- shared inputs (module scope) ----------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bag_tools_data")
    write_dataset(root, {"val": 3}, seed=4, width=WIDTH, height=HEIGHT, progress=False)
    return root


@pytest.fixture(scope="module")
def scenes(data) -> list:
    dataset = CityscapesDataset(data, "val", ClassMap.from_yaml())
    return [dataset.load(i) for i in range(len(dataset))]


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """(H, W, 3) RGB: smooth ramps with red and blue far apart, so a red/blue swap shows and
    chroma subsampling (yuv422, Bayer, JPEG) does not."""
    x = np.linspace(0, 1, WIDTH)[None, :]
    y = np.linspace(0, 1, HEIGHT)[:, None]
    red = 30 + 200 * x + 0 * y
    green = 60 + 120 * y + 0 * x
    blue = 230 - 200 * x + 0 * y
    return np.dstack([red, green, blue]).round().astype(np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bag_tools_model")
    return save_model(root / "model.pt", calibrated_small_model(config=SMALL_NAMED))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, data) -> Path:
    """A valid bag written by record-dataset (read only; cases copy it to spoil it)."""
    bag = tmp_path_factory.mktemp("bag_tools_recorded") / "bag"
    record_dataset(data, "val", bag, progress=False)
    return bag


@dataclass
class Case:
    tmp: Path
    data: Path
    scenes: list
    checkpoint: Path
    recorded: Path

    @property
    def out(self) -> Path:
        parent = self.tmp / "reports"
        parent.mkdir(exist_ok=True)
        return parent / "report"


@pytest.fixture
def case(tmp_path, data, scenes, checkpoint, recorded) -> Case:
    return Case(tmp_path, data, scenes, checkpoint, recorded)


def refused(argv: list, mentions: list[str], roots: list[Path], allow_new=()) -> str:
    """Runs ``mtl-bag argv`` in-process; asserts the refusal and that nothing changed."""
    snapshot = Snapshot(*roots)
    line = assert_refused(invoke(bag_cli.main, *argv), *mentions)
    snapshot.assert_unchanged(allow_new)
    return line


# -- record-dataset ------------------------------------------------------------------------


@bad_input
@pytest.mark.parametrize(
    ("rate", "mention"),
    [
        ("inf", "expected a finite number"),
        ("nan", "expected a finite number"),
        ("0", "must be > 0"),
        ("-2", "must be > 0"),
        ("1e12", "stamps would repeat"),
        ("1e-9", "2038"),
    ],
)
def test_record_refuses_a_rate_that_cannot_stamp_frames(case, rate, mention):
    out = case.out
    refused(
        ["record-dataset", "--data", case.data, "--out", out, f"--rate={rate}"],
        ["--rate", mention],
        [case.data, out.parent],
    )
    assert not out.exists()


@bad_input
@pytest.mark.parametrize("kind", ["folder with content", "file", "parent is a file"])
def test_record_refuses_an_out_that_collides_before_reading_the_data(case, kind):
    parent = case.out.parent
    if kind == "folder with content":
        out = parent / "bag"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        mention = "not empty"
    elif kind == "file":
        out = parent / "bag"
        out.write_text("mine")
        mention = "existing file"
    else:
        (parent / "plain").write_text("mine")
        out = parent / "plain" / "bag"
        mention = "is a file"
    # --data does not exist: the output is refused first, before anything reads the dataset
    refused(
        ["record-dataset", "--data", case.tmp / "nowhere", "--out", out],
        ["--out", str(out), mention],
        [parent],
    )


@bad_input
def test_record_refuses_a_missing_dataset_and_an_empty_split(case):
    out = case.out
    refused(
        ["record-dataset", "--data", case.tmp / "nowhere", "--out", out],
        ["does not exist", "nowhere"],
        [out.parent],
    )
    refused(
        ["record-dataset", "--data", case.data, "--split", "test", "--out", out],
        ["no images", "split 'test'"],
        [case.data, out.parent],
    )


@bad_input
def test_record_failing_half_way_leaves_nothing_and_a_rerun_works(case):
    data = case.tmp / "data"
    shutil.copytree(case.data, data)
    images = sorted((data / "leftImg8bit" / "val").glob("*/*.png"))
    good = images[1].read_bytes()
    images[1].write_bytes(good[: len(good) // 3])  # the second frame is unreadable
    out = case.out
    refused(
        ["record-dataset", "--data", data, "--out", out],
        ["unreadable image", images[1].name],
        [data, out.parent],
    )
    assert not out.exists() and list(out.parent.iterdir()) == []  # no torn bag, no temporary
    images[1].write_bytes(good)
    outcome = invoke(bag_cli.main, "record-dataset", "--data", data, "--out", out)
    assert outcome.code == 0, outcome.stderr
    with Reader(out) as reader:
        assert {c.topic: c.msgcount for c in reader.connections}[CAMERA] == 3


@bad_input
def test_record_refuses_labels_of_another_size_and_leaves_nothing(case):
    data = case.tmp / "data"
    shutil.copytree(case.data, data)
    (label,) = sorted((data / "gtFine" / "val").glob("*/*_labelIds.png"))[2:3]
    cv2.imwrite(str(label), np.zeros((HEIGHT // 2, WIDTH // 2), np.uint8))
    out = case.out
    refused(
        ["record-dataset", "--data", data, "--out", out],
        ["sizes must match", label.name],
        [data, out.parent],
    )
    assert list(out.parent.iterdir()) == []


@bad_input
def test_record_refuses_a_16_bit_label_value_above_255_and_leaves_nothing(case):
    """The finding: a 16-bit labelIds PNG with value 300 raised IndexError in record-dataset."""
    data = case.tmp / "data"
    shutil.copytree(case.data, data)
    (label,) = sorted((data / "gtFine" / "val").glob("*/*_labelIds.png"))[1:2]
    values = cv2.imread(str(label), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    values[3, 5] = 300
    cv2.imwrite(str(label), values)
    out = case.out
    refused(
        ["record-dataset", "--data", data, "--out", out], ["300", label.name], [data, out.parent]
    )
    assert list(out.parent.iterdir()) == []


@bad_input
@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--classes", "{nowhere}"], ["class map", "nowhere"]),
        (["--classes", "{bad_yaml}"], ["class map", "bad.yaml"]),
        (["--camera-topic", "camera image"], ["--camera-topic", "not an absolute ROS 2 topic"]),
        (["--semantic-topic", "/9gt"], ["--semantic-topic", "not an absolute ROS 2 topic"]),
        (["--storage", "rosbag1"], ["--storage", "invalid choice"]),
        (
            ["--camera-topic", "/x", "--semantic-topic", "/x"],
            ["--camera-topic and --semantic-topic name the same topic /x"],
        ),
        (["--out", ""], ["--out", "an empty path"]),
    ],
    ids=[
        "classes-missing",
        "classes-not-yaml",
        "camera-topic",
        "semantic-topic",
        "storage",
        "same-topic",
        "empty-out",
    ],
)
def test_record_refuses_bad_options(case, options, mentions):
    (case.tmp / "bad.yaml").write_text("segmentation: [unclosed\n")
    paths = {"nowhere": case.tmp / "nowhere.yaml", "bad_yaml": case.tmp / "bad.yaml"}
    options = [o.format(**paths) for o in options]
    refused(
        ["record-dataset", "--data", case.data, "--out", case.out, *options],
        mentions,
        [case.data, case.out.parent],
    )


# -- evaluate: refused before the node starts ------------------------------------------------


def evaluate_argv(case: Case, bag: Path, *options) -> list:
    return ["evaluate", "--bag", bag, "--checkpoint", case.checkpoint, "--out", case.out, *options]


def _copy_recorded(case: Case) -> Path:
    bag = case.tmp / "bag"
    shutil.copytree(case.recorded, bag)
    return bag


def _truncated_mcap(case: Case) -> Path:
    bag = _copy_recorded(case)
    (mcap,) = bag.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return bag


def _truncated_sqlite(case: Case) -> Path:
    bag = write_bag(case.tmp / "bag", scene_topics(case.scenes), storage="sqlite3")
    (db3,) = bag.glob("*.db3")
    db3.write_bytes(db3.read_bytes()[: db3.stat().st_size // 3])
    return bag


def _metadata_only(case: Case) -> Path:
    bag = _copy_recorded(case)
    for storage in bag.glob("*.mcap"):
        storage.unlink()
    return bag


def _metadata_not_yaml(case: Case) -> Path:
    bag = _copy_recorded(case)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {unclosed\n")
    return bag


def _file_not_bag(case: Case) -> Path:
    path = case.tmp / "bag"
    path.write_text("not a bag\n")
    return path


def _empty_folder(case: Case) -> Path:
    (case.tmp / "bag").mkdir()
    return case.tmp / "bag"


def _camera_wrong_type(case: Case) -> Path:
    return write_bag(
        case.tmp / "bag", {CAMERA: ("std_msgs/msg/String", [(START_NS, String(data="x"))])}
    )


def _zero_frames(case: Case) -> Path:
    return write_bag(case.tmp / "bag", {CAMERA: (IMAGE, [])})


def _undecodable_frames(case: Case) -> Path:
    return write_bag(case.tmp / "bag", {CAMERA: (IMAGE, [(START_NS, b"\x00\x01\x00\x00junk")])})


def _gt_wrong_type(case: Case) -> Path:
    topics = scene_topics(case.scenes)
    topics[SEMANTIC] = ("std_msgs/msg/String", [(START_NS, String(data="x"))])
    return write_bag(case.tmp / "bag", topics)


def _gt_other_size(case: Case) -> Path:
    return write_bag(case.tmp / "bag", scene_topics(case.scenes, mask=lambda m: m[::2, ::2]))


def _gt_wrong_encoding(case: Case) -> Path:
    return write_bag(case.tmp / "bag", scene_topics(case.scenes, mask_encoding="rgb8"))


def _gt_mask_class(case: Case) -> Path:
    return write_bag(
        case.tmp / "bag", scene_topics(case.scenes, mask=lambda m: np.where(m == 1, 40, m))
    )


def _gt_class_name(case: Case) -> Path:
    return write_bag(case.tmp / "bag", scene_topics(case.scenes, class_id="car"))


def _gt_class_range(case: Case) -> Path:
    return write_bag(case.tmp / "bag", scene_topics(case.scenes, class_id="7"))


BAD_BAGS = {
    "bag-missing": (lambda case: case.tmp / "nowhere", [], ["bag not found", "nowhere"]),
    "bag-is-a-file": (_file_not_bag, [], ["is a file, not a rosbag2 folder", "--bag"]),
    "empty-folder": (_empty_folder, [], ["holds no bag (no metadata.yaml", "--bag"]),
    "metadata-without-storage": (_metadata_only, [], ["cannot read bag", "missing", ".mcap"]),
    "metadata-not-yaml": (_metadata_not_yaml, [], ["cannot read bag", "metadata.yaml"]),
    "truncated-mcap": (_truncated_mcap, [], ["cannot read bag", "truncated", "--bag"]),
    "truncated-sqlite3": (_truncated_sqlite, [], ["cannot read bag", ".db3"]),
    "camera-wrong-type": (
        _camera_wrong_type,
        [],
        [CAMERA, "carries std_msgs/msg/String", "expected sensor_msgs/msg/Image or"],
    ),
    "camera-topic-missing": (
        lambda case: _copy_recorded(case),
        ["--camera-topic", "/front/image"],
        ["no camera topic /front/image", f"{CAMERA} ({IMAGE})", "--camera-topic"],
    ),
    "zero-frames": (_zero_frames, [], ["no frames on /camera/image_raw", "--bag"]),
    "undecodable-frames": (_undecodable_frames, [], ["no frames", "1 undecodable"]),
    "semantic-topic-missing": (
        lambda case: _copy_recorded(case),
        ["--semantic-topic", "/labels"],
        ["no ground-truth topic /labels", f"{SEMANTIC} ({IMAGE})", "--semantic-topic"],
    ),
    "semantic-wrong-type": (_gt_wrong_type, [], [SEMANTIC, "carries std_msgs/msg/String"]),
    "gt-mask-other-size": (_gt_other_size, [], ["is 64x32 but its camera frame is 128x64"]),
    "gt-mask-encoding": (_gt_wrong_encoding, [], ["encoding 'rgb8', expected mono8", SEMANTIC]),
    "gt-mask-class": (_gt_mask_class, [], ["class id 40", "12 segmentation classes", SEMANTIC]),
    "gt-class-not-a-number": (_gt_class_name, [], ["class_id 'car'", DETECTIONS]),
    "gt-class-out-of-range": (_gt_class_range, [], ["class id 7", "3 detection", DETECTIONS]),
}


@bad_input
@pytest.mark.parametrize("name", list(BAD_BAGS))
def test_evaluate_refuses_a_bad_bag_before_the_node_starts(case, name):
    build, options, mentions = BAD_BAGS[name]
    bag = build(case)
    refused(evaluate_argv(case, bag, *options), mentions, [bag, case.out.parent, case.data])
    assert not case.out.exists()


@bad_input
@pytest.mark.parametrize("kind", ["folder with content", "file", "inside the bag"])
def test_evaluate_refuses_an_out_that_collides(case, kind):
    bag = _copy_recorded(case)
    parent = case.out.parent
    if kind == "folder with content":
        out = parent / "report"
        out.mkdir()
        (out / "report.md").write_text("an earlier report")
        mention = "not empty"
    elif kind == "file":
        out = parent / "report"
        out.write_text("mine")
        mention = "existing file"
    else:
        out = bag / "report"
        mention = "inside the bag"
    argv = ["evaluate", "--bag", bag, "--checkpoint", case.checkpoint, "--out", out]
    refused(argv, ["--out", mention], [bag, parent])


NODE_PARAMS = {
    "missing": (None, ["--node-params not found", "nowhere.yaml"]),
    "not-yaml": ("/**:\n  ros__parameters: {unclosed\n", ["not valid YAML", "--node-params"]),
    "not-ros-layout": ("score_threshold: 0.5\n", ["no 'ros__parameters'", "--node-params"]),
    "unknown-name": (  # in the node's own section (under /** it is another node's key)
        "perception_node:\n  ros__parameters:\n    score_treshold: 0.5\n",
        ["unknown parameter 'score_treshold'", "--node-params"],
    ),
    "int-for-float": (
        "perception_node:\n  ros__parameters:\n    score_threshold: 1\n",
        ["parameter 'score_threshold' must be a float", "--node-params"],
    ),
    "bad-choice": (
        "/**:\n  ros__parameters:\n    precision: fp64\n",
        ["parameter 'precision' must be one of", "--node-params"],
    ),
    "named-cameras": (
        "/**:\n  ros__parameters:\n    cameras: [front]\n",
        ["parameter 'cameras'", "the bag decides the cameras", "--node-params"],
    ),
    "cameras-not-a-list": (
        "/**:\n  ros__parameters:\n    cameras: front\n",
        ["parameter 'cameras' must be a list of strings", "--node-params"],
    ),
}


def test_the_packaged_parameter_file_is_accepted_as_node_params():
    """config/perception.yaml holds every node parameter, the cameras list included (an
    outside tester found it refused: 'cameras' was checked as a string)."""
    from mtl_perception.resources import config_file
    from mtl_perception.ros.bags.settings import read_node_params

    parameters = read_node_params(config_file("perception.yaml"))
    assert parameters["cameras"] == [""]


@bad_input
@pytest.mark.parametrize("name", list(NODE_PARAMS))
def test_evaluate_refuses_bad_node_params_before_the_node_starts(case, name):
    text, mentions = NODE_PARAMS[name]
    params = case.tmp / ("nowhere.yaml" if text is None else "params.yaml")
    if text is not None:
        params.write_text(text)
    argv = evaluate_argv(case, case.recorded, "--node-params", params)
    refused(argv, mentions, [case.recorded, case.out.parent, case.tmp])


def _other_classes(case: Case) -> Path:
    content = read_checkpoint(case.checkpoint)
    content["model_config"]["det_class_names"] = ["Car", "Person", "Bike"]
    path = case.tmp / "other_classes.pt"
    save_checkpoint(path, {k: v for k, v in content.items() if k != "format"})
    return path


def _truncated_checkpoint(case: Case) -> Path:
    path = case.tmp / "truncated.pt"
    path.write_bytes(case.checkpoint.read_bytes()[:5000])
    return path


CHECKPOINTS = {
    "missing": (lambda case: case.tmp / "nowhere.pt", ["checkpoint not found", "--checkpoint"]),
    "truncated": (_truncated_checkpoint, ["not a readable checkpoint", "--checkpoint"]),
    "classes-differ": (
        _other_classes,
        ["does not match the dataset's class map", "Bike", "--classes"],
    ),
}


@bad_input
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_evaluate_refuses_a_bad_checkpoint_before_the_node_starts(case, name):
    build, mentions = CHECKPOINTS[name]
    checkpoint = build(case)
    argv = ["evaluate", "--bag", case.recorded, "--checkpoint", checkpoint, "--out", case.out]
    refused(argv, mentions, [case.recorded, case.out.parent, case.tmp])


@bad_input
@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        (["--overlays", "-1"], ["--overlays", "must be >= 0"]),
        (["--rate-factor", "0"], ["--rate-factor", "must be > 0"]),
        (["--rate-factor", "inf"], ["--rate-factor", "finite"]),
        (["--rate-factor", "nan"], ["--rate-factor", "finite"]),
        (["--rate-factor", "2", "--as-fast-as-possible"], ["not allowed with"]),
        (["--classes", "{tmp}/nowhere.yaml"], ["class map", "nowhere.yaml"]),
        (["--detections-topic", "boxes"], ["--detections-topic", "not an absolute"]),
    ],
    ids=[
        "overlays-negative",
        "rate-factor-0",
        "rate-factor-inf",
        "rate-factor-nan",
        "rate-and-fast",
        "classes-missing",
        "relative-topic",
    ],
)
def test_evaluate_refuses_bad_options(case, options, mentions):
    options = [o.format(tmp=case.tmp) for o in options]
    argv = evaluate_argv(case, case.recorded, *options)
    refused(argv, mentions, [case.recorded, case.out.parent, case.data])


# -- evaluate: the live node -------------------------------------------------------------------


def run_evaluate(bag: Path, checkpoint: Path, out: Path, *options) -> Outcome:
    """``mtl-bag evaluate`` in this process (the node is a subprocess either way), with a
    ROS_DOMAIN_ID of its own."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros_environment().items():
            patch.setenv(key, value)
        return invoke(
            bag_cli.main,
            "evaluate",
            "--bag",
            bag,
            "--checkpoint",
            checkpoint,
            "--out",
            out,
            *options,
        )


def overlay(out: Path, stamp: int) -> np.ndarray:
    path = out / f"overlay_{stamp}.png"
    assert path.is_file(), (
        f"no overlay {path.name}; report: {sorted(p.name for p in out.iterdir())}"
    )
    return cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.int32)


def raw_frames(rgb: np.ndarray, stamp) -> list[tuple[str, Image]]:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    wrong_length = image_msg(rgb, "rgb8", 0)
    wrong_length.data = wrong_length.data[:-5]
    frames = [
        ("rgb8", image_msg(rgb, "rgb8", 0)),
        ("rgb8-grey", image_msg(np.dstack([grey] * 3), "rgb8", 0)),  # mono8's reference
        ("bgr8", image_msg(bgr, "bgr8", 0)),
        ("mono8", image_msg(grey, "mono8", 0)),
        ("rgb8-padded", image_msg(rgb, "rgb8", 0, step=WIDTH * 3 + 16)),
        ("rgba8", image_msg(np.dstack([rgb, alpha]), "rgba8", 0)),
        ("bgra8", image_msg(np.dstack([bgr, alpha]), "bgra8", 0)),
        ("yuv422", image_msg(uyvy(rgb), "yuv422", 0)),
        ("bayer_rggb8", image_msg(bayer_rggb(rgb), "bayer_rggb8", 0)),
        ("rgb16", image_msg(np.zeros((HEIGHT, WIDTH, 6), np.uint8), "rgb16", 0)),
        ("wrong-data-length", wrong_length),
    ]
    for i, (_, message) in enumerate(frames):
        message.header = header(stamp(i))
    return frames


@pytest.fixture(scope="module")
def encodings_run(tmp_path_factory, picture, checkpoint):
    """One bag on a non-default topic with a frame in every raw encoding the node accepts and
    two it rejects; one evaluate run."""
    root = tmp_path_factory.mktemp("bag_tools_encodings")
    frames = raw_frames(picture, lambda i: START_NS + i * STEP_NS)
    topic = "/front/image_color"
    bag = write_bag(
        root / "bag",
        {topic: (IMAGE, [(START_NS + i * STEP_NS, m) for i, (_, m) in enumerate(frames)])},
    )
    out = root / "report"
    snapshot = Snapshot(bag)
    outcome = run_evaluate(
        bag,
        checkpoint,
        out,
        "--camera-topic",
        topic,
        "--as-fast-as-possible",
        "--overlays",
        "20",
        "--output-bag",
    )
    snapshot.assert_unchanged()
    stamps = {name: START_NS + i * STEP_NS for i, (name, _) in enumerate(frames)}
    return outcome, out, stamps


LOSSLESS = {  # encoding -> the frame whose overlay it must equal pixel for pixel
    "rgb8": "rgb8",
    "bgr8": "rgb8",
    "rgb8-padded": "rgb8",
    "rgba8": "rgb8",
    "bgra8": "rgb8",
    "mono8": "rgb8-grey",
}
LOSSY = ("yuv422", "bayer_rggb8")  # drawn on the scene's colours, not their red/blue swap


def node_outputs(out: Path, stamp: int) -> tuple[np.ndarray, ...]:
    """The node's mask and detections for ``stamp``, from the run's output bag."""
    mask = detections = None
    with Reader(out / "outputs_bag") as reader:
        for connection, _, raw in reader.messages():
            if connection.topic.endswith("/semantic"):
                message = deserialize_message(raw, Image)
                if message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == stamp:
                    mask = np.frombuffer(message.data, np.uint8).reshape(HEIGHT, WIDTH)
            elif connection.topic.endswith("/detections"):  # not /diagnostics, /mtl_bag/run
                message = deserialize_message(raw, Detection2DArray)
                if message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == stamp:
                    detections = message.detections
    assert mask is not None and detections is not None, f"no outputs at {stamp}"
    boxes = np.array(
        [
            [
                d.bbox.center.position.x - d.bbox.size_x / 2,
                d.bbox.center.position.y - d.bbox.size_y / 2,
                d.bbox.center.position.x + d.bbox.size_x / 2,
                d.bbox.center.position.y + d.bbox.size_y / 2,
            ]
            for d in detections
        ]
    ).reshape(-1, 4)
    scores = np.array([d.results[0].hypothesis.score for d in detections])
    classes = np.array([int(d.results[0].hypothesis.class_id) for d in detections], np.int64)
    return mask, boxes, scores, classes


def assert_true_colours(out: Path, stamp: int, scene: np.ndarray, what: str) -> None:
    """The report's overlay of a lossy frame is drawn on the scene's colours, not on the scene
    with red and blue swapped: both candidates are drawn here with the node's own outputs."""
    mask, boxes, scores, classes = node_outputs(out, stamp)
    keep = np.argsort(-scores)[:OVERLAY_MAX_BOXES]
    keep = keep[scores[keep] >= OVERLAY_SCORE]

    def drawn(image: np.ndarray) -> np.ndarray:
        picture = draw_overlay(
            np.ascontiguousarray(image),
            mask,
            boxes[keep],
            classes[keep],
            scores[keep],
            SMALL_NAMED.det_class_names,
            SMALL_NAMED.num_seg_classes,
        )
        return cv2.cvtColor(picture, cv2.COLOR_RGB2BGR).astype(np.int32)

    picture = overlay(out, stamp)
    near = np.abs(picture - drawn(scene)).mean()
    swapped = np.abs(picture - drawn(scene[..., ::-1])).mean()
    assert near < 6 and near < swapped / 4, (
        f"{what}: {near:.1f} from the scene, {swapped:.1f} swapped"
    )


@bad_input
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("encoding", [*LOSSLESS, *LOSSY])
def test_every_raw_encoding_the_node_accepts_is_evaluated_with_true_colours(
    encodings_run, picture, encoding
):
    outcome, out, stamps = encodings_run
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["camera_topic"] == "/front/image_color"
    assert report["frames_sent"] == 11 and report["frames_with_output"] == 9
    shown = overlay(out, stamps[encoding])
    if encoding in LOSSLESS:
        reference = overlay(out, stamps[LOSSLESS[encoding]])
        assert np.array_equal(shown, reference), f"{encoding} overlay differs"
    else:
        assert_true_colours(out, stamps[encoding], picture, encoding)


@bad_input
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize(
    ("frame", "reason"), [("rgb16", "more than 8 bits"), ("wrong-data-length", "data length")]
)
def test_frames_the_node_rejects_are_reported_as_rejected(encodings_run, frame, reason):
    outcome, out, stamps = encodings_run
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["frames_rejected"] == 2 and report["node_counters"]["rejected"] == 2
    (rejection,) = [r for r in report["rejections"] if r["stamp"] == stamps[frame]]
    assert reason in rejection["reason"]
    assert not (out / f"overlay_{stamps[frame]}.png").exists()
    assert "2 rejected by the node" in (out / "report.md").read_text()
    assert "will be rejected by the node" in outcome.stderr and "error:" not in outcome.stderr


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory, picture, checkpoint):
    root = tmp_path_factory.mktemp("bag_tools_compressed")
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    messages = []
    for i, (fmt, extension) in enumerate((("jpeg", ".jpg"), ("png", ".png"))):
        ok, data = cv2.imencode(extension, bgr)
        assert ok
        stamp = START_NS + i * STEP_NS
        messages.append(
            (stamp, CompressedImage(header=header(stamp), format=fmt, data=data.tobytes()))
        )
    bag = write_bag(
        root / "bag", {f"{CAMERA}/compressed": (COMPRESSED, messages)}, storage="sqlite3"
    )
    out = root / "report"
    outcome = run_evaluate(bag, checkpoint, out, "--as-fast-as-possible", "--output-bag")
    return outcome, out, {"jpeg": START_NS, "png": START_NS + STEP_NS}


@bad_input
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_frames_are_evaluated_with_true_colours(
    compressed_run, encodings_run, picture, fmt
):
    outcome, out, stamps = compressed_run
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["camera_topic"] == f"{CAMERA}/compressed" and report["frames_with_output"] == 2
    _, raw_out, raw_stamps = encodings_run
    reference = overlay(raw_out, raw_stamps["rgb8"])  # the same scene, same model, as rgb8
    shown = overlay(out, stamps[fmt])
    if fmt == "png":
        assert np.array_equal(shown, reference)
    else:
        assert_true_colours(out, stamps[fmt], picture, fmt)


@pytest.fixture(scope="module")
def stamps_run(tmp_path_factory, scenes, checkpoint):
    """Five frames with ground truth; header stamps 0, 0, T, T and one unique: only the last can
    be matched to its ground truth."""
    root = tmp_path_factory.mktemp("bag_tools_stamps")
    repeated = START_NS + 5 * 10**9
    stamps = [0, 0, repeated, repeated, START_NS + 7 * 10**9]
    frames = [scenes[i % len(scenes)] for i in range(5)]
    bag = write_bag(root / "bag", scene_topics(frames, stamps))
    out = root / "report"
    outcome = run_evaluate(bag, checkpoint, out, "--as-fast-as-possible", "--overlays", "10")
    return outcome, out


@bad_input
@pytest.mark.ros
@pytest.mark.slow
def test_zero_header_stamps_are_replayed_restamped_and_left_out_of_scoring(stamps_run):
    outcome, out = stamps_run
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["frames_sent"] == report["frames_with_output"] == 5
    assert report["frames_restamped"] == 4
    assert report["ground_truth_left_out"] == {"semantic": 4, "detections": 4}
    assert report["frames_scored"] == 1 and report["miou"] is not None
    # each frame has its own overlay (re-stamped with the bag's receive time), none shared
    overlays = sorted(out.glob("overlay_*.png"))
    assert len(overlays) == 5
    assert {f"overlay_{START_NS + i * STEP_NS}.png" for i in range(2)} <= {p.name for p in overlays}
    warning = [line for line in outcome.stderr.splitlines() if line.startswith("warning:")]
    assert any("4 of 5 camera frames" in line and "header stamp" in line for line in warning)
    assert "4 of 5 camera frames" in (out / "report.md").read_text()


@bad_input
@pytest.mark.ros
@pytest.mark.slow
def test_repeated_header_stamps_keep_latency_per_frame(stamps_run):
    outcome, out = stamps_run
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["latency_ms"]["p50"] > 0 and report["node_counters"]["processed"] == 5
    repeated = START_NS + 5 * 10**9
    names = {p.name for p in out.glob("overlay_*.png")}
    assert f"overlay_{repeated}.png" not in names  # both frames were re-stamped
    assert {f"overlay_{START_NS + i * STEP_NS}.png" for i in (2, 3)} <= names
    assert f"overlay_{START_NS + 7 * 10**9}.png" in names
    assert "left out of the scoring" in (out / "report.md").read_text()


@bad_input
@pytest.mark.ros
@pytest.mark.slow
def test_a_node_that_cannot_start_is_one_error_and_its_log_is_kept(case):
    params = case.tmp / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    max_detections: 0\n")  # below its range
    out = case.out
    kept = out.parent / "report.failed-node.log"
    snapshot = Snapshot(case.recorded, out.parent, params)
    outcome = run_evaluate(case.recorded, case.checkpoint, out, "--node-params", params)
    assert_refused(outcome, "the node exited", "max_detections", str(kept))
    snapshot.assert_unchanged(allow_new=[kept])
    assert not out.exists() and "max_detections" in kept.read_text()


# -- the node's rules in the bag tools (issue 22 follow-up) -----------------------------------
# A --node-params file shared with other nodes (their keys under /** named once, typos in the
# node's own section refused), one that would override the bag's transport, and camera names
# too long for the node's topics: each refused before any node starts.

LONG = "c" * 300  # a camera name: its topics exceed the middleware's 247 characters
OWN = "perception_node:\n  ros__parameters:\n    {}: 0.3\n"
SHARED = "/**:\n  ros__parameters:\n    frame_rate: 30.0\n    camera_info_url: file:///c.yaml\n"


def _params(case: Case, text: str) -> Path:
    path = case.tmp / "p_shared.yaml"
    path.write_text(text)
    return path


# -- a parameter file shared with other nodes --------------------------------------------


@bad_input
def test_other_nodes_keys_under_wildcards_are_warned_once_and_the_run_goes_on(case):
    """The node accepts them with one WARN: evaluate names them once and goes on (here to the
    bag's own refusal, which comes after the parameter file is read)."""
    params = _params(case, SHARED + OWN.format("score_threshold"))
    bag = _zero_frames(case)
    argv = evaluate_argv(case, bag, "--as-fast-as-possible", "--node-params", params)
    outcome = invoke(bag_cli.main, *argv)
    line = assert_refused(outcome, "no frames on /camera/image_raw", "--bag")
    assert "frame_rate" not in line
    warnings = [w for w in outcome.stderr.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1, outcome.stderr
    assert "camera_info_url, frame_rate" in warnings[0] and str(params) in warnings[0]


@bad_input
def test_a_typo_in_the_node_s_own_section_is_refused_not_the_shared_keys(case):
    params = _params(case, SHARED + OWN.format("scor_threshold"))
    argv = evaluate_argv(case, case.recorded, "--node-params", params)
    line = refused(argv, ["unknown parameter 'scor_threshold'", "--node-params"], [case.tmp])
    assert "frame_rate" not in line and "camera_info_url" not in line


# -- the parameters' transport against the bag's message type ----------------------------


@bad_input
@pytest.mark.parametrize("section", ["perception_node", "/**/perception_node", "/*"])
def test_a_transport_the_bag_does_not_hold_is_refused_before_the_node_starts(case, section):
    """rclpy applies these sections after the run's own -p values, so the node would listen on
    image/compressed of a raw bag (and time out after 120 s)."""
    text = f"{section}:\n  ros__parameters:\n    input_transport: compressed\n"
    argv = evaluate_argv(case, case.recorded, "--node-params", _params(case, text))
    mentions = ["sensor_msgs/msg/Image", CAMERA, "input_transport compressed", "--node-params"]
    refused(argv, mentions, [case.recorded, case.out.parent, case.tmp])
    assert not case.out.exists()


# -- camera names too long for the node's topics -----------------------------------------


@bad_input
def test_record_dataset_refuses_a_camera_name_too_long_for_the_node_s_topics(case):
    out = case.tmp / "rig_long"
    argv = ["record-dataset", "--data", case.data, "--split", "val", "--out", out]
    argv += ["--cameras", f"{LONG},rear"]
    refused(argv, ["--cameras", "300 characters", "invalid topic"], [case.data, case.tmp])
    assert not out.exists()


def _long_rig(case: Case) -> Path:
    """A rig bag (as record-dataset used to write it) whose camera ``LONG`` has topics over
    255 characters, and a camera ``rear``."""
    topics = {}
    for name in (LONG, "rear"):
        for topic, value in scene_topics(case.scenes).items():
            renamed = {CAMERA: "image", SEMANTIC: "ground_truth/semantic"}
            suffix = renamed.get(topic, "ground_truth/detections")
            assert topic in (CAMERA, SEMANTIC, DETECTIONS)
            topics[f"/{name}/{suffix}"] = value
    return write_bag(case.tmp / "rig_long", topics)


@bad_input
def test_evaluate_refuses_a_rig_camera_too_long_for_the_node_s_topics(case):
    bag = _long_rig(case)
    argv = evaluate_argv(case, bag, "--as-fast-as-possible")
    snapshot = Snapshot(bag, case.out.parent)
    line = assert_refused(invoke(bag_cli.main, *argv), "--bag", "300 characters", "invalid topic")
    snapshot.assert_unchanged()
    assert "Invalid node name" not in line and not case.out.exists()
    assert not list(case.out.parent.glob("*failed-node*"))  # no node was started


@bad_input
def test_the_longest_camera_name_the_node_accepts_gives_a_valid_player_node_name():
    """The player's node name is derived from the camera's (one player each); the node's topic
    rule is the stricter one, so its check covers the player too."""
    from rclpy.validate_node_name import validate_node_name

    longest = 0
    for length in range(180, 260):
        try:
            check_rig_cameras(["c" * length], [True])
        except ValueError:
            break
        longest = length
    assert 180 <= longest < 255
    validate_node_name(player_name("c" * longest))  # raises when invalid
    with pytest.raises(ValueError, match="invalid topic"):
        check_rig_cameras(["c" * (longest + 1)], [False])


@bad_input
def test_the_shared_keys_warning_is_printed_once_by_the_command_a_user_runs(case):
    """Run as a user runs it (no MTL_NETNS: the tool moves itself into a private namespace by
    running itself again), the warning was printed before and after that, twice."""
    params = _params(case, SHARED + OWN.format("score_threshold"))
    bag = _zero_frames(case)
    argv = evaluate_argv(case, bag, "--as-fast-as-possible", "--node-params", params)
    env = {key: value for key, value in os.environ.items() if key != "MTL_NETNS"}
    done = subprocess.run(
        [sys.executable, "-m", "mtl_perception.ros.bags.cli", *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    warnings = [w for w in done.stderr.splitlines() if "ignoring 2 parameter(s)" in w]
    assert len(warnings) == 1, done.stderr[-3000:]
