"""``cv2.imdecode`` with what the codec libraries print kept for the caller's message.

libpng, libjpeg and OpenCV's logger complain about a damaged file straight on the process's
stderr (file descriptor 2, below Python): ``libpng error: IDAT: CRC error``, ``Corrupt JPEG
data: ...``, ``[ WARN:0@1.2] global grfmt_png.cpp:793 ... PNG input buffer is incomplete``.
Printed before a tool's one-line refusal they read as a second, unexplained error. Here fd 2
points at a temporary file while OpenCV decodes, and what landed there is returned: a caller
puts it in its refusal when the decoding failed; after a successful decoding it is written back
to stderr as it was, so nothing printed is lost.

Decodings are serialised (fd 2 is one per process). Another thread's own stderr output during
a decoding (milliseconds) is caught with the codec's: written back after a success, part of the
returned text after a failure.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

_STDERR_LOCK = threading.Lock()
_SINK: tuple[int, int] | None = None  # (process id, file descriptor) of the capture file
# OpenCV's log prefix: "[ WARN:0@0.041] global grfmt_png.cpp:793 readFromStreamOrBuffer "
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*[A-Z]+:[\d@.]+\]\s+(?:global\s+)?\S+:\d+\s+\S+\s+")


def _sink() -> int:
    """This process's capture file (created once per process: a forked DataLoader worker must
    not share its parent's file offset; emptied after each use, under the lock)."""
    global _SINK
    if _SINK is None or _SINK[0] != os.getpid():
        descriptor, name = tempfile.mkstemp(prefix="mtl_codec_messages_")
        Path(name).unlink()  # nothing to clean up at exit; the descriptor keeps it
        _SINK = (os.getpid(), descriptor)
    return _SINK[1]


def _drain(sink: int) -> bytes:
    """What the capture file holds; empties it."""
    size = os.fstat(sink).st_size
    printed = os.pread(sink, size, 0) if size else b""
    os.ftruncate(sink, 0)
    os.lseek(sink, 0, os.SEEK_SET)
    return printed


def codec_message(printed: str) -> str:
    """What the codec libraries printed, on one line: lines joined with '; ', OpenCV's log
    prefix (level, time, source file, function) dropped."""
    lines = (_OPENCV_LOG_PREFIX.sub("", line).strip() for line in printed.splitlines())
    return "; ".join(line for line in lines if line)


def imdecode_quietly(
    data: bytes | memoryview | np.ndarray, flags: int
) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode(data, flags)`` with the codecs' stderr output captured.

    Args:
        data: the encoded file's bytes.
        flags: ``cv2.IMREAD_*`` flags.

    Returns:
        The decoded array ((H, W) or (H, W, C), or None where OpenCV could not decode it) and,
        when it is None, what the codecs printed (:func:`codec_message`; '' if nothing). After
        a successful decoding the text is '' and whatever was printed went on to stderr.

    Raises:
        cv2.error: as ``cv2.imdecode`` raises it (stderr restored first; what the codecs
            printed is dropped, the error carries OpenCV's reason).
    """
    buffer = np.frombuffer(data, np.uint8)
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep quiet
            return cv2.imdecode(buffer, flags), ""
        sink = _sink()
        sys.stderr.flush()  # Python's buffered text goes where it was meant to
        os.dup2(sink, 2)
        try:
            decoded = cv2.imdecode(buffer, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            text = _drain(sink).decode(errors="replace")  # a cv2.error says its own reason
    if decoded is None:
        return None, codec_message(text)
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()
    return decoded, ""
