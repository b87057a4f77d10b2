"""Bad inputs from issue 22's small findings: compressed frames with data after their end marker
or a damaged stream (what OpenCV accepts is accepted; a refusal gives the true reason and the
codec's own complaint, with nothing printed before it), a dataset PNG the anchors tool cannot read
(its error on a line of its own, not after the progress bar), files of other kinds given as a
checkpoint (named, an ONNX export pointed to --onnx / backend:=onnxruntime), and a folder of bags
holding entries that are not bags (named as skipped)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import Snapshot, assert_refused, invoke, run_module
from sensor_msgs.msg import CompressedImage

from mtl_perception.data.quiet_decode import imdecode_quietly
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.inference import export
from mtl_perception.model.checkpoint import read_checkpoint
from mtl_perception.ros.bags.multi import find_bags, skipped_paths
from mtl_perception.ros.conversions import (
    TAIL_BYTES,
    ImageRejectedError,
    check_compressed,
    compressed_to_rgb,
)

pytestmark = pytest.mark.bad_input
MAX_PIXELS = 4096 * 4096


def _picture() -> np.ndarray:
    """(48, 64, 3) uint8 BGR: smooth gradients and a rectangle, compressible and varied."""
    rows, columns = np.mgrid[0:48, 0:64]
    picture = np.stack([rows * 5, columns * 4, (rows + columns) * 2], axis=-1).astype(np.uint8)
    picture[10:30, 20:50] = (30, 200, 90)
    return picture


def _encoded(extension: str) -> bytes:
    ok, data = cv2.imencode(extension, _picture())
    assert ok
    return data.tobytes()


JPEG, PNG = _encoded(".jpg"), _encoded(".png")


def _opencv(data: bytes) -> np.ndarray | None:
    """What image_transport's compressed subscriber gets: cv2.imdecode, as RGB."""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# -- compressed frames: data after the end marker --------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "original", "appended"),
    [
        ("jpeg", JPEG, bytes(TAIL_BYTES + 6 * 1024)),  # zero padding, 70 KiB
        ("jpeg", JPEG, np.random.default_rng(1).bytes(TAIL_BYTES + 6 * 1024)),  # random bytes
        ("jpeg", JPEG, bytes(1 << 20)),  # 1 MiB of padding
        ("png", PNG, b"trailer" * 12000),  # 84 KB of text after IEND
    ],
    ids=["jpeg-70KiB-zeros", "jpeg-70KiB-random", "jpeg-1MiB-zeros", "png-84KB-text"],
)
def test_data_after_the_end_marker_is_decoded_past_as_opencv_does(fmt, original, appended):
    """OpenCV (and so image_transport) decodes these; the check refused them as 'truncated'
    when the end marker lay more than 64 KiB before the end."""
    data = original + appended
    assert len(data) - len(original) > TAIL_BYTES
    reference = _opencv(data)
    assert reference is not None  # OpenCV accepts it
    rgb = compressed_to_rgb(CompressedImage(format=fmt, data=data), MAX_PIXELS)
    np.testing.assert_array_equal(rgb, reference)
    np.testing.assert_array_equal(rgb, _opencv(original))  # the appended bytes are ignored


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_stream_cut_short_before_appended_bytes_says_no_end_marker_anywhere(fmt):
    """Cut before its end marker, then padded past 64 KiB: still refused as truncated, with the
    reason that holds (no end marker anywhere after the header)."""
    original = JPEG if fmt == "jpeg" else PNG
    marker = b"\xff\xd9" if fmt == "jpeg" else b"IEND"
    data = original[: original.rindex(marker)] + bytes(TAIL_BYTES + 1024)
    with pytest.raises(
        ImageRejectedError, match=r"no .* end marker anywhere after its header"
    ) as e:
        check_compressed(CompressedImage(format=fmt, data=data), MAX_PIXELS)
    assert e.value.reason == "truncated"


def _damaged_png() -> bytes:
    """PNG whose IDAT chunk has a wrong CRC (libpng: 'IDAT: CRC error')."""
    at = PNG.index(b"IDAT") + 4  # first byte of the chunk's data
    return PNG[:at] + bytes([PNG[at] ^ 0x01]) + PNG[at + 1 :]


def test_a_png_libpng_refuses_gives_its_reason_in_the_rejection_and_prints_nothing(capfd):
    """libpng printed 'libpng error: ...' on stderr before the node's or tool's clean message;
    now its complaint is the rejection's reason and stderr stays empty."""
    capfd.readouterr()
    with pytest.raises(ImageRejectedError) as e:
        compressed_to_rgb(CompressedImage(format="png", data=_damaged_png()), MAX_PIXELS)
    printed = capfd.readouterr()
    assert e.value.reason == "undecodable"
    assert "libpng error:" in str(e.value) and "\n" not in str(e.value)
    assert printed.err == "" and printed.out == ""


def test_each_failed_decoding_gets_its_own_codec_reason(capfd):
    """The capture file is emptied after each decoding: a second damaged frame does not carry
    the first one's complaint (a PNG whose zlib stream is cut, then one whose zlib header is
    damaged, then the first again)."""
    at = PNG.index(b"IDAT") - 4
    length = int.from_bytes(PNG[at : at + 4], "big")
    body = PNG[at + 8 : at + 8 + length // 2]
    chunk = len(body).to_bytes(4, "big") + b"IDAT" + body
    cut = PNG[:at] + chunk + zlib.crc32(b"IDAT" + body).to_bytes(4, "big") + PNG[-12:]
    reasons = []
    for data in (cut, _damaged_png(), cut):
        _, printed = imdecode_quietly(data, cv2.IMREAD_COLOR)
        reasons.append(printed)
    assert all(reason.startswith("libpng error:") for reason in reasons), reasons
    assert reasons[0] == reasons[2] != reasons[1]
    assert reasons[1] not in reasons[2]
    assert capfd.readouterr().err == ""


def test_a_corrupt_but_decodable_jpeg_still_decodes_and_its_warning_is_not_lost(capfd):
    """What OpenCV decodes with a libjpeg warning is decoded here too; the warning it printed
    before is still printed (captured during decoding, then written back)."""
    middle = len(JPEG) // 2
    data = JPEG[:middle] + bytes(40) + JPEG[middle + 40 :]
    reference = _opencv(data)
    assert reference is not None
    capfd.readouterr()
    rgb = compressed_to_rgb(CompressedImage(format="jpeg", data=data), MAX_PIXELS)
    np.testing.assert_array_equal(rgb, reference)
    assert "Corrupt JPEG data" in capfd.readouterr().err


# -- the anchors tool: a damaged image in the dataset -------------------------------------------


def test_anchors_error_on_a_damaged_png_is_one_line_of_its_own(tmp_path):
    """The error used to follow the progress bar on its line (not a line starting with
    'error:'), after libpng's own 'libpng error:' line."""
    root = tmp_path / "data"
    write_dataset(root, {"train": 3}, seed=3, width=128, height=64, progress=False)
    image = sorted((root / "leftImg8bit" / "train").rglob("*.png"))[-1]
    image.write_bytes(_damaged_png_file(image.read_bytes()))
    snapshot = Snapshot(tmp_path)
    outcome = run_module(
        "mtl_perception.detection.anchors", "--data", root, "--out", tmp_path / "anchors.yaml"
    )
    line = assert_refused(outcome, str(image), "unreadable image", "libpng error")
    assert line.startswith("error: unreadable image")
    others = [text for text in outcome.stderr.splitlines() if "libpng" in text and text != line]
    assert not others, outcome.stderr
    snapshot.assert_unchanged()


def _damaged_png_file(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 4
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- files of other kinds given as a checkpoint -------------------------------------------------


def _onnx(path: Path) -> None:
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])
    output = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["out"])], "tiny", [value], [output]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path.write_bytes(model.SerializeToString())


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("weights/readme.txt", "not a checkpoint")


def _pickled_module(path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), path)


def _npy(path: Path) -> None:
    stream = io.BytesIO()
    np.save(stream, np.zeros(3))
    path.write_bytes(stream.getvalue())


def _plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"model": Path("x")}, protocol=4))


KINDS = {
    "onnx": (_onnx, ["ONNX model", "--onnx", "backend:=onnxruntime"]),
    "yaml": (lambda p: p.write_text("model:\n  width_multiplier: 0.5\n"), ["YAML file", "model"]),
    "json": (lambda p: p.write_text(json.dumps({"model": 1})), ["JSON file"]),
    "empty": (lambda p: p.write_bytes(b""), ["empty file"]),
    "text": (lambda p: p.write_text("hello\n"), ["text file", "hello"]),
    "zip": (_zip, ["zip archive", "weights/readme.txt"]),
    "npy": (_npy, ["NumPy"]),
    "pickled-module": (_pickled_module, ["Python objects other than tensors"]),
    "plain-pickle": (_plain_pickle, ["Python objects other than tensors"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, kind):
    """torch.load's weights_only paragraph (or a KeyError, exit 3, for a text file) is replaced
    by what the file is; an ONNX export is pointed to the tools that take it."""
    make, mentions = KINDS[kind]
    bad = tmp_path / "inputs" / "model.pt"
    bad.parent.mkdir()
    make(bad)
    snapshot = Snapshot(tmp_path)
    outcome = invoke(export.main, "--checkpoint", bad, "--out", tmp_path / "out.onnx")
    line = assert_refused(outcome, str(bad), *mentions)
    assert "weights_only" not in line and "Weights only" not in line and "torch.load" not in line
    assert len(line) < 300, line
    snapshot.assert_unchanged()


def test_a_real_checkpoint_still_loads_after_the_sniffing(tmp_path):
    """The kind check lets torch's own zip archives through (and a torch archive cut short is
    still 'not a readable checkpoint')."""
    path = save_model(tmp_path / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    assert read_checkpoint(path)["model_config"] == SMALL_NAMED.to_dict()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        read_checkpoint(cut)


# -- a folder of bags holding other things --------------------------------------------------------


def _bag(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    return folder


@pytest.mark.parametrize("spec", ["folder", "glob"])
def test_entries_of_a_bag_folder_that_are_not_bags_are_named_as_skipped(tmp_path, spec):
    """--jobs over a folder used to drop its non-bag sub-folders without a word."""
    bags = tmp_path / "bags"
    first, second = _bag(bags / "a"), _bag(bags / "c")
    (bags / "b_not_a_bag").mkdir()
    (bags / "b_not_a_bag" / "data.mcap").write_bytes(b"")
    (bags / "notes.txt").write_text("x")
    (bags / "lone.mcap").write_bytes(b"")
    given = bags if spec == "folder" else f"{bags}/*"
    assert find_bags(given) == [first, second]
    skipped = {entry.path.name: entry.reason for entry in skipped_paths(given)}
    assert set(skipped) == {"b_not_a_bag", "lone.mcap", "notes.txt"}
    assert "without metadata.yaml" in skipped["b_not_a_bag"]
    assert "storage file" in skipped["lone.mcap"]
    assert "a file" in skipped["notes.txt"]
    assert skipped_paths(first) == []  # one bag: nothing skipped
