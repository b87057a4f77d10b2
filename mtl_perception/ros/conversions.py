"""sensor_msgs images <-> numpy, with every malformed input refused by name.

Input images are converted to RGB through cv_bridge where it imports (a system ROS 2), else here
with OpenCV, after :func:`check_image` has verified the geometry; output images are encoded here
(mono8, rgb8, bgr8 need no library). Not rosbags-image: it ignores row padding (step larger than
width x channels) and reads ``yuv422`` as YUYV, where sensor_msgs and cv_bridge mean UYVY.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

try:  # a system ROS 2 has cv_bridge; the pip wheels do not
    from cv_bridge import CvBridge

    _BRIDGE: CvBridge | None = CvBridge()
except ImportError:
    _BRIDGE = None

BYTES_PER_PIXEL = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "yuv422": 2,
    "yuv422_yuy2": 2,
    "uyvy": 2,
    "bayer_rggb8": 1,
    "bayer_bggr8": 1,
    "bayer_gbrg8": 1,
    "bayer_grbg8": 1,
}
# OpenCV conversion codes to RGB, as cv_bridge chooses them (OpenCV names Bayer patterns by
# their second row, so ROS's RGGB is OpenCV's BayerBG).
_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
CONVERTER = "cv_bridge" if _BRIDGE is not None else "opencv"


class ImageRejectedError(ValueError):
    """An input image that cannot be processed; the message says why."""


def check_image(msg: Image, max_pixels: int) -> None:
    """Raises :class:`ImageRejectedError` unless ``msg`` is a well-formed image we can convert."""
    height, width, step, size = msg.height, msg.width, msg.step, len(msg.data)
    if height == 0 or width == 0:
        raise ImageRejectedError(f"zero-size image {width}x{height}")
    if height * width > max_pixels:
        raise ImageRejectedError(f"image {width}x{height} exceeds max_pixels={max_pixels}")
    channels = BYTES_PER_PIXEL.get(msg.encoding)
    if channels is None:
        raise ImageRejectedError(
            f"unsupported encoding '{msg.encoding}' (supported: {', '.join(BYTES_PER_PIXEL)})"
        )
    if step < width * channels:
        raise ImageRejectedError(
            f"step {step} < width {width} x {channels} bytes per pixel ({msg.encoding})"
        )
    if size != step * height:
        raise ImageRejectedError(f"data length {size} != step {step} x height {height}")
    if channels == 2 and width % 2:
        raise ImageRejectedError(f"{msg.encoding} needs an even width, got {width}")
    if msg.encoding.startswith("bayer") and (width % 2 or height % 2):
        raise ImageRejectedError(
            f"{msg.encoding} needs even width and height, got {width}x{height}"
        )


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """A checked sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    check_image(msg, max_pixels)
    channels = BYTES_PER_PIXEL[msg.encoding]
    if _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as error:  # cv_bridge raises its own types
            raise ImageRejectedError(f"cannot convert {msg.encoding} image: {error}") from error
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    rows = rows[:, : msg.width * channels]  # drop row padding
    pixels = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
    code = _TO_RGB[msg.encoding]
    if code is None:  # rgb8: no conversion; a view when rows are unpadded
        return pixels if msg.step == msg.width * 3 else np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """A sensor_msgs/CompressedImage (JPEG, PNG, ...) -> (H, W, 3) uint8 RGB."""
    if len(msg.data) == 0:
        raise ImageRejectedError(f"empty compressed image (format '{msg.format}')")
    decoded = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ImageRejectedError(
            f"undecodable compressed image (format '{msg.format}', {len(msg.data)} bytes)"
        )
    if decoded.shape[0] * decoded.shape[1] > max_pixels:
        raise ImageRejectedError(
            f"image {decoded.shape[1]}x{decoded.shape[0]} exceeds max_pixels={max_pixels}"
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def encode_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """(H, W) mono8 or (H, W, 3) rgb8/bgr8 uint8 -> sensor_msgs/Image with ``header``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if (encoding == "mono8") != (channels == 1) or channels not in (1, 3):
        raise ValueError(f"cannot encode an array of shape {array.shape} as {encoding}")
    height, width = array.shape[:2]
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=array.tobytes(),
    )
