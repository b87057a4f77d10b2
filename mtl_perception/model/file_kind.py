"""What a file given as a model is, told from its first bytes, for a refusal that says so.

``torch.load`` answers a file of another kind with a paragraph about ``weights_only`` (or a bare
``KeyError`` for some text files), onnx with a bare ``DecodeError``; a user who passed an ONNX
export as a checkpoint (or the reverse), a YAML config or an empty file needs to hear which it
is, and where it goes instead. A path that is no regular file (a FIFO, a device, a symlink
loop) is named as such without being opened: opening a FIFO would block.
"""

from __future__ import annotations

import errno
import json
import re
import stat
import zipfile
from pathlib import Path

SNIFF_BYTES = 4096
ONNX_HINT = (
    "evaluate it with mtl-eval --onnx FILE, run it in the node with backend:=onnxruntime "
    "onnx_model:=FILE"
)
_MAGIC = (
    (b"\x93NUMPY", "a NumPy array file (.npy)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras .h5?)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
)


TORCH_FILE = (
    "a torch checkpoint (give it to the node as checkpoint:=FILE with backend:=torch, "
    "to mtl-eval as --checkpoint FILE)"
)
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular_file(path: Path, what: str) -> None:
    """Refuses a ``path`` that is not a regular file, without opening it.

    Args:
        path: the file given.
        what: what it was given as, for the message ("checkpoint", "ONNX model").

    Raises:
        FileNotFoundError: nothing there, or a symlink to nothing ("<what> not found: PATH").
        ValueError: a symlink loop, a folder, a FIFO, a device or a socket, named; or a path
            that cannot be looked at (the system's reason).
    """
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(f"{what} not found: {path}") from None
        if error.errno == errno.ELOOP:
            raise ValueError(f"{what} {path} is a symlink loop, not a file") from None
        raise ValueError(f"{what} {path} cannot be read: {error.strerror}") from None
    if stat.S_ISREG(mode):
        return
    kind = "a folder" if stat.S_ISDIR(mode) else "a special file"
    for test, name in _SPECIAL_FILES:
        if test(mode):
            kind = name
    raise ValueError(f"{what} {path} is not a regular file: it is {kind}")


def file_kind(path: Path) -> str | None:
    """What ``path`` holds when it is not a torch file, in a few words ("an empty file",
    "an ONNX model (...)", "a YAML file ..."); None for a torch file (zip archive with a
    ``data.pkl``, or a pickle) or one that cannot be read."""
    kind = describe_file(path)
    return None if kind == TORCH_FILE else kind


def describe_file(path: Path) -> str | None:
    """What ``path`` holds, in a few words: :data:`TORCH_FILE` for a torch file (zip archive
    with a ``data.pkl``, or a pickle), else as :func:`file_kind`; None for one that cannot be
    read, is no regular file (never opened) or is a damaged zip archive."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            return None
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES)
    except OSError:
        return None
    if status.st_size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return TORCH_FILE  # a pickle: torch's legacy format (torch.load judges it)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _looks_like_onnx(head):
        return f"an ONNX model ({ONNX_HINT})"
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file"
    text = _text(head)
    if text is None:
        return f"unrecognised binary data (first bytes {head[:8]!r})"
    return _text_kind(text, whole=status.st_size <= SNIFF_BYTES)


def _zip_kind(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # a cut or damaged torch archive: torch.load says what is wrong
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return TORCH_FILE
    listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a zip archive that is not a torch checkpoint (it holds {listed or 'nothing'})"


def _looks_like_onnx(head: bytes) -> bool:
    """A serialized onnx.ModelProto: field 1 (ir_version, a varint 3..20) comes first, and
    the other fields ONNX writes early (producer name, graph, opset import) follow."""
    if len(head) < 4 or head[0] != 0x08 or not 3 <= head[1] <= 20:
        return False
    return head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def _text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(head) - 3:  # a character cut by the sniff window
            return head[: error.start].decode("utf-8")
        return None


def _text_kind(text: str, whole: bool) -> str:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and whole:
        try:
            json.loads(text)
            return "a JSON file"
        except ValueError:
            pass
    if whole:
        import yaml

        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError:
            content = None
        if isinstance(content, dict):
            keys = ", ".join(str(k) for k in list(content)[:4])
            return f"a YAML file (top-level keys: {keys})"
    first = stripped.splitlines()[0][:40] if stripped else ""
    if re.match(r"[\w-]+:(\s|$)", first):
        return f"a YAML file (it starts {first!r})"
    return f"a text file (it starts {first!r})"
