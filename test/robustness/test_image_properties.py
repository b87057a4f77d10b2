"""Property-based tests of the frame conversions on arbitrary messages (issue 13).

For any sensor_msgs/Image (any encoding string, width, height, step, data length, endianness
flag) and any sensor_msgs/CompressedImage (arbitrary bytes, mutated JPEG/PNG, headers declaring
arbitrary sizes, any format string): the only exception is ImageRejectedError with a known
reason; an accepted frame comes back as (H, W, 3) uint8 of the size the message declares, within
max_pixels; a declared size above max_pixels is refused before anything decodes it. Runs are
reproducible (derandomized, no example database).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import CompressedImage, Image
from test_conversions import pillow_encoded

from mtl_perception.ros import conversions
from mtl_perception.ros.conversions import (
    BYTES_PER_PIXEL,
    REJECTION_REASONS,
    ImageRejectedError,
    check_compressed,
    check_image,
    compressed_to_rgb,
    image_to_rgb,
)

MAX_PIXELS = 48 * 64
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KNOWN_ENCODINGS = [
    *BYTES_PER_PIXEL,
    *("mono16", "rgb16", "bgr16", "rgba16", "bgra16", "bayer_rggb16", "16UC1", "32FC1", "64FC3"),
    *("8UC1", "8UC3", "8UC4", "8SC1", "hsv8", "RGB8", "jpeg", ""),
]
DATA_LIMIT = 1 << 16
ODD_VALUES = st.one_of(st.integers(-(2**40), 2**40), st.floats(), st.none(), st.text(max_size=3))


def odd_data(length: int) -> st.SearchStrategy:
    """Data fields an in-process caller might leave: lists (of any ints), str, None, numpy."""
    return st.one_of(
        st.lists(st.integers(-300, 300), min_size=min(length, 64), max_size=min(length, 64)),
        st.text(max_size=64),
        st.none(),
        st.just(np.zeros(min(length, 64), np.int64)),
    )


# -- raw images --------------------------------------------------------------------------------


def _dimension() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(0, 70),
        st.integers(0, 2**32 - 1),
        st.sampled_from([2**31, 2**31 + 1, 2**32 - 1, 2**16, 1 << 20]),
    )


@st.composite
def raw_images(draw) -> Image:
    """Mostly near-valid geometry for some encoding, then perhaps one field made arbitrary."""
    encoding = draw(st.one_of(st.sampled_from(KNOWN_ENCODINGS), st.text(max_size=12)))
    height, width = draw(_dimension()), draw(_dimension())
    channels = BYTES_PER_PIXEL.get(encoding) or draw(st.integers(1, 8))
    step = draw(
        st.one_of(
            st.just(width * channels),
            st.integers(0, 8).map(lambda pad: width * channels + pad),
            _dimension(),
        )
    )
    exact = step * height
    length = draw(
        st.one_of(
            st.just(exact) if exact <= DATA_LIMIT else st.integers(0, 64),
            st.integers(0, min(DATA_LIMIT, exact + 16)),
        )
    )
    data = draw(st.binary(min_size=length, max_size=length)) if length <= 4096 else bytes(length)
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=data)
    msg.is_bigendian = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:  # in-process callers can set any Python value
        field = draw(st.sampled_from(["_height", "_width", "_step", "_data"]))
        setattr(msg, field, draw(ODD_VALUES if field != "_data" else odd_data(length)))
    return msg


@given(raw_images())
@SETTINGS
def test_a_raw_image_is_refused_with_a_reason_or_converted_to_its_declared_size(msg):
    try:
        rgb = image_to_rgb(msg, MAX_PIXELS)
    except ImageRejectedError as error:
        assert error.reason in REJECTION_REASONS
        with pytest.raises(ImageRejectedError):
            check_image(msg, MAX_PIXELS)  # the O(1) check refuses it as well
        return
    check_image(msg, MAX_PIXELS)
    assert rgb.shape == (msg.height, msg.width, 3) and rgb.dtype == np.uint8
    assert msg.height * msg.width <= MAX_PIXELS


@given(raw_images(), st.integers(1, 4))
@SETTINGS
def test_a_raw_image_declaring_more_than_max_pixels_is_always_refused(msg, scale):
    if not (isinstance(msg.height, int) and isinstance(msg.width, int)):
        return
    limit = max(1, msg.height * msg.width // (scale + 1))
    if msg.height * msg.width > limit:
        with pytest.raises(ImageRejectedError):
            check_image(msg, limit)


# -- compressed images --------------------------------------------------------------------------


_NOISE = np.random.default_rng(7).integers(0, 256, (12, 20, 3), np.uint8)
VALID = [
    cv2.imencode(".jpg", _NOISE)[1].tobytes(),
    cv2.imencode(".jpg", _NOISE, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
    cv2.imencode(".png", _NOISE)[1].tobytes(),
    cv2.imencode(".png", _NOISE.astype(np.uint16) * 257)[1].tobytes(),
    pillow_encoded(_NOISE, "JPEG", "L"),
    pillow_encoded(_NOISE, "JPEG", "CMYK"),
    pillow_encoded(_NOISE, "PNG", "P"),
    pillow_encoded(_NOISE, "PNG", "RGBA"),
    pillow_encoded(_NOISE, "PNG", "1"),
]
SIGNATURES = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"RIFF\0\0\0\0WEBP",
    b"II*\0",
]
FORMATS = ["jpeg", "png", "", "bgr8; jpeg compressed bgr8", "rgb8; png compressed bgr8", "jpg"]


def _declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a valid JPEG or PNG) with its header rewritten to declare ``width`` x
    ``height`` (PNG: CRC recomputed, so only the size is a lie)."""
    if data.startswith(b"\x89PNG"):
        ihdr = struct.pack(">II", width, height) + data[24:29]
        return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        if (sof := out.find(marker)) >= 0:
            out[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(out)


@st.composite
def compressed_images(draw) -> tuple[CompressedImage, tuple[int, int] | None]:
    """A CompressedImage and, when the header was rewritten, the (width, height) it declares."""
    kind = draw(st.sampled_from(["bytes", "signature", "mutated", "declared", "cut"]))
    base = draw(st.sampled_from(VALID))
    declared = None
    if kind == "bytes":
        data = draw(st.binary(max_size=512))
    elif kind == "signature":
        data = draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=512))
    elif kind == "mutated":
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "insert", "delete"]))
            if action == "flip":
                data[position] = draw(st.integers(0, 255))
            elif action == "insert":
                data[position:position] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[position : position + draw(st.integers(1, 8))]
        data = bytes(data)
    elif kind == "declared":
        limit = 2**16 - 1 if base.startswith(b"\xff") else 2**31 - 1
        size = st.one_of(st.integers(0, 80), st.integers(0, limit))
        declared = (draw(size), draw(size))
        data = _declaring(base, *declared)
    else:
        data = base[: draw(st.integers(0, len(base)))]
    fmt = draw(st.one_of(st.sampled_from(FORMATS), st.text(max_size=20)))
    msg = CompressedImage(format=fmt, data=data)
    if kind == "bytes" and draw(st.integers(0, 4)) == 0:
        msg._data = draw(odd_data(len(data)))
    return msg, declared


@given(compressed_images())
@settings(SETTINGS, max_examples=300)
def test_a_compressed_image_is_refused_with_a_reason_or_decoded_to_its_declared_size(case):
    msg, declared = case
    with mock.patch.object(conversions.cv2, "imdecode", wraps=cv2.imdecode) as decode:
        try:
            rgb = compressed_to_rgb(msg, MAX_PIXELS)
        except ImageRejectedError as error:
            assert error.reason in REJECTION_REASONS
            if declared is not None and declared[0] * declared[1] > MAX_PIXELS:
                assert error.reason in ("too_large", "format_mismatch")  # (a lying format string)
                assert decode.call_count == 0
            return
    header = check_compressed(msg, MAX_PIXELS)
    assert rgb.shape == (header.height, header.width, 3) and rgb.dtype == np.uint8
    assert header.width * header.height <= MAX_PIXELS
    if declared is not None:
        assert (header.width, header.height) == declared


@given(
    st.sampled_from(VALID),
    st.integers(1, 2**16 - 1),
    st.integers(1, 2**16 - 1),
    st.sampled_from(FORMATS),
)
@SETTINGS
def test_a_header_declaring_more_than_max_pixels_is_never_decoded(base, width, height, fmt):
    data = _declaring(base, width, height)
    with mock.patch.object(conversions.cv2, "imdecode", wraps=cv2.imdecode) as decode:
        try:
            compressed_to_rgb(CompressedImage(format=fmt, data=data), MAX_PIXELS)
        except ImageRejectedError as error:
            if width * height > MAX_PIXELS:
                assert error.reason in ("too_large", "format_mismatch")
                assert decode.call_count == 0
            return
    assert width * height <= MAX_PIXELS


_BOMB_BATCH = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from sensor_msgs.msg import CompressedImage
    from test_conversions import JPEG, jpeg_declaring, png_declaring
    from mtl_perception.ros.conversions import ImageRejectedError, compressed_to_rgb

    compressed_to_rgb(CompressedImage(format="jpeg", data=JPEG), 4096 * 4096)  # codecs loaded
    rng = np.random.default_rng(0)
    frames = []
    for i in range(200):
        width, height = (int(v) for v in rng.integers(4097, 65536, 2))
        if i % 2:
            frames.append(jpeg_declaring(width, height, progressive=i % 4 == 1))
        else:
            width, height = (int(v) for v in rng.integers(4097, 2**31, 2))
            depth, colour = [(8, 2), (8, 6), (16, 2), (1, 0)][i % 8 // 2]
            frames.append(png_declaring(width, height, depth, colour))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in frames:
        try:
            compressed_to_rgb(CompressedImage(format="", data=data), 4096 * 4096)
        except ImageRejectedError as error:
            assert error.reason == "too_large", error
        else:
            raise AssertionError("a bomb was accepted")
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """
)


@pytest.mark.bad_input
def test_a_batch_of_200_bomb_headers_grows_peak_memory_by_less_than_50_mb():
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_BATCH, str(Path(__file__).resolve().parents[1])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    growth_mb = float(result.stdout.split()[-1])
    assert growth_mb < 50, f"peak RSS grew by {growth_mb:.1f} MB"
