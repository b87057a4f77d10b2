"""A camera rig in one bag: several cameras' topics and ground truth, and a synthetic rig.

Camera ``c`` of a rig bag is recorded on ``/c/image`` (``/c/image/compressed`` when JPEG) with
its ground truth on ``/c/ground_truth/semantic`` and ``/c/ground_truth/detections``: the topics a
node started with ``cameras:=[c, ...]`` reads without remapping (``<camera>/image``, see
:mod:`..cameras`). A bag is a rig bag when it has no default camera topic
(:data:`.record.CAMERA_TOPIC`) and has cameras of that layout (:func:`rig_cameras`).

The synthetic rig of ``mtl-bag record-dataset --cameras``: every camera sees the same held-out
scenes at the same stamps (a synchronised rig), camera ``k`` (from 0) starting ``k`` scenes
later (frame ``i`` shows scene ``(i + k) mod n``) and mirrored left-right when ``k`` is odd, its
ground truth transformed alike; so the cameras differ at every instant, and each camera is a
valid single-camera evaluation of its own (``--camera-topic /c/image --semantic-topic
/c/ground_truth/semantic --detections-topic /c/ground_truth/detections``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # one topic token, as the node's cameras
DEFAULT_NAME = "camera{}"  # --cameras N: camera0, camera1, ...
MAX_CAMERAS = 64


def camera_names(text: str) -> tuple[str, ...]:
    """argparse type of ``--cameras``: a count N (cameras ``camera0`` ... ``camera{N-1}``) or
    comma-separated names (distinct topic tokens)."""
    text = text.strip()
    if text.lstrip("+-").isdigit():
        count = int(text)
        if not 1 <= count <= MAX_CAMERAS:
            raise argparse.ArgumentTypeError(
                f"the number of cameras must be 1 to {MAX_CAMERAS}, got {count}"
            )
        return tuple(DEFAULT_NAME.format(k) for k in range(count))
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if not CAMERA_NAME.fullmatch(name):
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a camera name (a letter, then letters, digits or _; it becomes "
                f"a topic namespace), in {text!r}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"camera {', '.join(repeated)} named more than once")
    return names


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig bag: its name and topics (absolute)."""

    name: str
    camera: str  # /<name>/image (the reader accepts its /compressed sibling)
    semantic: str
    detections: str

    @classmethod
    def of(cls, name: str) -> RigCamera:
        return cls(
            name,
            f"/{name}/image",
            f"/{name}/ground_truth/semantic",
            f"/{name}/ground_truth/detections",
        )


def player_name(camera: str) -> str:
    """The node name of the player that replays rig camera ``camera`` (one node each)."""
    from .replay import PLAYER_NAME

    return f"{PLAYER_NAME}_{camera}"


def check_rig_cameras(names: Sequence[str], compressed: Sequence[bool]) -> None:
    """Refuses rig cameras the node started with ``cameras:=names`` would refuse (its own
    rules: :func:`..parameters.check_camera_names`, :func:`..cameras.check_topic_names`: a long
    name makes its topics too long). What else a camera's name becomes is valid when those
    are: the ground-truth topics (``/<name>/ground_truth/detections``) are shorter than the
    node's outputs (``/perception_node/<name>/semantic_color``, at most 247 characters), and its
    player's node name (:func:`player_name`, 15 characters more than the name) is then well
    under rcl's 255.

    Args:
        names: the cameras' names.
        compressed: per camera, whether its images are JPEG (``/<name>/image/compressed``).

    Raises:
        ValueError: the node's message, naming the camera and the topic.
    """
    from ..cameras import check_topic_names, offline_resolver
    from ..parameters import CameraParameters, check_camera_names
    from .settings import NODE_NAME

    check_camera_names(tuple(names))
    cameras = [
        CameraParameters(name, "compressed" if jpeg else "raw")
        for name, jpeg in zip(names, compressed, strict=True)
    ]
    check_topic_names(cameras, offline_resolver(NODE_NAME))


def camera_of_topic(camera_topic: str | None) -> RigCamera | None:
    """The rig camera whose image topic this is (``/c/image`` or ``/c/image/compressed``),
    None for another topic: its ground truth is where a rig bag keeps camera ``c``'s."""
    pattern = rf"/({CAMERA_NAME.pattern})/image(/compressed)?"
    match = re.fullmatch(pattern, camera_topic or "")
    return RigCamera.of(match.group(1)) if match else None


def rig_cameras(topics: set[str]) -> list[RigCamera]:
    """The rig cameras of a bag with these topics, in name order: every ``/c/image`` (or
    ``/c/image/compressed``) with ``c`` one token; none when the bag has the default camera
    topic (a single-camera bag, evaluated as before)."""
    from .record import CAMERA_TOPIC

    if CAMERA_TOPIC in topics or f"{CAMERA_TOPIC}/compressed" in topics:
        return []
    pattern = re.compile(rf"/({CAMERA_NAME.pattern})/image(/compressed)?")
    names = {m.group(1) for t in topics if (m := pattern.fullmatch(t))}
    return [RigCamera.of(name) for name in sorted(names)]


def scene_index(frame: int, camera: int, scenes: int) -> int:
    """The scene camera ``camera`` (from 0) shows at frame ``frame`` of the synthetic rig."""
    return (frame + camera) % scenes


def mirrored(camera: int) -> bool:
    """Whether camera ``camera`` (from 0) of the synthetic rig is mirrored left-right."""
    return camera % 2 == 1


def mirror_view(
    image: np.ndarray, mask: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene mirrored left-right: image (H, W, 3), mask (H, W), boxes (N, 4) xyxy in pixel
    edges (x -> W - x)."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return image[:, ::-1].copy(), mask[:, ::-1].copy(), flipped
