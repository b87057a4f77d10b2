"""Input image conversion for every supported encoding, and output encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mtl_perception.ros.conversions import (
    ImageRejectedError,
    compressed_to_rgb,
    encode_image,
    image_to_rgb,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), np.uint8)
MAX = 10_000


def _msg(array: np.ndarray, encoding: str, pad: int = 0) -> Image:
    rows = array.reshape(array.shape[0], -1)
    padded = np.concatenate([rows, np.zeros((rows.shape[0], pad), np.uint8)], axis=1)
    return Image(
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        step=padded.shape[1],
        data=padded.tobytes(),
    )


@pytest.mark.parametrize(
    ("encoding", "array", "expected"),
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[..., ::-1], RGB),
        ("rgba8", np.dstack([RGB, np.full((6, 8), 7, np.uint8)]), RGB),
        ("bgra8", np.dstack([RGB[..., ::-1], np.full((6, 8), 7, np.uint8)]), RGB),
        ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
    ],
)
def test_plain_encodings_convert_exactly(encoding, array, expected):
    assert np.array_equal(image_to_rgb(_msg(array, encoding), MAX), expected)
    assert np.array_equal(image_to_rgb(_msg(array, encoding, pad=4), MAX), expected)  # row padding


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2"])
def test_yuv422_of_a_flat_colour_gives_that_colour(encoding):
    rgb = np.full((4, 8, 3), (200, 40, 90), np.uint8)
    r, g, b = np.array([200, 40, 90]) / 255  # BT.601 limited-range Y'CbCr, as cameras send it
    y = round(16 + 65.481 * r + 128.553 * g + 24.966 * b)
    u = round(128 - 37.797 * r - 74.203 * g + 112.0 * b)
    v = round(128 + 112.0 * r - 93.786 * g - 18.214 * b)
    pattern = [y, u, y, v] if encoding == "yuv422_yuy2" else [u, y, v, y]  # ROS: yuv422 is UYVY
    data = np.tile(np.array(pattern, np.uint8), (4, 4)).reshape(4, 16)
    out = image_to_rgb(
        Image(height=4, width=8, encoding=encoding, step=16, data=data.tobytes()), MAX
    )
    assert out.shape == (4, 8, 3) and np.abs(out.astype(int) - rgb.astype(int)).max() <= 4


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_bayer_of_a_grey_scene_gives_grey(encoding):
    raw = np.full((8, 8), 120, np.uint8)
    out = image_to_rgb(Image(height=8, width=8, encoding=encoding, step=8, data=raw.tobytes()), MAX)
    assert out.shape == (8, 8, 3) and np.abs(out.astype(int) - 120).max() <= 2


def test_compressed_png_and_jpeg_decode_and_garbage_is_refused():
    _, png = cv2.imencode(".png", cv2.cvtColor(RGB, cv2.COLOR_RGB2BGR))
    assert np.array_equal(
        compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()), MAX), RGB
    )
    for data in (b"", b"\x00" * 50):
        with pytest.raises(ImageRejectedError, match="compressed image"):
            compressed_to_rgb(CompressedImage(format="jpeg", data=data), MAX)
    with pytest.raises(ImageRejectedError, match="max_pixels"):
        compressed_to_rgb(CompressedImage(format="png", data=png.tobytes()), 10)


def test_output_encoding_round_trips():
    header = Header(frame_id="cam")
    mask = RNG.integers(0, 12, (5, 7), np.uint8)
    msg = encode_image(mask, "mono8", header)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("mono8", 7, "cam")
    assert np.array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 7), mask)
    assert np.array_equal(image_to_rgb(encode_image(RGB, "rgb8", header), MAX), RGB)
    with pytest.raises(ValueError):
        encode_image(RGB, "mono8", header)
