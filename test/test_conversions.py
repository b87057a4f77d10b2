"""Input image conversion for every supported encoding, output encoding, and refusal of every
malformed or hostile input (issue 13) with its reason code; the crafted frames here (JPEG/PNG
bombs) are also sent to the live node by test/robustness."""

from __future__ import annotations

import array
import io
import re
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mtl_perception.ros import conversions
from mtl_perception.ros.conversions import (
    REJECTION_REASONS,
    ImageRejectedError,
    check_compressed,
    check_image,
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


# -- crafted compressed frames (also used by test/robustness) --------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A few hundred bytes of valid-looking JPEG whose frame header declares ``width`` x
    ``height`` (an 8x8 image's scan follows): a decompression bomb when large."""
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else []
    data = bytearray(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8), params)[1].tobytes())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A complete 1-bit PNG of ``width`` x ``height`` zeros (30000x30000: 109 KB that decode to
    2.7 GB of BGR)."""
    deflate = zlib.compressobj(9)
    rows = bytes(1 + (width + 7) // 8) * 1000
    idat = b"".join(deflate.compress(rows) for _ in range(height // 1000))
    idat += deflate.compress(bytes(1 + (width + 7) // 8) * (height % 1000)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + IEND


def png_declaring(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height``, a tiny IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(64)))
        + IEND
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = png_chunk(b"IEND", b"")


def pillow_encoded(array: np.ndarray, fmt: str, mode: str | None = None, **options) -> bytes:
    picture = PILImage.fromarray(array)
    buffer = io.BytesIO()
    (picture.convert(mode) if mode else picture).save(buffer, fmt, **options)
    return buffer.getvalue()


def _compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


def _never_decode(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(
        conversions.cv2, "imdecode", lambda *args: calls.append(args) or pytest.fail("decoded")
    )
    return calls


# -- issue 13: bombs, hostile headers, reasons ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (jpeg_declaring(30000, 30000), "jpeg"),
        (jpeg_declaring(65535, 65535, progressive=True), "jpeg"),
        (png_declaring(30000, 30000), "png"),
        (png_declaring(2**31 - 1, 2**31 - 1), "png"),
    ],
)
def test_a_declared_size_above_max_pixels_is_refused_before_decoding(monkeypatch, data, fmt):
    assert len(data) < 1000
    _never_decode(monkeypatch)
    with pytest.raises(
        ImageRejectedError, match=r"declares \d+x\d+, which exceeds max_pixels"
    ) as e:
        compressed_to_rgb(_compressed(data, fmt), MAX)
    assert e.value.reason == "too_large"
    assert check_compressed(_compressed(data[:0] + data, fmt), 2**62).width > 100  # declared


def test_the_png_bomb_is_refused_in_well_under_a_millisecond_per_frame(monkeypatch):
    bomb = _compressed(png_bomb(), "png")
    _never_decode(monkeypatch)
    with pytest.raises(ImageRejectedError) as e:
        compressed_to_rgb(bomb, 4096 * 4096)
    assert e.value.reason == "too_large" and "30000x30000" in str(e.value)


def test_pillow_bomb_errors_and_warnings_become_rejections(monkeypatch):
    def pillow_bomb_check(fmt, data):  # Pillow's own check, as Image.open runs it
        PILImage._decompression_bomb_check((20000, 20000))
        return 8, 8, "RGB", 100

    monkeypatch.setattr(conversions, "_read_header", pillow_bomb_check)
    jpeg = _compressed(cv2.imencode(".jpg", RGB)[1].tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping would raise here
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 20000 * 20000 - 1)  # warning only
        with pytest.raises(ImageRejectedError, match="decompression bomb") as e:
            check_compressed(jpeg, MAX)
        assert e.value.reason == "too_large"
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # Pillow's error
        with pytest.raises(ImageRejectedError, match="decompression bomb") as e:
            check_compressed(jpeg, MAX)
        assert e.value.reason == "too_large"


def test_a_pillow_warning_on_a_corrupt_exif_header_is_a_rejection_not_a_warning():
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 282, 5, 1000, 9999)
    jpeg = bytearray(cv2.imencode(".jpg", RGB)[1].tobytes())
    app0_end = 4 + struct.unpack(">H", jpeg[4:6])[0]
    del jpeg[2:app0_end]  # no JFIF density: Pillow reads the resolution from EXIF
    jpeg[2:2] = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRejectedError, match="corrupt JPEG header") as e:
            compressed_to_rgb(_compressed(bytes(jpeg)), MAX)
    assert e.value.reason == "header"


NOISE = np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)
JPEG = cv2.imencode(".jpg", NOISE)[1].tobytes()
PNG = cv2.imencode(".png", NOISE)[1].tobytes()
_IDAT = PNG.index(b"IDAT") - 4


@pytest.mark.parametrize(
    ("data", "fmt", "reason", "message"),
    [
        (b"", "jpeg", "empty", "empty compressed image"),
        (bytes(1000), "jpeg", "format", "unrecognised data"),
        (np.random.default_rng(2).bytes(5000), "jpeg", "format", "only JPEG and PNG"),
        (pillow_encoded(NOISE, "GIF"), "jpeg", "format", "GIF data"),
        (pillow_encoded(NOISE, "BMP"), "png", "format", "BMP data"),
        (pillow_encoded(NOISE, "WEBP"), "jpeg", "format", "WEBP data"),
        (pillow_encoded(NOISE, "TIFF"), "jpeg", "format", "TIFF data"),
        (PNG, "16UC1; compressedDepth png", "format", "compressedDepth"),
        (JPEG, "png", "format_mismatch", "says PNG but the data are JPEG"),
        (PNG, "bgr8; jpeg compressed bgr8", "format_mismatch", "says JPEG but the data are PNG"),
        (JPEG[: len(JPEG) * 2 // 3], "jpeg", "truncated", "truncated JPEG"),
        (PNG[: len(PNG) * 2 // 3], "png", "truncated", "truncated PNG"),
        (JPEG[:300], "jpeg", "header", "unreadable JPEG header"),
        (b"\xff\xd8\xff" + bytes(200) + b"\xff\xd9", "jpeg", "header", "unreadable JPEG header"),
        (b"\xff\xd8" + b"\xff" * 100_000, "jpeg", "header", "within its first 65536 bytes"),
        (
            JPEG.replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1),
            "jpeg",
            "header",
            "12-bit",
        ),
        (PNG[:29] + bytes([PNG[29] ^ 1]) + PNG[30:], "png", "header", "bad header checksum"),
        (png_declaring(16, 16, depth=3), "png", "header", "bit depth"),
        (png_declaring(0, 16), "png", "zero_size", "0x16"),
        (jpeg_declaring(64, 0), "jpeg", "header", "not identified"),  # height 0 (DNL)
        (
            PNG[:33] + png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(8 << 20))) * 9 + PNG[33:],
            "png",
            "ancillary",
            "9 compressed text/ICC chunks",
        ),
        (PNG[:_IDAT] + png_chunk(b"IDAT", bytes(100)) + IEND, "png", "undecodable", "undecodable"),
        (
            JPEG.replace(b"\xff\xda\x00\x0c\x03\x01", b"\xff\xda\x00\x0c\x03\x09", 1),
            "jpeg",
            "undecodable",
            "undecodable JPEG",
        ),
    ],
)
def test_hostile_compressed_frames_are_refused_with_a_reason(data, fmt, reason, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageRejectedError, match=re.escape(message)) as e:
            compressed_to_rgb(_compressed(data, fmt), MAX)
    assert e.value.reason == reason and reason in REJECTION_REASONS


def test_a_decoded_size_other_than_the_declared_one_is_refused(monkeypatch):
    monkeypatch.setattr(conversions.cv2, "imdecode", lambda *_: np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageRejectedError, match="decoded to 8x8, its header declares 64x48") as e:
        compressed_to_rgb(_compressed(JPEG), MAX)
    assert e.value.reason == "size_mismatch"


def _flat(colour, shape=(16, 24)) -> np.ndarray:
    return np.full((*shape, 3), colour, np.uint8)


COLOUR = _flat((200, 40, 90))


@pytest.mark.parametrize(
    ("data", "tolerance"),
    [
        (pillow_encoded(COLOUR, "JPEG", "L"), 3),
        (pillow_encoded(COLOUR, "JPEG", "CMYK"), 6),
        (pillow_encoded(COLOUR, "JPEG", progressive=True), 6),
        (cv2.imencode(".png", COLOUR.astype(np.uint16) * 257)[1].tobytes(), 1),
        (pillow_encoded(COLOUR, "PNG", "P"), 0),
        (pillow_encoded(COLOUR, "PNG", "RGBA"), 0),
        (pillow_encoded(COLOUR, "PNG", "LA"), 0),
        (pillow_encoded(_flat((255, 255, 255)), "PNG", "1"), 0),
    ],
    ids=["grey-jpeg", "cmyk-jpeg", "progressive-jpeg", "png16", "palette", "rgba", "la", "1-bit"],
)
def test_jpeg_and_png_variants_decode_to_rgb_of_the_declared_size(data, tolerance):
    declared = check_compressed(_compressed(data, ""), MAX)
    out = compressed_to_rgb(_compressed(data, declared.format.lower()), MAX)
    assert out.shape == (declared.height, declared.width, 3) == (16, 24, 3)
    assert out.dtype == np.uint8
    expected = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))  # Pillow's decoding
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= tolerance


def test_exif_orientation_is_ignored_as_image_transport_does():
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    data = pillow_encoded(NOISE, "JPEG", exif=exif.tobytes())
    assert compressed_to_rgb(_compressed(data), MAX).shape == (48, 64, 3)  # as stored


@pytest.mark.parametrize("fmt", ["jpeg", "", "bgr8; jpeg compressed bgr8", "JPG", "whatever"])
def test_the_format_string_may_name_the_content_or_nothing(fmt):
    assert compressed_to_rgb(_compressed(JPEG, fmt), MAX).shape == (48, 64, 3)


@pytest.mark.parametrize("wrap", [bytes, bytearray, lambda b: array.array("B", b), np.frombuffer])
def test_compressed_data_of_every_buffer_type_is_read(wrap):
    msg = CompressedImage(format="png")
    msg._data = wrap(PNG)  # as rclpy (array), rosbags (numpy) or a caller (bytes) leave it
    assert np.array_equal(compressed_to_rgb(msg, MAX), NOISE[..., ::-1])


def _raw(**fields) -> Image:
    msg = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(72))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        ({"height": 0, "data": b""}, "zero_size", "zero-size image 6x0"),
        ({"width": 0, "step": 0, "data": b""}, "zero_size", "zero-size image 0x4"),
        ({"height": 30000, "width": 30000}, "too_large", "30000x30000 exceeds max_pixels"),
        ({"height": 2**32 - 1, "width": 2**32 - 1}, "too_large", "exceeds max_pixels"),
        ({"encoding": "hsv8"}, "encoding", "unsupported encoding 'hsv8'"),
        ({"encoding": ""}, "encoding", "unsupported encoding ''"),
        ({"encoding": "\x1b[31m" + "x" * 5000}, "encoding", "(5005 characters)"),
        ({"encoding": "8UC3"}, "encoding", "unsupported encoding '8UC3'"),
        ({"encoding": "32FC1", "step": 24, "data": bytes(96)}, "bit_depth", "32FC1"),
        ({"encoding": "mono16", "step": 12, "data": bytes(48)}, "bit_depth", "'mono16'"),
        ({"encoding": "rgb16", "step": 36, "data": bytes(144)}, "bit_depth", "more than 8 bits"),
        (
            {"encoding": "bgra16", "step": 48, "data": bytes(192), "is_bigendian": 1},
            "bit_depth",
            "bgra16",
        ),
        ({"encoding": "bayer_rggb16", "step": 12, "data": bytes(48)}, "bit_depth", "bayer_rggb16"),
        ({"encoding": "16UC1", "step": 12, "data": bytes(48)}, "bit_depth", "16UC1"),
        ({"step": 17, "data": bytes(68)}, "step", "step 17 < width 6 x 3"),
        ({"step": 0, "data": b""}, "step", "step 0 <"),
        ({"encoding": "rgba8"}, "step", "step 18 < width 6 x 4"),
        ({"data": bytes(71)}, "data_length", "data length 71 != step 18 x height 4"),
        ({"data": bytes(73)}, "data_length", "data length 73"),
        ({"step": 2**32 - 1}, "data_length", "step 4294967295 x height 4"),
        ({"height": 2, "step": 2**31 + 36, "data": bytes(72)}, "data_length", "step 2147483684"),
        ({"encoding": "mono8", "step": 6}, "data_length", "data length 72 != step 6"),
        ({"encoding": "yuv422", "width": 5, "step": 10, "data": bytes(40)}, "odd_width", "yuv422"),
        ({"encoding": "yuv422_yuy2", "width": 3, "step": 6, "data": bytes(24)}, "odd_width", "3"),
        ({"encoding": "uyvy", "width": 7, "step": 14, "data": bytes(56)}, "odd_width", "uyvy"),
        ({"encoding": "bayer_grbg8", "width": 5, "step": 5, "data": bytes(20)}, "odd_size", "5x4"),
        ({"encoding": "bayer_rggb8", "height": 3, "step": 6, "data": bytes(18)}, "odd_size", "6x3"),
        ({"height": -1}, "geometry", "unsigned 32-bit"),
        ({"width": 2**40}, "geometry", "unsigned 32-bit"),
        ({"step": 18.0}, "geometry", "unsigned 32-bit"),
    ],
)
def test_malformed_raw_images_are_refused_with_a_reason(fields, reason, message):
    msg = _raw(**fields)
    with pytest.raises(ImageRejectedError, match=re.escape(message)) as e:
        check_image(msg, MAX)
    assert e.value.reason == reason and reason in REJECTION_REASONS
    with pytest.raises(ImageRejectedError):
        image_to_rgb(msg, MAX)


def test_an_eight_bit_image_flagged_big_endian_converts_as_usual():
    assert np.array_equal(image_to_rgb(_raw(is_bigendian=1, data=RGB[:4, :6].tobytes()), MAX),
                          RGB[:4, :6])  # fmt: skip


def test_the_reason_is_kept_for_a_plain_image_rejected_error():
    assert ImageRejectedError("x").reason == "undecodable"
    assert issubclass(ImageRejectedError, ValueError)
