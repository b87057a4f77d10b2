"""Recording a Cityscapes-layout split as a rosbag2 (MCAP or sqlite3) with ground truth.

Written with the ``rosbags`` library (pure Python): camera images (rgb8 Image, or JPEG
CompressedImage), ground-truth semantic masks (mono8 class ids, 255 = void) and ground-truth
vision_msgs/Detection2DArray, all stamped at the given rate, with the message definitions embedded.

With ``cameras``, the bag is a synthetic camera rig (:mod:`.rig`): each camera's frames and
ground truth on its own topics (``/<camera>/image``, ``/<camera>/ground_truth/...``).

The bag holds EVERY ground-truth box: which boxes an evaluation counts depends on the model it
scores (its input width), so the scorer decides (:func:`..evaluation.ground_truth.counted_boxes`).
The bag is written into a temporary folder beside ``out`` and renamed when complete, so a failed
or interrupted recording leaves nothing behind and can simply be run again.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from ...data.cityscapes import CityscapesDataset
from ...data.labels import DEFAULT_CLASSES_FILE, ClassMap
from ...outputs import atomic_directory, check_new_directory
from ...resources import vision_msgs_definitions as packaged_vision_msgs_definitions
from .rig import RigCamera, check_rig_cameras, mirror_view, mirrored, scene_index

CAMERA_TOPIC = "/camera/image_raw"
GT_SEMANTIC_TOPIC = "/ground_truth/semantic"
GT_DETECTIONS_TOPIC = "/ground_truth/detections"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 10**9
MAX_STAMP_NS = (2**31 - 1) * 10**9  # builtin_interfaces/Time holds int32 seconds
MAX_RATE = 1e9  # stamps are nanoseconds: a faster rate would give two frames the same stamp


@dataclass(frozen=True)
class Topics:
    camera: str = CAMERA_TOPIC
    semantic: str = GT_SEMANTIC_TOPIC
    detections: str = GT_DETECTIONS_TOPIC


def vision_msgs_definitions() -> Path:
    """Folder of vision_msgs .msg files: an ament prefix's, the venv's, or the packaged copy."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in [*prefixes, sys.prefix]:
        folder = Path(prefix) / "share" / "vision_msgs" / "msg"
        if (folder / "Detection2DArray.msg").is_file():
            return folder
    return packaged_vision_msgs_definitions()


def typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus vision_msgs, for (de)serialising bag messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(vision_msgs_definitions().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def _header(store: Typestore, stamp_ns: int, frame_id: str = FRAME_ID):
    time_type = store.types["builtin_interfaces/msg/Time"]
    header_type = store.types["std_msgs/msg/Header"]
    return header_type(
        stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id
    )


def detections_msg(store: Typestore, header, boxes: np.ndarray, classes: np.ndarray):
    """Ground-truth Detection2DArray (score 1.0) in the rosbags type system."""
    t = store.types
    detections = []
    for (x0, y0, x1, y1), cls in zip(boxes.tolist(), classes.tolist(), strict=True):
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
            ),
            covariance=np.zeros(36),
        )
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(int(cls)), score=1.0),
            pose=pose,
        )
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](
                position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2, y=(y0 + y1) / 2), theta=0.0
            ),
            size_x=x1 - x0,
            size_y=y1 - y0,
        )
        detections.append(
            t["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox, id="")
        )
    return t["vision_msgs/msg/Detection2DArray"](header=header, detections=detections)


def image_msg(store: Typestore, header, array: np.ndarray, encoding: str):
    channels = 1 if array.ndim == 2 else array.shape[2]
    return store.types["sensor_msgs/msg/Image"](
        header=header,
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=array.shape[1] * channels,
        data=np.ascontiguousarray(array, np.uint8).reshape(-1),
    )


def check_rate(rate: float, frames: int = 1) -> None:
    """Refuses a recording rate that cannot give ``frames`` distinct, representable stamps.

    Raises:
        ValueError: ``rate`` is not a positive finite number, above :data:`MAX_RATE` (two frames
            would share a nanosecond stamp), or so low that the last stamp overflows a ROS
            time's int32 seconds.
    """
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"the rate must be a positive finite number of frames per second, got {rate} (--rate)"
        )
    if rate > MAX_RATE:
        raise ValueError(
            f"rate {rate:g} Hz gives frames less than 1 ns apart, so stamps would repeat; "
            f"at most {MAX_RATE:g} (--rate)"
        )
    if START_NS + (frames - 1) * 1e9 / rate > MAX_STAMP_NS:
        raise ValueError(
            f"at {rate:g} Hz the last of {frames} frames would be stamped after 2038-01-19, "
            "beyond a ROS time's int32 seconds (--rate)"
        )


def record_dataset(
    data: Path,
    split: str,
    out: Path,
    *,
    storage: str = "mcap",
    rate: float = 10.0,
    compressed: bool = False,
    classes_file: Path | None = None,
    topics: Topics = Topics(),
    progress: bool = True,
    cameras: tuple[str, ...] = (),
) -> int:
    """Writes the split to ``out`` (a new folder); returns the number of frames (per camera).

    ``cameras`` (names): a synthetic rig of these cameras (:mod:`.rig`) instead of one camera on
    ``topics``.

    ``out`` is checked before the dataset is read, and the bag is written to a temporary
    folder beside it that is renamed to ``out`` only when complete.

    Raises:
        ValueError: ``out`` exists (with content, or as a file), a bad rate, class map or
            dataset, camera names the node would refuse (naming the file or option).
    """
    out = check_new_directory(out)
    check_rate(rate)
    if cameras:
        try:
            check_rig_cameras(cameras, [compressed] * len(cameras))
        except ValueError as error:
            raise ValueError(f"--cameras: {error}") from None
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"unknown storage {storage!r}: mcap or sqlite3 (--storage)")
    class_map = ClassMap.from_yaml(classes_file or DEFAULT_CLASSES_FILE)
    dataset = CityscapesDataset(data, split, class_map)
    check_rate(rate, len(dataset))
    store = typestore()
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    camera_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    views = (
        [(FRAME_ID, topics)]
        if not cameras
        else [
            (name, Topics(rig.camera, rig.semantic, rig.detections))
            for name, rig in ((name, RigCamera.of(name)) for name in cameras)
        ]
    )
    with atomic_directory(out) as temporary:
        # rosbags writes a folder that must not exist and names its storage file after it:
        # write it inside the temporary folder under the final name, then lift its files up.
        inner = temporary / out.name
        with Writer(inner, version=9, storage_plugin=plugin) as writer:
            connections = [
                (
                    frame_id,
                    writer.add_connection(
                        f"{view.camera}/compressed" if compressed else view.camera,
                        camera_type,
                        typestore=store,
                    ),
                    writer.add_connection(view.semantic, "sensor_msgs/msg/Image", typestore=store),
                    writer.add_connection(
                        view.detections, "vision_msgs/msg/Detection2DArray", typestore=store
                    ),
                )
                for frame_id, view in views
            ]
            for index in tqdm(
                range(len(dataset)),
                desc=f"recording {out.name}",
                unit="frame",
                disable=not progress,
            ):
                stamp = START_NS + round(index * 1e9 / rate)
                for k, (frame_id, camera, semantic, detections) in enumerate(connections):
                    sample = dataset.load(scene_index(index, k, len(dataset)))
                    image, mask = sample.image, class_map.to_published(sample.segmentation)
                    boxes = sample.boxes
                    if mirrored(k):
                        image, mask, boxes = mirror_view(image, mask, boxes)
                    header = _header(store, stamp, frame_id)
                    if compressed:
                        ok, jpeg = cv2.imencode(
                            ".jpg",
                            cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95],
                        )
                        if not ok:
                            raise ValueError(
                                f"cannot JPEG-encode frame {sample.name} (--compressed)"
                            )
                        message = store.types["sensor_msgs/msg/CompressedImage"](
                            header=header, format="jpeg", data=jpeg.reshape(-1)
                        )
                    else:
                        message = image_msg(store, header, image, "rgb8")
                    writer.write(camera, stamp, store.serialize_cdr(message, camera_type))
                    writer.write(  # void: 255
                        semantic,
                        stamp,
                        store.serialize_cdr(
                            image_msg(store, header, mask, "mono8"), "sensor_msgs/msg/Image"
                        ),
                    )
                    gt = detections_msg(store, header, boxes, sample.classes)
                    writer.write(
                        detections,
                        stamp,
                        store.serialize_cdr(gt, "vision_msgs/msg/Detection2DArray"),
                    )
        for child in inner.iterdir():
            child.rename(temporary / child.name)
        inner.rmdir()
    return len(dataset)
