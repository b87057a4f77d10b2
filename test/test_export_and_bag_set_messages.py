"""Issue 22's small findings that need a whole tool run: ``mtl-export`` prints nothing but its
result (torch.onnx's "torchvision is not installed" warnings are dropped) and its ONNX file,
given back as a checkpoint, is named as one; ``mtl-bag evaluate --jobs`` over a folder names
what it skipped, on stderr and in the report."""

from __future__ import annotations

import json

import pytest
from conftest import ros_environment
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import assert_refused, invoke, run_module

from mtl_perception.data.synthetic import write_dataset
from mtl_perception.inference import export
from mtl_perception.ros.bags.record import record_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoint")
    return save_model(folder / "model.pt", calibrated_small_model(config=SMALL_NAMED))


@pytest.mark.slow
def test_export_prints_only_its_result_and_its_onnx_file_is_no_checkpoint(checkpoint, tmp_path):
    """A fresh process (torch.onnx registers the torchvision operators once per process):
    stderr is empty, where it had four 'torchvision is not installed. Skipping ...' lines."""
    onnx_file = tmp_path / "model.onnx"
    outcome = run_module(
        "mtl_perception.inference.export",
        *("--checkpoint", checkpoint, "--out", onnx_file, "--height", 64, "--width", 128),
    )
    assert outcome.code == 0, outcome.stderr
    assert outcome.stderr == "", outcome.stderr
    assert outcome.stdout.startswith(f"wrote {onnx_file}")
    again = invoke(export.main, "--checkpoint", onnx_file, "--out", tmp_path / "again.onnx")
    line = assert_refused(again, str(onnx_file), "ONNX model", "--onnx", "backend:=onnxruntime")
    assert "weights_only" not in line
    assert not (tmp_path / "again.onnx").exists()


@pytest.mark.ros
@pytest.mark.slow
def test_jobs_over_a_folder_names_what_it_skipped(checkpoint, tmp_path):
    """A folder of one bag, a folder that is not a bag and a file: the bag is evaluated, the
    other two are named on stderr (one warning line each) and in report.json / report.md."""
    data = tmp_path / "data"
    write_dataset(data, {"train": 2}, seed=5, width=128, height=64, progress=False)
    bags = tmp_path / "bags"
    record_dataset(data, "train", bags / "street", progress=False)
    (bags / "half_copied").mkdir()
    (bags / "half_copied" / "street_0.mcap").write_bytes(b"")
    (bags / "notes.txt").write_text("bags of 7 December\n")
    out = tmp_path / "report"
    outcome = run_module(
        "mtl_perception.ros.bags.cli",
        *("evaluate", "--bag", bags, "--jobs", 2, "--checkpoint", checkpoint, "--out", out),
        "--as-fast-as-possible",
        env=ros_environment(),
    )
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    warnings = [line for line in outcome.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, outcome.stderr
    assert "skipped" in warnings[0] and str(bags / "half_copied") in warnings[0]
    assert "without metadata.yaml" in warnings[0]
    assert str(bags / "notes.txt") in warnings[1]
    report = json.loads((out / "report.json").read_text())
    assert [bag["name"] for bag in report["bags"]] == ["street"]
    assert [entry["path"] for entry in report["skipped"]] == [
        str(bags / "half_copied"),
        str(bags / "notes.txt"),
    ]
    markdown = (out / "report.md").read_text()
    assert "Skipped (not bags; 2)" in markdown and "half_copied" in markdown
