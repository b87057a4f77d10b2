"""sensor_msgs images <-> numpy, with every malformed or hostile input refused by name.

Input images are converted to RGB through cv_bridge where it imports (a system ROS 2), else here
with OpenCV, after :func:`check_image` has verified the geometry; output images are encoded here
(mono8, rgb8, bgr8 need no library). Not rosbags-image: it ignores row padding (step larger than
width x channels) and reads ``yuv422`` as YUYV, where sensor_msgs and cv_bridge mean UYVY.

Compressed frames are checked before anything decodes them (:func:`check_compressed`): Pillow
identifies the format from the first bytes and reads the declared width and height from the
header alone (a 335-byte JPEG can declare 30000x30000, which OpenCV would allocate and fill before
any size check); only JPEG and PNG (what image_transport's compressed plugin writes) within
``max_pixels`` reach ``cv2.imdecode``, and a decoded size other than the declared one is refused.

Every refusal is an :class:`ImageRejectedError` whose ``reason`` is one of
:data:`REJECTION_REASONS`; no other exception type leaves these functions for any message content.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from array import array as ByteArray
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import JpegImagePlugin, PngImagePlugin
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..data.quiet_decode import imdecode_quietly

if TYPE_CHECKING:
    from .raw_messages import RawCompressedImage, RawImage

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
# sensor_msgs encodings with more than 8 bits per channel: refused by name (the network takes
# 8-bit colour; scaling depth or thermal data to it would be a silent guess).
_DEEP_ENCODING = re.compile(
    r"(mono|rgb|bgr|rgba|bgra)16|bayer_(rggb|bggr|gbrg|grbg)16|(16U|16S|32S|32F|64F)C\d*"
)
CONVERTER = "cv_bridge" if _BRIDGE is not None else "opencv"

REJECTION_REASONS = (
    "geometry",  # height, width or step not an unsigned 32-bit integer (only in-process)
    "zero_size",  # width or height 0
    "too_large",  # more than max_pixels (declared in the header, for compressed frames)
    "encoding",  # unknown or unsupported encoding
    "bit_depth",  # a 16/32/64-bit encoding
    "step",  # row length below width x bytes per pixel
    "data_length",  # data length != step x height
    "odd_width",  # yuv422 family with an odd width
    "odd_size",  # Bayer with an odd width or height
    "empty",  # compressed frame without data
    "format",  # compressed content neither JPEG nor PNG (or a compressedDepth frame)
    "format_mismatch",  # the format string names JPEG and the content is PNG, or the reverse
    "header",  # JPEG/PNG header unreadable, or longer than HEADER_BYTES
    "truncated",  # JPEG or PNG without its end marker
    "ancillary",  # PNG with more compressed ancillary chunks than MAX_COMPRESSED_CHUNKS
    "undecodable",  # OpenCV could not decode it
    "size_mismatch",  # decoded size differs from the declared one
    # a serialised (CDR) frame that cannot be read: truncated, a length past its end, not plain
    # CDR, a string without its NUL or not UTF-8 (raw_messages.MalformedMessageError)
    "serialization",
)
# A JPEG's header (every marker segment before the first scan) must fit in this many bytes:
# camera JPEGs need a few hundred, an EXIF segment at most 64 KiB. It bounds the time Pillow's
# pure-Python marker scan can spend on a hostile frame (a few ms per 64 KiB of ordinary
# segments; see docs/benchmarks.md for the worst case).
HEADER_BYTES = 64 * 1024
# libpng inflates each zTXt/iTXt/iCCP chunk up to 8 MB (about 30 ms of CPU each) even though the
# image needs none of them; more than this many in one frame is refused.
MAX_COMPRESSED_CHUNKS = 8
# The end marker (JPEG: EOI 0xFFD9, which cannot occur inside entropy-coded data; PNG: the IEND
# chunk) must follow the header: a stream cut short has none. It is looked for in the last
# TAIL_BYTES first (where a camera's frame has it), then in the whole rest: data appended after
# it (a thumbnail, padding, another file) are decoded past as OpenCV and image_transport do.
TAIL_BYTES = 64 * 1024
_END_MARKER = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_PNG_COMPRESSED_CHUNKS = (b"zTXt", b"iTXt", b"iCCP")
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # pixels as stored, as
# image_transport's compressed subscriber decodes them; the declared size is the stored size
_PILLOW_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide state


class ImageRejectedError(ValueError):
    """An input image that cannot be processed; the message says why.

    Attributes:
        reason: a short machine-readable code from :data:`REJECTION_REASONS` (counted per reason
            in the node's diagnostics).
    """

    def __init__(self, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


class MalformedMessageError(ImageRejectedError):
    """A serialised message that cannot be read (truncated, a length past the end, an unknown
    encapsulation, a string without its terminating NUL or not UTF-8, ...); the message names
    what and the byte offset. Its reason is always ``serialization``."""

    def __init__(self, message: str, reason: str = "serialization") -> None:
        super().__init__(message, reason)


@dataclass(frozen=True)
class DeclaredImage:
    """What a compressed frame's header declares, read before any decoding."""

    format: str  # "JPEG" or "PNG"
    width: int
    height: int
    mode: str  # Pillow's mode name (L, RGB, CMYK, P, RGBA, I;16, ...)
    header_end: int  # offset of the first byte after the header Pillow read


def _quote(text: object, limit: int = 40) -> str:
    """``text`` for a log line: repr'd (control characters escaped), cut to ``limit``."""
    text = str(text)
    return repr(text[:limit]) + (f"... ({len(text)} characters)" if len(text) > limit else "")


def _uint32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def check_image(msg: Image | RawImage, max_pixels: int) -> None:
    """Raises :class:`ImageRejectedError` unless ``msg`` is a well-formed image we can convert.

    ``msg`` is a sensor_msgs/Image (rclpy or rosbags) or a :class:`.raw_messages.RawImage`.
    Geometry only, O(1): the pixel data are not read.
    """
    height, width, step = msg.height, msg.width, msg.step
    if not (_uint32(height) and _uint32(width) and _uint32(step)):
        raise ImageRejectedError(
            f"height {height!r}, width {width!r} and step {step!r} must be unsigned 32-bit "
            "integers",
            "geometry",
        )
    if height == 0 or width == 0:
        raise ImageRejectedError(f"zero-size image {width}x{height}", "zero_size")
    if height * width > max_pixels:
        raise ImageRejectedError(
            f"image {width}x{height} exceeds max_pixels={max_pixels}", "too_large"
        )
    encoding = msg.encoding
    channels = BYTES_PER_PIXEL.get(encoding) if isinstance(encoding, str) else None
    if channels is None:
        if isinstance(encoding, str) and _DEEP_ENCODING.fullmatch(encoding):
            raise ImageRejectedError(
                f"unsupported encoding '{encoding}': more than 8 bits per channel "
                f"(supported: {', '.join(BYTES_PER_PIXEL)})",
                "bit_depth",
            )
        raise ImageRejectedError(
            f"unsupported encoding {_quote(encoding)} (supported: {', '.join(BYTES_PER_PIXEL)})",
            "encoding",
        )
    if step < width * channels:
        raise ImageRejectedError(
            f"step {step} < width {width} x {channels} bytes per pixel ({encoding})", "step"
        )
    size = len(_byte_view(msg.data))
    if size != step * height:  # exact (Python integers): height x step cannot wrap around
        raise ImageRejectedError(
            f"data length {size} != step {step} x height {height}", "data_length"
        )
    if channels == 2 and width % 2:
        raise ImageRejectedError(f"{encoding} needs an even width, got {width}", "odd_width")
    if encoding.startswith("bayer") and (width % 2 or height % 2):
        raise ImageRejectedError(
            f"{encoding} needs even width and height, got {width}x{height}", "odd_size"
        )


def image_to_rgb(msg: Image | RawImage, max_pixels: int) -> np.ndarray:
    """A checked sensor_msgs/Image or RawImage -> (H, W, 3) uint8 RGB.

    An unpadded rgb8 image comes back as a view of its data (read-only for a RawImage).
    """
    check_image(msg, max_pixels)
    channels = BYTES_PER_PIXEL[msg.encoding]
    if _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as error:  # cv_bridge raises its own types
            raise ImageRejectedError(
                f"cannot convert {msg.encoding} image: {error}", "undecodable"
            ) from error
    rows = np.frombuffer(_byte_view(msg.data), np.uint8).reshape(msg.height, msg.step)
    rows = rows[:, : msg.width * channels]  # drop row padding
    pixels = rows.reshape(msg.height, msg.width, channels) if channels > 1 else rows
    code = _TO_RGB[msg.encoding]
    if code is None:  # rgb8: no conversion; a view when rows are unpadded
        return pixels if msg.step == msg.width * 3 else np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def _format_of(prefix: bytes) -> str | None:
    """The Pillow format name whose signature ``prefix`` carries (JPEG, PNG, GIF, WEBP, ...).

    Only Pillow's signature checks run (no plugin opens anything); JPEG and PNG are tried first,
    then every other format in Pillow's order.
    """
    PILImage.init()
    for name in ("JPEG", "PNG", *PILImage.ID):  # the two we take first
        accept = PILImage.OPEN[name][1]
        if accept is None:
            continue
        try:
            accepted = accept(prefix)
        except Exception:  # a signature check on a short prefix; not this format
            continue
        if accepted is True or (accepted and not isinstance(accepted, str)):
            return name
    return None


def _read_header(fmt: str, data: memoryview) -> tuple[int, int, str, int]:
    """Pillow's header parser for ``fmt`` on the header bytes only; nothing is decoded.

    A JPEG is parsed up to its first scan (within HEADER_BYTES); a PNG up to its IHDR chunk
    (Pillow's own chunk reader and IHDR parser, CRC checked), so later chunks, text ones
    included, are neither read nor inflated here.

    Returns:
        Declared width, height, Pillow mode, and the offset just past the header.
    """
    if fmt == "JPEG":
        stream = io.BytesIO(data[:HEADER_BYTES])
        image = JpegImagePlugin.JpegImageFile(stream)
        return image.size[0], image.size[1], image.mode, stream.tell()
    chunks = PngImagePlugin.PngStream(io.BytesIO(data[8:41]))  # after the signature: IHDR
    cid, pos, length = chunks.read()
    if cid != b"IHDR":
        raise SyntaxError(f"first chunk is {cid!r}, not IHDR")
    chunks.crc(cid, chunks.call(cid, pos, length))
    if not chunks.im_mode:
        raise SyntaxError("invalid bit depth / colour type combination in IHDR")
    return chunks.im_size[0], chunks.im_size[1], chunks.im_mode, 8 + pos + length + 4


def _declared(fmt: str, data: memoryview) -> DeclaredImage:
    """:func:`_read_header`, with Pillow's errors and warnings turned into rejections."""
    with _PILLOW_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            width, height, mode, header_end = _read_header(fmt, data)
        except PILImage.DecompressionBombError as error:
            raise ImageRejectedError(f"{fmt} {error}", "too_large") from None
        except Exception as error:  # SyntaxError, OSError, ValueError, struct.error, ...
            cut = fmt == "JPEG" and len(data) > HEADER_BYTES
            where = f" within its first {HEADER_BYTES} bytes" if cut else ""
            raise ImageRejectedError(
                f"unreadable {fmt} header{where}: {type(error).__name__}: {error}", "header"
            ) from None
    others = []
    for warning in caught:
        if isinstance(warning.message, PILImage.DecompressionBombWarning):
            raise ImageRejectedError(f"{fmt} {warning.message}", "too_large")
        if "/PIL/" in warning.filename.replace("\\", "/"):
            raise ImageRejectedError(f"corrupt {fmt} header: {warning.message}", "header")
        others.append(warning)  # another thread's warning, caught by accident: passed on
    for warning in others:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return DeclaredImage(fmt, width, height, mode, header_end)


def _byte_view(data: object) -> memoryview:
    """The message's data as a flat byte view (rclpy: array.array; rosbags: numpy; bytes)."""
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError):
        try:
            return memoryview(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1))
        except (TypeError, ValueError, OverflowError) as error:
            raise ImageRejectedError(
                f"data of type {type(data).__name__} is not a byte sequence", "data_length"
            ) from error


def check_compressed(msg: CompressedImage | RawCompressedImage, max_pixels: int) -> DeclaredImage:
    """Reads a sensor_msgs/CompressedImage's declared format and size without decoding it.

    Raises :class:`ImageRejectedError` for empty data, content other than JPEG or PNG (named),
    a format string naming the other of the two, an unreadable header, a declared size of zero
    or above ``max_pixels``, and a stream without its end marker after the header (truncated).
    Reads the header and the last TAIL_BYTES; the rest only when the end marker is not there.

    Returns:
        The declared format, width, height and Pillow mode.
    """
    data = _byte_view(msg.data)
    label = _quote(msg.format)
    if len(data) == 0:
        raise ImageRejectedError(f"empty compressed image (format {label})", "empty")
    names = set(re.findall(r"[a-z0-9]+", str(msg.format).lower()))
    if "compresseddepth" in names:
        raise ImageRejectedError(
            f"compressedDepth images are not supported (format {label})", "format"
        )
    fmt = _format_of(bytes(data[:16]))
    if fmt not in ("JPEG", "PNG"):
        found = f"{fmt} data" if fmt else f"unrecognised data {bytes(data[:8])!r}..."
        raise ImageRejectedError(
            f"compressed image is {found} (format {label}, {len(data)} bytes): only JPEG and "
            "PNG are accepted",
            "format",
        )
    claims = {"JPEG"} if names & {"jpeg", "jpg"} else set()
    claims |= {"PNG"} if "png" in names else set()
    if len(claims) == 1 and fmt not in claims:
        raise ImageRejectedError(
            f"format {label} says {claims.pop()} but the data are {fmt}", "format_mismatch"
        )
    declared = _declared(fmt, data)
    width, height = declared.width, declared.height
    if width == 0 or height == 0:
        raise ImageRejectedError(
            f"zero-size {fmt} declared in its header: {width}x{height}", "zero_size"
        )
    if width * height > max_pixels:
        raise ImageRejectedError(
            f"{fmt} header declares {width}x{height}, which exceeds max_pixels={max_pixels} "
            f"({len(data)} bytes; not decoded)",
            "too_large",
        )
    if not _has_end_marker(fmt, data, declared.header_end):
        raise ImageRejectedError(
            f"truncated {fmt}: no {_END_MARKER[fmt]!r} end marker anywhere after its header "
            f"({len(data)} bytes)",
            "truncated",
        )
    return declared


def _has_end_marker(fmt: str, data: memoryview, header_end: int) -> bool:
    """Whether ``fmt``'s end marker lies after the header: the last TAIL_BYTES are searched
    first, the whole rest only when it is not there (bytes after the marker)."""
    marker = _END_MARKER[fmt]
    tail_start = max(header_end, len(data) - TAIL_BYTES)
    if marker in bytes(data[tail_start:]):
        return True
    overlap = len(marker) - 1  # a marker straddling the tail's start
    return marker in bytes(data[header_end : tail_start + overlap])


def compressed_to_rgb(msg: CompressedImage | RawCompressedImage, max_pixels: int) -> np.ndarray:
    """A sensor_msgs/CompressedImage or RawCompressedImage (JPEG or PNG) -> (H, W, 3) uint8 RGB.

    :func:`check_compressed` first; OpenCV decodes only a frame whose declared size is within
    ``max_pixels``, and its output must have exactly the declared size.
    """
    declared = check_compressed(msg, max_pixels)
    data = _byte_view(msg.data)
    if declared.format == "PNG":
        whole = bytes(data)
        chunks = sum(whole.count(tag) for tag in _PNG_COMPRESSED_CHUNKS)  # an upper bound
        if chunks > MAX_COMPRESSED_CHUNKS:
            raise ImageRejectedError(
                f"PNG with {chunks} compressed text/ICC chunks (at most "
                f"{MAX_COMPRESSED_CHUNKS}): each would be inflated before the pixels",
                "ancillary",
            )
    try:
        decoded, printed = imdecode_quietly(data, _DECODE_FLAGS)
    except cv2.error as error:
        raise ImageRejectedError(
            f"undecodable {declared.format} ({len(data)} bytes): {error}", "undecodable"
        ) from None
    if decoded is None or decoded.dtype != np.uint8 or decoded.ndim != 3 or decoded.shape[2] != 3:
        said = f": {printed}" if printed else ""
        raise ImageRejectedError(
            f"undecodable {declared.format} (format {_quote(msg.format)}, {len(data)} bytes){said}",
            "undecodable",
        )
    if decoded.shape[:2] != (declared.height, declared.width):
        raise ImageRejectedError(
            f"{declared.format} decoded to {decoded.shape[1]}x{decoded.shape[0]}, its header "
            f"declares {declared.width}x{declared.height}",
            "size_mismatch",
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def encodable_array(array: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """``array`` as C-contiguous uint8 and its channel count, if ``encoding`` can hold it:
    (H, W) for mono8, (H, W, 3) for rgb8 / bgr8.

    Raises:
        ValueError: any other shape or encoding.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if (encoding == "mono8") != (channels == 1) or channels not in (1, 3):
        raise ValueError(f"cannot encode an array of shape {array.shape} as {encoding}")
    return array, channels


def encode_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """(H, W) mono8 or (H, W, 3) rgb8/bgr8 uint8 -> sensor_msgs/Image with ``header``.

    The pixels are copied once, straight into the message's ``array('B')`` (``tobytes()`` and
    the message's own conversion of bytes would copy them twice more).
    """
    array, channels = encodable_array(array, encoding)
    height, width = array.shape[:2]
    data = ByteArray("B")
    data.frombytes(memoryview(array).cast("B"))
    msg = Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
    )
    msg.data = data
    return msg
