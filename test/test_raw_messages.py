"""Serialised frames read in place and outputs written as CDR (issue #23, raw_messages).

The oracle is rclpy itself: frames serialised by ``serialize_message`` read back with the
fields ``deserialize_message`` gives and convert to the same pixels, with the same refusals; the
outputs deserialise to the messages the message-path builders make. A small reflective CDR
writer here (``_cdr``: every field of any message, either byte order, zero padding) is checked
against ``serialize_message`` too, and gives what rclpy cannot: the alignment padding's
positions (``serialize_message`` leaves stale memory there, so its bytes differ from call to
call) and big-endian payloads.
"""

from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from test_conversions import (
    test_hostile_compressed_frames_are_refused_with_a_reason as hostile_compressed,
)
from test_conversions import test_malformed_raw_images_are_refused_with_a_reason as hostile_raw
from vision_msgs.msg import Detection2DArray

from mtl_perception.ros.conversions import (
    BYTES_PER_PIXEL,
    ImageRejectedError,
    MalformedMessageError,
    check_compressed,
    check_image,
    compressed_to_rgb,
    encode_image,
    image_to_rgb,
)
from mtl_perception.ros.messages import detections_message
from mtl_perception.ros.raw_messages import (
    RawCompressedImage,
    RawHeader,
    RawImage,
    detections_bytes,
    image_bytes,
    read_compressed_image,
    read_image,
)

MAX = 10_000
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LITTLE, BIG = b"\x00\x01\x00\x00", b"\x00\x00\x00\x00"

# -- a reference CDR writer --------------------------------------------------------------------

_PRIMITIVES = {"int32": "i", "uint32": "I", "uint8": "B", "octet": "B", "double": "d"}


class _Cdr:
    """Plain CDR of any message by reflection: zero padding, recording where it put padding."""

    def __init__(self, order: str) -> None:
        self.order, self.out, self.padding = order, bytearray(), []

    def primitive(self, code: str, value) -> None:
        size = struct.calcsize(code)
        while len(self.out) % size:
            self.padding.append(len(self.out))
            self.out.append(0)
        self.out += struct.pack(self.order + code, value)

    def field(self, kind: str, value) -> None:
        if kind in _PRIMITIVES:
            self.primitive(_PRIMITIVES[kind], value)
        elif kind == "string":
            text = value.encode() + b"\x00"
            self.primitive("I", len(text))
            self.out += text
        elif kind == "sequence<uint8>":
            self.primitive("I", len(value))
            self.out += bytes(value)
        elif kind.startswith("sequence<"):
            self.primitive("I", len(value))
            for item in value:
                self.field(kind[len("sequence<") : -1], item)
        elif match := re.fullmatch(r"(\w+)\[(\d+)\]", kind):
            for item in value:
                self.field(match[1], item)
        else:
            self.message(value)

    def message(self, msg) -> None:
        for name, kind in msg.get_fields_and_field_types().items():
            self.field(kind, getattr(msg, name))


def _cdr(msg, order: str = "<") -> tuple[bytes, list[int]]:
    """``msg`` serialised with its encapsulation header, and the padding's byte offsets."""
    writer = _Cdr(order)
    writer.message(msg)
    return (LITTLE if order == "<" else BIG) + bytes(writer.out), [4 + p for p in writer.padding]


def _assert_same_but_padding(ours: bytes, msg) -> None:
    """``ours`` is ``msg`` as rclpy serialises it, with zeros for padding (whose rclpy bytes
    are whatever its buffer held)."""
    reference, padding = _cdr(msg)
    theirs = bytearray(serialize_message(msg))
    assert len(ours) == len(theirs) == len(reference)
    for offset in padding:
        theirs[offset] = 0
    assert bytes(theirs) == reference  # the reference writer is right
    assert ours == reference


# -- messages ----------------------------------------------------------------------------------

FRAME_IDS = st.one_of(
    st.sampled_from(["", "camera_optical_frame", "ü" * 150, "x" * 300, "カメラ/🙂"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
)


@st.composite
def headers(draw) -> Header:
    header = Header(frame_id=draw(FRAME_IDS))
    header.stamp.sec = draw(st.integers(-(2**31), 2**31 - 1))
    header.stamp.nanosec = draw(st.integers(0, 2**32 - 1))
    return header


@st.composite
def images(draw) -> Image:
    """Any supported encoding, odd sizes, row padding, random pixels."""
    encoding = draw(st.sampled_from(sorted(BYTES_PER_PIXEL)))
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 9))
    step = width * BYTES_PER_PIXEL[encoding] + draw(st.sampled_from([0, 0, 1, 3, 8]))
    return Image(
        header=draw(headers()),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=draw(st.integers(0, 1)),
        step=step,
        data=draw(st.binary(min_size=step * height, max_size=step * height)),
    )


def _header_equal(raw: RawHeader, header: Header) -> bool:
    stamp = header.stamp
    return (raw.sec, raw.nanosec, raw.frame_id) == (stamp.sec, stamp.nanosec, header.frame_id)


def _outcome(convert, msg):
    """What ``convert(msg, MAX)`` gives: the array, or the refusal's reason and message."""
    try:
        return convert(msg, MAX)
    except ImageRejectedError as error:
        return (error.reason, str(error))


def _assert_same_outcome(convert, raw, msg) -> None:
    ours, theirs = _outcome(convert, raw), _outcome(convert, msg)
    if not isinstance(theirs, np.ndarray):  # a refusal, or check_compressed's DeclaredImage
        assert ours == theirs
    else:
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype
        assert np.array_equal(ours, theirs)


def _assert_reads_as(raw: RawImage, msg: Image) -> None:
    assert _header_equal(raw.header, msg.header)
    fields = ("height", "width", "encoding", "is_bigendian", "step")
    assert [getattr(raw, f) for f in fields] == [getattr(msg, f) for f in fields]
    assert raw.data.dtype == np.uint8 and raw.data.ndim == 1
    assert raw.data.tobytes() == bytes(msg.data)


# -- reading frames ----------------------------------------------------------------------------


@SETTINGS
@given(images())
def test_a_serialised_image_reads_as_rclpy_deserialises_it_and_converts_identically(msg):
    buffer = serialize_message(msg)
    raw = read_image(buffer)
    theirs = deserialize_message(buffer, Image)
    _assert_reads_as(raw, theirs)
    assert raw.header.to_msg() == theirs.header
    _assert_same_outcome(image_to_rgb, raw, theirs)


@pytest.mark.parametrize("encoding", sorted(BYTES_PER_PIXEL))
@pytest.mark.parametrize(("width", "pad"), [(6, 0), (6, 5), (7, 0), (7, 2)])
def test_every_encoding_converts_as_the_message_does(encoding, width, pad):
    """Each encoding, even and odd widths (refused for YUV and Bayer), with and without row
    padding, converts (or is refused) exactly as the deserialised message."""
    step = width * BYTES_PER_PIXEL[encoding] + pad
    data = np.random.default_rng(width + pad).integers(0, 256, step * 4, np.uint8).tobytes()
    msg = Image(height=4, width=width, encoding=encoding, step=step, data=data)
    raw = read_image(serialize_message(msg))
    _assert_reads_as(raw, msg)
    _assert_same_outcome(image_to_rgb, raw, msg)
    assert isinstance(_outcome(image_to_rgb, raw), np.ndarray) == (
        width % 2 == 0 or BYTES_PER_PIXEL[encoding] not in (1, 2) or encoding == "mono8"
    )


@SETTINGS
@given(images())
def test_a_big_endian_image_reads_as_its_little_endian_twin(msg):
    little, big = _cdr(msg, "<")[0], _cdr(msg, ">")[0]
    assert little != big
    assert read_image(big).header == read_image(little).header
    _assert_reads_as(read_image(big), msg)
    _assert_same_outcome(image_to_rgb, read_image(big), msg)


def test_the_pixels_are_a_read_only_view_of_the_taken_bytes():
    msg = encode_image(np.arange(60, dtype=np.uint8).reshape(4, 5, 3), "rgb8", Header())
    for buffer in (serialize_message(msg), bytearray(serialize_message(msg))):
        raw = read_image(buffer)
        assert np.shares_memory(raw.data, np.frombuffer(buffer, np.uint8))
        assert not raw.data.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            raw.data[0] = 1
        assert np.array_equal(image_to_rgb(raw, MAX), image_to_rgb(msg, MAX))


@st.composite
def compressed_images(draw) -> CompressedImage:
    """Random bytes under any format string, or a real small JPEG / PNG."""
    named = st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8"])
    fmt = draw(st.one_of(named, st.text(st.characters(codec="utf-8", exclude_characters="\x00"))))
    kind = draw(st.sampled_from(["random", ".jpg", ".png"]))
    if kind == "random":
        data = draw(st.binary(max_size=300))
    else:
        shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)), 3)
        seed = draw(st.integers(0, 2**16))
        pixels = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
        data = cv2.imencode(kind, pixels)[1].tobytes()
    return CompressedImage(header=draw(headers()), format=fmt, data=data)


@SETTINGS
@given(compressed_images())
def test_a_serialised_compressed_image_reads_and_decodes_as_rclpy_deserialises_it(msg):
    buffer = serialize_message(msg)
    raw = read_compressed_image(buffer)
    theirs = deserialize_message(buffer, CompressedImage)
    assert _header_equal(raw.header, theirs.header) and raw.format == theirs.format
    assert raw.data.tobytes() == bytes(theirs.data)
    assert raw.data.size == 0 or np.shares_memory(raw.data, np.frombuffer(buffer, np.uint8))
    assert not raw.data.flags.writeable
    _assert_same_outcome(check_compressed, raw, theirs)
    _assert_same_outcome(compressed_to_rgb, raw, theirs)
    big = read_compressed_image(_cdr(msg, ">")[0])
    assert (big.header, big.format) == (raw.header, raw.format)
    assert np.array_equal(big.data, raw.data)


def test_real_jpeg_and_png_decode_through_the_raw_path():
    pixels = np.random.default_rng(5).integers(0, 256, (9, 13, 3), np.uint8)
    for ext, fmt in ((".png", "png"), (".jpg", "jpeg")):
        msg = CompressedImage(format=fmt, data=cv2.imencode(ext, pixels)[1].tobytes())
        raw = read_compressed_image(serialize_message(msg))
        assert isinstance(raw, RawCompressedImage)
        rgb = compressed_to_rgb(raw, MAX)
        assert rgb.shape == (9, 13, 3) and np.array_equal(rgb, compressed_to_rgb(msg, MAX))
        if ext == ".png":
            assert np.array_equal(rgb, pixels[..., ::-1])


# -- hostile geometry and content: the same refusals as the message path -----------------------


def _cases(test) -> list:
    """The (fields or frame, reason, message) cases a test in test_conversions is run with."""
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    return [tuple(case.values) if hasattr(case, "values") else case for case in mark.args[1]]


SERIALISABLE_RAW = [  # the in-process-only 'geometry' cases (-1, 2**40, 18.0) have no bytes
    case for case in _cases(hostile_raw) if case[1] != "geometry"
]


def _image(**fields) -> Image:
    msg = Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(72))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(("fields", "reason", "message"), SERIALISABLE_RAW)
def test_every_hostile_image_geometry_is_refused_as_the_message_is(fields, reason, message):
    msg = _image(**fields)
    raw = read_image(serialize_message(msg))
    for check in (check_image, image_to_rgb):
        with pytest.raises(ImageRejectedError, match=re.escape(message)) as e:
            check(raw, MAX)
        assert e.value.reason == reason
        assert _outcome(check, raw) == _outcome(check, msg)


def test_the_hostile_geometry_list_is_the_whole_list_less_the_in_process_cases():
    assert len(SERIALISABLE_RAW) >= 25
    assert {case[1] for case in SERIALISABLE_RAW} >= {"zero_size", "too_large", "data_length"}


@pytest.mark.parametrize(("data", "fmt", "reason", "message"), _cases(hostile_compressed))
def test_every_hostile_compressed_frame_is_refused_as_the_message_is(data, fmt, reason, message):
    msg = CompressedImage(format=fmt, data=data)
    raw = read_compressed_image(serialize_message(msg))
    with pytest.raises(ImageRejectedError, match=re.escape(message)) as e:
        compressed_to_rgb(raw, MAX)
    assert e.value.reason == reason
    assert _outcome(compressed_to_rgb, raw) == _outcome(compressed_to_rgb, msg)


# -- malformed bytes ---------------------------------------------------------------------------

SMALL = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(6)))
SMALL.header.frame_id = "cam"
SMALL.header.stamp.sec = 12
SMALL_BYTES = serialize_message(SMALL)
# offsets in SMALL_BYTES: 4 sec, 8 nanosec, 12 frame_id length, 16 "cam\0", 20 height, 24 width,
# 28 encoding length, 32 "mono8\0", 38 is_bigendian, 40 step, 44 data length, 48 data
assert SMALL_BYTES[16:20] == b"cam\x00" and SMALL_BYTES[32:38] == b"mono8\x00"
assert len(SMALL_BYTES) == 54


def _refused(buffer, reader=read_image) -> str:
    with pytest.raises(MalformedMessageError) as e:
        reader(buffer)
    assert e.value.reason == "serialization" and isinstance(e.value, ImageRejectedError)
    return str(e.value)


def _patched(offset: int, new: bytes, buffer: bytes = SMALL_BYTES) -> bytes:
    return buffer[:offset] + new + buffer[offset + len(new) :]


def test_every_truncation_is_a_malformed_message():
    assert read_image(SMALL_BYTES).data.tobytes() == bytes(range(6))
    for cut in range(len(SMALL_BYTES)):
        message = _refused(SMALL_BYTES[:cut])
        assert f"({cut} bytes)" in message and " at byte " in message
    compressed = serialize_message(CompressedImage(format="jpeg", data=b"\xff\xd8\xff"))
    for cut in range(len(compressed)):
        _refused(compressed[:cut], read_compressed_image)


@pytest.mark.parametrize(
    ("offset", "field", "left"),
    [(12, "header.frame_id", 38), (28, "encoding", 22), (44, "data", 6)],
)
@pytest.mark.parametrize("past", [1, 1000, 2**31, None])
def test_a_length_past_the_end_is_a_malformed_message(offset, field, left, past):
    length = 2**32 - 1 if past is None else left + past
    message = _refused(_patched(offset, struct.pack("<I", length)))
    assert f"{field} ({length} bytes" in message and f"{left} left at byte {offset + 4}" in message


def test_a_data_length_below_the_buffer_reads_and_is_refused_by_check_image():
    raw = read_image(_patched(44, struct.pack("<I", 5)))
    assert raw.data.tobytes() == bytes(range(5))
    with pytest.raises(ImageRejectedError, match="data length 5 != step 3 x height 2") as e:
        check_image(raw, MAX)
    assert e.value.reason == "data_length"


@pytest.mark.parametrize(
    ("encapsulation", "name"),
    [
        (b"\x00\x02", "PL_CDR_BE"),
        (b"\x00\x03", "PL_CDR_LE"),
        (b"\x00\x07", "CDR2_LE"),
        (b"\x00\x0b", "PL_CDR2_LE"),
        (b"\x12\x34", "0x1234 unknown"),
        (b"\x01\x00", "0x0100 unknown"),
    ],
)
def test_an_encapsulation_other_than_plain_cdr_is_refused_by_name(encapsulation, name):
    message = _refused(_patched(0, encapsulation))
    assert name in message and "not plain CDR" in message


def test_strings_without_their_nul_or_not_utf8_are_malformed():
    assert "frame_id of 4 bytes does not end with a NUL" in _refused(_patched(19, b"x"))
    assert "encoding of 6 bytes does not end with a NUL" in _refused(_patched(37, b"x"))
    assert "frame_id is not UTF-8" in _refused(_patched(16, b"\xff"))
    assert "encoding is not UTF-8" in _refused(_patched(33, b"\xc3\x28"))
    assert "frame_id has a NUL inside it at byte 17" in _refused(_patched(17, b"\x00"))


def test_a_zero_string_length_reads_as_the_empty_string():
    zero = SMALL_BYTES[:12] + struct.pack("<I", 0) + SMALL_BYTES[20:]  # as Fast CDR reads it
    assert read_image(zero).header.frame_id == "" and read_image(zero).encoding == "mono8"


def test_what_is_not_a_byte_buffer_is_a_malformed_message():
    assert "str is not a byte buffer" in _refused("not bytes")
    assert "shorter than the encapsulation header" in _refused(b"\x00\x01")


def test_bytes_after_the_message_are_ignored():
    assert read_image(SMALL_BYTES + b"\x00\x00").data.tobytes() == bytes(range(6))


@st.composite
def mangled(draw) -> bytes:
    """A small serialised image or compressed image with bytes overwritten, cut or appended,
    or random bytes after a plain-CDR encapsulation."""
    if draw(st.booleans()):
        return draw(st.sampled_from([LITTLE, BIG])) + draw(st.binary(max_size=80))
    base = bytearray(draw(st.sampled_from([SMALL_BYTES, _COMPRESSED_BYTES])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(base) - 1))
        base[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
    return bytes(base[: draw(st.integers(0, len(base)))]) + draw(st.binary(max_size=4))


_COMPRESSED_BYTES = serialize_message(CompressedImage(format="png", data=b"\x89PNG\r\n\x1a\n"))


@SETTINGS
@given(mangled())
def test_mangled_bytes_give_a_frame_or_a_malformed_message_never_another_error(buffer):
    for reader, convert in ((read_image, image_to_rgb), (read_compressed_image, compressed_to_rgb)):
        try:
            frame = reader(buffer)
        except MalformedMessageError as error:
            assert error.reason == "serialization" and " at byte " in str(error)
            continue
        assert frame.data.size == 0 or np.shares_memory(frame.data, np.frombuffer(buffer, np.uint8))
        _outcome(convert, frame)  # an array or an ImageRejectedError, nothing else


# -- writing outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame_id", ["", "a", "cam", "ü" * 150], ids=["empty", "a", "cam", "umlauts"]
)
@pytest.mark.parametrize(
    ("shape", "encoding"), [((5, 7), "mono8"), ((3, 4, 3), "rgb8"), ((1, 1, 3), "bgr8")]
)
def test_image_bytes_are_the_serialised_encoded_message(frame_id, shape, encoding):
    header = RawHeader(-5, 999_999_999, frame_id)
    array = np.random.default_rng(6).integers(0, 256, shape, np.uint8)
    ours = image_bytes(header, array, encoding)
    msg = encode_image(array, encoding, header.to_msg())
    _assert_same_but_padding(ours, msg)
    assert deserialize_message(ours, Image) == msg
    raw = read_image(ours)
    assert raw.header == header and np.array_equal(raw.data, array.reshape(-1))


def test_image_bytes_refuses_what_encode_image_refuses():
    for array, encoding in ((np.zeros((2, 3, 3), np.uint8), "mono8"), (np.zeros(6), "mono8")):
        with pytest.raises(ValueError, match="cannot encode an array of shape"):
            image_bytes(RawHeader(0, 0, ""), array, encoding)


def _detections(count: int, seed: int = 0, big_ids: bool = False):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 500, (count, 2))
    boxes = np.hstack([corner, corner + rng.uniform(0.5, 90, (count, 2))]).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    classes = rng.integers(-(10**12) if big_ids else 0, 10**12 if big_ids else 19, count)
    return boxes, scores, classes


@pytest.mark.parametrize("count", [0, 1, 2, 7, 100])
@pytest.mark.parametrize(
    "frame_id",
    ["", "cam", "camera_optical_frame", "x" * 300, "ü" * 77],
    ids=["empty", "cam", "optical", "300x", "77-umlauts"],
)
@pytest.mark.parametrize("big_ids", [False, True])
def test_detections_bytes_are_the_serialised_detections_message(count, frame_id, big_ids):
    header = RawHeader(1_700_000_000, 5, frame_id)
    boxes, scores, classes = _detections(count, count, big_ids)
    ours = detections_bytes(header, boxes, scores, classes)
    msg = detections_message(header.to_msg(), boxes, scores, classes)
    _assert_same_but_padding(ours, msg)
    back = deserialize_message(ours, Detection2DArray)
    assert back == msg and len(back.detections) == count
    if count:
        first = back.detections[0]
        assert first.results[0].hypothesis.class_id == str(int(classes[0]))
        assert first.bbox.center.position.x == (float(boxes[0, 0]) + float(boxes[0, 2])) / 2
        assert first.results[0].pose.pose.orientation.w == 1.0 and first.header.frame_id == frame_id


@SETTINGS
@given(
    headers(),
    st.lists(
        st.tuples(
            st.lists(st.floats(-1e6, 1e6, width=32), min_size=4, max_size=4),
            st.floats(0, 1, width=32),
            st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 30)),
        ),
        max_size=12,
    ),
)
def test_any_detections_serialise_as_the_message_path_does(header, rows):
    boxes = np.array([r[0] for r in rows], np.float32).reshape(-1, 4)
    scores = np.array([r[1] for r in rows], np.float32)
    classes = np.array([r[2] for r in rows], np.int64)
    raw = RawHeader.from_msg(header)
    ours = detections_bytes(raw, boxes, scores, classes)
    msg = detections_message(header, boxes, scores, classes)
    _assert_same_but_padding(ours, msg)
    assert deserialize_message(ours, Detection2DArray) == msg


def test_float_class_values_become_their_integer_ids_as_in_the_message_path():
    boxes, scores, _ = _detections(3)
    classes = np.array([2.0, 7.9, 11.0], np.float32)
    ours = detections_bytes(RawHeader(0, 0, "f"), boxes, scores, classes)
    back = deserialize_message(ours, Detection2DArray)
    assert [d.results[0].hypothesis.class_id for d in back.detections] == ["2", "7", "11"]
    assert back == detections_message(RawHeader(0, 0, "f").to_msg(), boxes, scores, classes)


def test_no_detections_in_any_empty_arrays_are_an_empty_array_message():
    empty = Detection2DArray(header=RawHeader(3, 4, "c").to_msg())
    for boxes in (np.zeros((0, 4), np.float32), np.zeros(0), []):
        ours = detections_bytes(RawHeader(3, 4, "c"), boxes, np.zeros(0), np.zeros(0))
        _assert_same_but_padding(ours, empty)


def test_detections_of_mismatched_lengths_are_refused():
    boxes, scores, classes = _detections(3)
    with pytest.raises(ValueError, match=r"expected \(N, 4\), N and N"):
        detections_bytes(RawHeader(0, 0, ""), boxes, scores[:2], classes)
    with pytest.raises(ValueError, match="boxes of shape"):
        detections_bytes(RawHeader(0, 0, ""), boxes[:, :3], scores, classes)


def test_a_header_round_trips_through_its_message():
    header = RawHeader(-7, 4_000_000_000, "ü-frame")
    assert RawHeader.from_msg(header.to_msg()) == header
