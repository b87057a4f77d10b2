"""Recording a Cityscapes-layout split as a rosbag2 (MCAP or sqlite3) with ground truth.

Written with the ``rosbags`` library (pure Python): camera images (rgb8 Image, or JPEG
CompressedImage), ground-truth semantic masks (mono8 class ids, 255 = void) and ground-truth
vision_msgs/Detection2DArray, all stamped at the given rate, with the message definitions embedded.
"""

from __future__ import annotations

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

from ..data.cityscapes import CityscapesDataset
from ..data.labels import ClassMap

CAMERA_TOPIC = "/camera/image_raw"
GT_SEMANTIC_TOPIC = "/ground_truth/semantic"
GT_DETECTIONS_TOPIC = "/ground_truth/detections"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 10**9
REPO_INTERFACES = Path(__file__).resolve().parents[2] / "interfaces" / "vision_msgs" / "msg"


@dataclass(frozen=True)
class Topics:
    camera: str = CAMERA_TOPIC
    semantic: str = GT_SEMANTIC_TOPIC
    detections: str = GT_DETECTIONS_TOPIC


def vision_msgs_definitions() -> Path:
    """Folder of vision_msgs .msg files: an ament prefix's, the venv's, or this repository's."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in [*prefixes, sys.prefix]:
        folder = Path(prefix) / "share" / "vision_msgs" / "msg"
        if (folder / "Detection2DArray.msg").is_file():
            return folder
    return REPO_INTERFACES


def typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus vision_msgs, for (de)serialising bag messages."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(vision_msgs_definitions().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def _header(store: Typestore, stamp_ns: int):
    time_type = store.types["builtin_interfaces/msg/Time"]
    header_type = store.types["std_msgs/msg/Header"]
    return header_type(
        stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=FRAME_ID
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


def record_dataset(
    data: Path,
    split: str,
    out: Path,
    *,
    storage: str = "mcap",
    rate: float = 10.0,
    compressed: bool = False,
    classes_file: Path | None = None,
    input_width: int = 768,
    topics: Topics = Topics(),
    progress: bool = True,
) -> int:
    """Writes the split to ``out``; returns the number of frames.

    Ground-truth boxes smaller than the class map's ``min_box_size`` (network-input pixels at
    ``input_width``, scaled to the image) are left out, as ``mtl-eval`` does.
    """
    class_map = ClassMap.from_yaml(classes_file) if classes_file else ClassMap.from_yaml()
    dataset = CityscapesDataset(data, split, class_map)
    if out.exists():
        raise ValueError(
            f"{out} exists; rosbag2 writes a new folder (remove it or choose another --out)"
        )
    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    store = typestore()
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    camera_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    camera_topic = f"{topics.camera}/compressed" if compressed else topics.camera
    with Writer(out, version=9, storage_plugin=plugin) as writer:
        camera = writer.add_connection(camera_topic, camera_type, typestore=store)
        semantic = writer.add_connection(topics.semantic, "sensor_msgs/msg/Image", typestore=store)
        detections = writer.add_connection(
            topics.detections, "vision_msgs/msg/Detection2DArray", typestore=store
        )
        for index in tqdm(
            range(len(dataset)), desc=f"recording {out.name}", unit="frame", disable=not progress
        ):
            sample = dataset.load(index)
            stamp = START_NS + round(index * 1e9 / rate)
            header = _header(store, stamp)
            if compressed:
                _, jpeg = cv2.imencode(
                    ".jpg",
                    cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95],
                )
                message = store.types["sensor_msgs/msg/CompressedImage"](
                    header=header, format="jpeg", data=jpeg.reshape(-1)
                )
            else:
                message = image_msg(store, header, sample.image, "rgb8")
            writer.write(camera, stamp, store.serialize_cdr(message, camera_type))
            mask = np.where(
                sample.segmentation == class_map.void_id, 255, sample.segmentation
            ).astype(np.uint8)
            writer.write(
                semantic,
                stamp,
                store.serialize_cdr(
                    image_msg(store, header, mask, "mono8"), "sensor_msgs/msg/Image"
                ),
            )
            min_size = class_map.min_box_size * sample.image.shape[1] / input_width
            keep = ((sample.boxes[:, 2:] - sample.boxes[:, :2]) >= min_size).all(axis=1)
            gt = detections_msg(store, header, sample.boxes[keep], sample.classes[keep])
            writer.write(
                detections, stamp, store.serialize_cdr(gt, "vision_msgs/msg/Detection2DArray")
            )
    return len(dataset)
