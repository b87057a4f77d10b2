"""Bad inputs to the offline tools: mtl-eval, mtl-export, anchors, synthetic data, the model
summary, and what they read (datasets, class maps, checkpoints, ONNX files).

Every case: exit 2, exactly one ``error:`` line naming the problem and the file, field or option,
no traceback, every file that existed before byte-identical after, nothing half-written left
behind. The tools are called in-process (``main(argv)``) for speed; a few go through a real
``python -m`` process to prove the console path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import Outcome, Snapshot, assert_refused, invoke, run_module

from mtl_perception.cli import EXIT_BUG, ToolParser, one_line, tool_main
from mtl_perception.data import synthetic
from mtl_perception.data.labels import DEFAULT_CLASSES_FILE
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.detection import anchors
from mtl_perception.evaluation import evaluate
from mtl_perception.inference import export
from mtl_perception.model import summary
from mtl_perception.model.checkpoint import read_checkpoint, save_checkpoint
from mtl_perception.outputs import atomic_directory

bad_input = pytest.mark.bad_input
ROOT = os.geteuid() == 0


# -- shared tiny inputs (module scope: written once) ----------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A 128x64 Cityscapes-layout dataset: train 3, val 2 images."""
    root = tmp_path_factory.mktemp("data") / "cityscapes"
    write_dataset(root, {"train": 3, "val": 2}, seed=3, width=128, height=64, progress=False)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoint")
    return save_model(folder / "model.pt", calibrated_small_model(config=SMALL_NAMED))


@pytest.fixture
def dataset_copy(data, tmp_path) -> Path:
    """A private copy of the dataset to damage."""
    copy = tmp_path / "inputs" / "cityscapes"
    shutil.copytree(data, copy)
    return copy


def _refused(main, argv, *mentions: str, watch=()) -> str:
    """Runs ``main(argv)`` in-process; asserts the refusal and that nothing under ``watch``
    changed or appeared. Returns the error line."""
    snapshot = Snapshot(*watch)
    outcome = invoke(main, *argv)
    line = assert_refused(outcome, *mentions)
    print(line)  # shown with -s or -rP
    snapshot.assert_unchanged()
    return line


def _as_a_user(main, argv) -> Outcome:
    """Runs ``main(argv)`` so that file modes apply: in-process for a user; for root (who
    ignores them) as ``python -m`` in a process without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    if not ROOT:
        return invoke(main, *argv)
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be tested")
    result = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            sys.executable,
            "-m",
            main.__module__,
            *map(str, argv),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def _eval_args(checkpoint: Path, data: Path, out: Path, *extra: object) -> list[object]:
    return ["--checkpoint", checkpoint, "--data", data, "--split", "val", "--out", out, *extra]


def _first(root: Path, split: str, suffix: str) -> Path:
    return sorted(
        (root / ("leftImg8bit" if "leftImg8bit" in suffix else "gtFine") / split).rglob(
            f"*{suffix}"
        )
    )[0]


def _class_map(tmp_path: Path, edit) -> Path:
    spec = yaml.safe_load(DEFAULT_CLASSES_FILE.read_text())
    edit(spec)
    path = tmp_path / "inputs" / "classes.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _tiny_onnx(path: Path, input_name: str = "images", metadata: dict | None = None) -> Path:
    """A valid ONNX file (Identity) that is not one of our exports, with chosen metadata."""
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, 128, 256])
    output = helper.make_tensor_value_info("seg_logits", TensorProto.FLOAT, ["batch", 3, 128, 256])
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], ["seg_logits"])], "tiny", [value], [output]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, text in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


OUR_METADATA = {
    "mtl_perception.model_config": json.dumps(SMALL_NAMED.to_dict()),
    "mtl_perception.input_height": "128",
    "mtl_perception.input_width": "256",
}


# -- mtl-eval: outputs checked before the work ----------------------------------------------------


@bad_input
def test_eval_out_is_an_existing_file(tmp_path, checkpoint, data):
    out = tmp_path / "eval"
    out.write_text("results of last week\n")
    _refused(
        evaluate.main,
        _eval_args(checkpoint, data, out),
        "--out",
        str(out),
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_out_is_a_folder_with_content(tmp_path, checkpoint, data):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    outcome_line = _refused(
        evaluate.main,
        _eval_args(checkpoint, data, out),
        "--out",
        str(out),
        watch=(tmp_path, data, checkpoint),
    )
    assert "not empty" in outcome_line


@bad_input
def test_eval_out_inside_a_file(tmp_path, checkpoint, data):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    _refused(
        evaluate.main,
        _eval_args(checkpoint, data, blocker / "eval"),
        "--out",
        str(blocker),
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_out_in_a_folder_that_is_not_writable(tmp_path, checkpoint, data):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    snapshot = Snapshot(tmp_path, data, checkpoint)
    try:
        outcome = _as_a_user(evaluate.main, _eval_args(checkpoint, data, parent / "eval"))
        assert_refused(outcome, "--out", str(parent), "not writable")
        snapshot.assert_unchanged()
    finally:
        parent.chmod(0o755)


def test_a_write_failing_inside_an_output_folder_names_the_folder_asked_for(tmp_path):
    """The temporary folder is an implementation detail: a write that fails in it is reported
    against the --out the user gave, and nothing is left behind."""
    out = tmp_path / "report"
    with pytest.raises(OSError) as caught, atomic_directory(out) as work:
        (work / "report.md").mkdir()
        (work / "report.md").write_text("x")  # IsADirectoryError naming the temporary folder
    assert caught.value.filename == str(out) and "writing --out" in one_line(caught.value)
    assert ".partial" not in one_line(caught.value)
    assert list(tmp_path.iterdir()) == []
    # a folder where no folder can be made (e.g. in /proc): the --out given, not the temporary
    with pytest.raises(ValueError) as refused, atomic_directory("/proc/no_such_folder"):
        pass
    assert "--out /proc/no_such_folder" in str(refused.value)
    assert ".partial" not in str(refused.value)


def test_an_unexpected_error_exits_3_never_the_gate_s_1():
    """A crash is not a verdict: mtl-bag's gate exits 1 for a failed criterion."""

    @tool_main(lambda: ToolParser(prog="crashes"))
    def crashes(args):
        raise RuntimeError("boom")

    outcome = invoke(crashes)
    assert outcome.code == 3 == EXIT_BUG
    assert outcome.error_lines == [
        "error: unexpected RuntimeError: boom (a bug; rerun with --debug for the traceback and "
        "report it)"
    ]


# -- mtl-eval: options ----------------------------------------------------------------------------


@bad_input
@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        (["--max-images", "-1"], ["--max-images", "-1"]),
        (["--max-images", "0"], ["--max-images"]),
        (["--save-overlays", "-2"], ["--save-overlays"]),
        (["--device", "tpu"], ["--device", "tpu"]),
        (["--interpolation", "cubic"], ["--interpolation"]),
    ],
    ids=[
        "max-images-negative",
        "max-images-zero",
        "save-overlays-negative",
        "device-unknown",
        "interpolation-unknown",
    ],
)
def test_eval_bad_numbers_and_choices(tmp_path, checkpoint, data, extra, mentions):
    _refused(
        evaluate.main,
        _eval_args(checkpoint, data, tmp_path / "eval", *extra),
        *mentions,
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_save_overlays_without_out(tmp_path, checkpoint, data):
    _refused(
        evaluate.main,
        ["--checkpoint", checkpoint, "--data", data, "--split", "val", "--save-overlays", "2"],
        "--save-overlays",
        "--out",
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_checkpoint_and_onnx_together(tmp_path, checkpoint, data):
    onnx_file = _tiny_onnx(tmp_path / "inputs" / "model.onnx", metadata=OUR_METADATA)
    _refused(
        evaluate.main,
        [*_eval_args(checkpoint, data, tmp_path / "eval"), "--onnx", onnx_file],
        "--onnx",
        "--checkpoint",
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_without_a_model(tmp_path, data):
    _refused(
        evaluate.main,
        ["--data", data, "--out", tmp_path / "eval"],
        "--checkpoint",
        "--onnx",
        watch=(tmp_path, data),
    )


@bad_input
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_eval_cuda_device_without_cuda(tmp_path, checkpoint, data):
    _refused(
        evaluate.main,
        _eval_args(checkpoint, data, tmp_path / "eval", "--device", "cuda"),
        "cuda",
        "not available",
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_fp16_on_cpu(tmp_path, checkpoint, data):
    _refused(
        evaluate.main,
        _eval_args(checkpoint, data, tmp_path / "eval", "--precision", "fp16"),
        "fp16",
        "CUDA",
        watch=(tmp_path, data, checkpoint),
    )


# -- mtl-eval: checkpoints ------------------------------------------------------------------------


def _nan_checkpoint(checkpoint: Path, path: Path) -> Path:
    content = read_checkpoint(checkpoint)
    state = dict(content["model"])
    state["decoder.classifier.bias"] = torch.full_like(state["decoder.classifier.bias"], np.nan)
    save_checkpoint(path, {"model_config": content["model_config"], "model": state})
    return path


@bad_input
@pytest.mark.parametrize(
    "kind", ["nan-weights", "folder", "truncated", "other-format", "invalid-config", "missing"]
)
def test_eval_bad_checkpoint(tmp_path, checkpoint, data, kind):
    bad = tmp_path / "inputs" / "bad.pt"
    bad.parent.mkdir()
    mention = "not found"
    if kind == "nan-weights":
        _nan_checkpoint(checkpoint, bad)
        mention = "non-finite"
    elif kind == "folder":
        bad.mkdir()
        mention = "is a folder"
    elif kind == "truncated":
        bad.write_bytes(checkpoint.read_bytes()[:4000])
        mention = "not a readable checkpoint"
    elif kind == "other-format":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
        mention = "not an mtl_perception checkpoint"
    elif kind == "invalid-config":
        content = read_checkpoint(checkpoint)
        config = {**content["model_config"], "width_multiplier": "wide"}
        save_checkpoint(bad, {"model_config": config, "model": content["model"]})
        mention = "width_multiplier"
    line = _refused(
        evaluate.main,
        _eval_args(bad, data, tmp_path / "eval"),
        str(bad),
        mention,
        watch=(tmp_path, data),
    )
    assert "unexpected" not in line


@bad_input
def test_eval_checkpoint_classes_differ_from_the_class_map(tmp_path, checkpoint, data):
    def rename(spec):
        spec["segmentation"]["classes"][0]["name"] = "Heaven"

    classes = _class_map(tmp_path, rename)
    _refused(
        evaluate.main,
        [*_eval_args(checkpoint, data, tmp_path / "eval"), "--classes", classes],
        str(checkpoint),
        "Heaven",
        watch=(tmp_path, data, checkpoint),
    )


# -- mtl-eval: ONNX files -------------------------------------------------------------------------


@bad_input
@pytest.mark.parametrize(
    "kind",
    [
        "checkpoint-file",
        "text",
        "empty",
        "folder",
        "no-metadata",
        "corrupt-json",
        "bad-size",
        "wrong-input-name",
    ],
)
def test_eval_bad_onnx(tmp_path, checkpoint, data, kind):
    bad = tmp_path / "inputs" / "model.onnx"
    bad.parent.mkdir()
    mention = "not an ONNX model"
    if kind == "checkpoint-file":
        shutil.copy(checkpoint, bad)
    elif kind == "text":
        bad.write_text("this is not a model\n" * 20)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "folder":
        bad.mkdir()
        mention = "is a folder"
    elif kind == "no-metadata":
        _tiny_onnx(bad)
        mention = "has no mtl_perception model config"
    elif kind == "corrupt-json":
        _tiny_onnx(bad, metadata={**OUR_METADATA, "mtl_perception.model_config": "{oops"})
        mention = "mtl_perception.model_config"
    elif kind == "bad-size":
        _tiny_onnx(bad, metadata={**OUR_METADATA, "mtl_perception.input_height": "tall"})
        mention = "mtl_perception.input_height"
    elif kind == "wrong-input-name":
        _tiny_onnx(bad, input_name="input.1", metadata=OUR_METADATA)
        mention = "input.1"
    _refused(
        evaluate.main,
        ["--onnx", bad, "--data", data, "--split", "val", "--out", tmp_path / "eval"],
        str(bad),
        mention,
        watch=(tmp_path, data),
    )


# -- mtl-eval: datasets (images, labels, instance PNGs) -------------------------------------------


@bad_input
def test_eval_dataset_root_is_a_file(tmp_path, checkpoint):
    root = tmp_path / "inputs" / "cityscapes.tar"
    root.parent.mkdir()
    root.write_bytes(b"not a folder")
    _refused(
        evaluate.main,
        _eval_args(checkpoint, root, tmp_path / "eval"),
        str(root),
        "not a folder",
        watch=(tmp_path, checkpoint),
    )


@bad_input
def test_eval_split_without_images(tmp_path, checkpoint, data):
    _refused(
        evaluate.main,
        [*_eval_args(checkpoint, data, tmp_path / "eval"), "--split", "tset"],
        "tset",
        "no images",
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_missing_instance_partner(tmp_path, checkpoint, dataset_copy):
    victim = _first(dataset_copy, "val", "_gtFine_instanceIds.png")
    victim.unlink()
    _refused(
        evaluate.main,
        _eval_args(checkpoint, dataset_copy, tmp_path / "eval"),
        victim.name,
        "label files missing",
        watch=(tmp_path, checkpoint),
    )


@bad_input
@pytest.mark.parametrize(
    "kind",
    [
        "jpeg-image",
        "text-image",
        "image-is-a-folder",
        "label-value-300",
        "label-other-size",
        "label-3-channels",
        "instance-3-channels",
        "truncated-label",
    ],
)
def test_eval_bad_dataset_file(tmp_path, checkpoint, dataset_copy, kind):
    image = _first(dataset_copy, "val", "_leftImg8bit.png")
    label = _first(dataset_copy, "val", "_gtFine_labelIds.png")
    instance = _first(dataset_copy, "val", "_gtFine_instanceIds.png")
    victim, mention = image, "not a PNG file"
    if kind == "jpeg-image":
        _, jpeg = cv2.imencode(".jpg", cv2.imread(str(image)))
        image.write_bytes(jpeg.tobytes())
    elif kind == "text-image":
        image.write_text("<html>404 not found</html>")
    elif kind == "image-is-a-folder":
        image.unlink()
        image.mkdir()
        mention = "a folder, not a PNG file"
    elif kind == "label-value-300":
        labels = cv2.imread(str(label), cv2.IMREAD_UNCHANGED).astype(np.uint16)
        labels[5, 7] = 300
        cv2.imwrite(str(label), labels)
        victim, mention = label, "label id 300"
    elif kind == "label-other-size":
        cv2.imwrite(str(label), np.full((32, 64), 7, np.uint8))
        victim, mention = label, "64x32"
    elif kind == "label-3-channels":
        cv2.imwrite(str(label), np.full((64, 128, 3), 7, np.uint8))
        victim, mention = label, "3 channels"
    elif kind == "instance-3-channels":
        cv2.imwrite(str(instance), np.full((64, 128, 3), 7, np.uint8))
        victim, mention = instance, "3 channels"
    elif kind == "truncated-label":
        label.write_bytes(label.read_bytes()[:60])
        victim, mention = label, "not a decodable PNG"
    _refused(
        evaluate.main,
        _eval_args(checkpoint, dataset_copy, tmp_path / "eval"),
        str(victim),
        mention,
        watch=(tmp_path, checkpoint),
    )


@bad_input
def test_eval_unreadable_image(tmp_path, checkpoint, dataset_copy):
    image = _first(dataset_copy, "val", "_leftImg8bit.png")
    snapshot = Snapshot(tmp_path, checkpoint)
    image.chmod(0)
    try:
        outcome = _as_a_user(evaluate.main, _eval_args(checkpoint, dataset_copy, tmp_path / "eval"))
    finally:
        image.chmod(0o644)
    assert_refused(outcome, str(image), "Permission denied")
    snapshot.assert_unchanged()


# -- class maps (through mtl-eval --classes) ------------------------------------------------------


def _drop_detection(spec):
    del spec["detection"]


def _unknown_label(spec):
    spec["detection"]["classes"][0]["labels"] = ["car", "spaceship"]


def _duplicate_id(spec):
    spec["segmentation"]["classes"][3]["id"] = 2


def _string_id(spec):
    spec["segmentation"]["classes"][2]["id"] = "two"


def _labels_not_a_list(spec):
    spec["detection"]["classes"][1]["labels"] = "person"


def _negative_box_size(spec):
    spec["detection"]["min_box_size"] = -4


@bad_input
@pytest.mark.parametrize(
    ("edit", "mentions"),
    [
        (_drop_detection, ["missing sections ['detection']"]),
        (_unknown_label, ["detection.classes[0].labels[1]", "spaceship"]),
        (_duplicate_id, ["segmentation.classes[3].id", "duplicate id 2"]),
        (_string_id, ["segmentation.classes[2].id"]),
        (_labels_not_a_list, ["detection.classes[1].labels"]),
        (_negative_box_size, ["detection.min_box_size"]),
    ],
    ids=[
        "missing-section",
        "unknown-label",
        "duplicate-id",
        "wrong-type",
        "labels-not-list",
        "negative-min-box-size",
    ],
)
def test_eval_bad_class_map(tmp_path, checkpoint, data, edit, mentions):
    classes = _class_map(tmp_path, edit)
    _refused(
        evaluate.main,
        [*_eval_args(checkpoint, data, tmp_path / "eval"), "--classes", classes],
        str(classes),
        *mentions,
        watch=(tmp_path, data, checkpoint),
    )


@bad_input
def test_eval_empty_class_map(tmp_path, checkpoint, data):
    classes = tmp_path / "inputs" / "classes.yaml"
    classes.parent.mkdir()
    classes.write_text("# nothing yet\n")
    _refused(
        evaluate.main,
        [*_eval_args(checkpoint, data, tmp_path / "eval"), "--classes", classes],
        str(classes),
        "is empty",
        watch=(tmp_path, data, checkpoint),
    )


# -- mtl-export -----------------------------------------------------------------------------------


@bad_input
def test_export_out_is_a_folder(tmp_path, checkpoint):
    out = tmp_path / "model.onnx"
    out.mkdir()
    _refused(
        export.main,
        ["--checkpoint", checkpoint, "--out", out],
        "--out",
        str(out),
        watch=(tmp_path, checkpoint),
    )


@bad_input
def test_export_out_is_an_existing_file(tmp_path, checkpoint):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"yesterday's model")
    _refused(
        export.main,
        ["--checkpoint", checkpoint, "--out", out],
        "--out",
        str(out),
        watch=(tmp_path, checkpoint),
    )


@bad_input
@pytest.mark.parametrize(
    ("extra", "mention"),
    [
        (["--height", "100"], "--height"),
        (["--width", "-256"], "--width"),
        (["--opset", "16"], "--opset"),
    ],
    ids=["height-not-multiple-of-16", "width-negative", "opset-too-old"],
)
def test_export_bad_numbers(tmp_path, checkpoint, extra, mention):
    _refused(
        export.main,
        ["--checkpoint", checkpoint, "--out", tmp_path / "model.onnx", *extra],
        mention,
        watch=(tmp_path, checkpoint),
    )


@bad_input
def test_export_nan_checkpoint(tmp_path, checkpoint):
    bad = _nan_checkpoint(checkpoint, tmp_path / "inputs" / "nan.pt")
    _refused(
        export.main,
        ["--checkpoint", bad, "--out", tmp_path / "model.onnx"],
        str(bad),
        "non-finite",
        watch=(tmp_path,),
    )


# -- anchors --------------------------------------------------------------------------------------


@bad_input
def test_anchors_out_exists(tmp_path, data):
    out = tmp_path / "anchors.yaml"
    out.write_text("model: {anchors: []}\n")
    _refused(
        anchors.main,
        ["--data", data, "--out", out],
        "--out",
        str(out),
        watch=(tmp_path, data),
    )


@bad_input
def test_anchors_split_with_fewer_than_9_boxes(tmp_path, dataset_copy):
    instance = _first(dataset_copy, "val", "_gtFine_instanceIds.png")
    few = np.full((64, 128), 7, np.uint16)
    few[10:40, 10:60] = 26_000  # two cars
    few[20:50, 70:120] = 26_001
    for path in sorted((dataset_copy / "gtFine" / "val").rglob("*_gtFine_instanceIds.png")):
        cv2.imwrite(str(path), few if path == instance else np.full((64, 128), 7, np.uint16))
    _refused(
        anchors.main,
        ["--data", dataset_copy, "--split", "val", "--out", tmp_path / "anchors.yaml"],
        "needs at least 9",
        str(dataset_copy),
        watch=(tmp_path,),
    )


@bad_input
@pytest.mark.parametrize(
    ("extra", "mention"),
    [(["--height", "100"], "--height"), (["--seed", "-1"], "--seed")],
    ids=["height-not-multiple-of-16", "seed-negative"],
)
def test_anchors_bad_numbers(tmp_path, data, extra, mention):
    _refused(
        anchors.main,
        ["--data", data, "--out", tmp_path / "anchors.yaml", *extra],
        mention,
        watch=(tmp_path, data),
    )


@bad_input
def test_anchors_class_map_missing(tmp_path, data):
    classes = tmp_path / "my_classes.yaml"
    _refused(
        anchors.main,
        ["--data", data, "--out", tmp_path / "anchors.yaml", "--classes", classes],
        "class map",
        str(classes),
        watch=(tmp_path, data),
    )


@bad_input
def test_anchors_data_root_is_a_file(tmp_path):
    root = tmp_path / "data.zip"
    root.write_bytes(b"PK")
    _refused(
        anchors.main,
        ["--data", root, "--out", tmp_path / "anchors.yaml"],
        str(root),
        watch=(tmp_path,),
    )


# -- synthetic data -------------------------------------------------------------------------------


@bad_input
def test_synthetic_out_is_a_folder_with_content(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(
        synthetic.main,
        ["--out", out, "--train", "1", "--val", "0", "--width", "128", "--height", "64"],
        "--out",
        str(out),
        watch=(tmp_path,),
    )


@bad_input
def test_synthetic_out_inside_a_file(tmp_path):
    blocker = tmp_path / "datasets"
    blocker.write_text("a file")
    _refused(
        synthetic.main,
        ["--out", blocker / "synthetic", "--train", "1", "--width", "128", "--height", "64"],
        "--out",
        str(blocker),
        watch=(tmp_path,),
    )


@bad_input
@pytest.mark.parametrize(
    ("extra", "mention"),
    [
        (["--train", "-1"], "--train"),
        (["--seed", "-3"], "--seed"),
        (["--width", "10"], "--width"),
        (["--height", "abc"], "--height"),
        (["--train", "0", "--val", "0"], "--train"),
    ],
    ids=["train-negative", "seed-negative", "width-too-small", "height-not-a-number", "no-images"],
)
def test_synthetic_bad_numbers(tmp_path, extra, mention):
    _refused(
        synthetic.main,
        ["--out", tmp_path / "dataset", "--width", "128", "--height", "64", *extra],
        mention,
        watch=(tmp_path,),
    )


# -- model summary --------------------------------------------------------------------------------


@bad_input
@pytest.mark.parametrize("kind", ["missing", "folder", "wrong-type", "not-yaml"])
def test_summary_bad_config(tmp_path, kind):
    config = tmp_path / "model.yaml"
    mention = str(config)
    if kind == "folder":
        config.mkdir()
    elif kind == "wrong-type":
        config.write_text("model:\n  width_multiplier: wide\n")
        mention = "width_multiplier"
    elif kind == "not-yaml":
        config.write_text("model: [unclosed\n")
    _refused(summary.main, ["--config", config], str(config), mention, watch=(tmp_path,))


@bad_input
def test_summary_height_not_a_multiple_of_16(tmp_path):
    _refused(summary.main, ["--height", "100"], "--height", "16", watch=(tmp_path,))


# -- the console path (real processes) and --debug ------------------------------------------------


@bad_input
def test_console_eval_on_a_non_onnx_file(tmp_path, checkpoint, data):
    bad = tmp_path / "inputs" / "model.onnx"
    bad.parent.mkdir()
    shutil.copy(checkpoint, bad)
    snapshot = Snapshot(tmp_path, data)
    outcome = run_module(
        "mtl_perception.evaluation", "--onnx", bad, "--data", data, "--out", tmp_path / "eval"
    )
    assert_refused(outcome, str(bad), "not an ONNX model")
    snapshot.assert_unchanged()


@bad_input
def test_console_eval_max_images_negative(tmp_path, checkpoint, data):
    snapshot = Snapshot(tmp_path, data, checkpoint)
    outcome = run_module(
        "mtl_perception.evaluation",
        *_eval_args(checkpoint, data, tmp_path / "eval"),
        "--max-images",
        "-1",
    )
    assert_refused(outcome, "--max-images")
    snapshot.assert_unchanged()


def test_console_debug_shows_the_traceback(tmp_path, checkpoint):
    out = tmp_path / "model.onnx"
    out.mkdir()
    snapshot = Snapshot(tmp_path, checkpoint)
    outcome = run_module(
        "mtl_perception.inference.export", "--checkpoint", checkpoint, "--out", out, "--debug"
    )
    assert outcome.code == 2
    assert "Traceback" in outcome.stderr
    assert len(outcome.error_lines) == 1 and str(out) in outcome.error_lines[0]
    snapshot.assert_unchanged()


def test_debug_shows_the_traceback_in_process(tmp_path, data):
    bad = _tiny_onnx(tmp_path / "model.onnx")
    outcome = invoke(evaluate.main, "--onnx", bad, "--data", data, "--debug")
    assert outcome.code == 2
    assert "Traceback" in outcome.stderr and "ValueError" in outcome.stderr
    assert len(outcome.error_lines) == 1 and str(bad) in outcome.error_lines[0]


# -- odd but valid inputs are not refused ---------------------------------------------------------


def test_eval_accepts_odd_instance_values_and_16_bit_labels(tmp_path, checkpoint, dataset_copy):
    """instanceIds are 16-bit (label * 1000 + k): values of unknown labels, crowds of any id and
    the largest 16-bit value give no box and no crash; a 16-bit labelIds file within 0..255 is
    read like an 8-bit one."""
    instance = _first(dataset_copy, "val", "_gtFine_instanceIds.png")
    values = cv2.imread(str(instance), cv2.IMREAD_UNCHANGED)
    values[0:4, 0:4] = 65_535
    values[4:8, 0:4] = 300
    values[8:12, 0:4] = 34_000  # no such Cityscapes label
    values[12:16, 0:4] = 999
    cv2.imwrite(str(instance), values)
    label = _first(dataset_copy, "val", "_gtFine_labelIds.png")
    cv2.imwrite(str(label), cv2.imread(str(label), cv2.IMREAD_UNCHANGED).astype(np.uint16))
    out = tmp_path / "eval"
    outcome = invoke(evaluate.main, *_eval_args(checkpoint, dataset_copy, out, "--max-images", 1))
    assert outcome.code == 0, outcome.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["checkpoint"] == str(checkpoint)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
