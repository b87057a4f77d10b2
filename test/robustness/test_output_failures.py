"""Outputs that cannot be finished: a full disk, and a tool SIGKILLed in the middle of writing.

A full disk (a small tmpfs, test/helpers/small_disk.py) is one line naming the user's ``--out``
(or the file it names) and "no space left on device", exit 2, no traceback, nothing partial left
on the disk and the inputs unchanged, for every tool. It was a bare ``[Errno 28]`` naming no file
(mtl-export, record-dataset, TensorBoard's thread in mtl-train, with its traceback), the hidden
temporary name (mtl-eval), exit 3 (mtl-train's checkpoint, a sqlite3 bag), or a "success" with
the images missing (the synthetic dataset writer).

A tool SIGKILLed mid-write (mtl-eval, record-dataset, and mtl-bag score on a real node's output
bag) leaves its ``.NAME.XXXXXXXX.partial`` folder: nothing can run at a SIGKILL. The next run for
the same ``--out`` removes it, says so in one line and finishes. The tools are stopped at a known
write by test/helpers/pause_mid_write.py, then killed from here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ros_environment
from helpers.models import SMALL_NAMED, calibrated_small_model, save_model
from helpers.refusal import Snapshot, assert_refused, invoke
from helpers.small_disk import entries, small_disk

from mtl_perception.data import synthetic
from mtl_perception.data.synthetic import write_dataset
from mtl_perception.evaluation import evaluate
from mtl_perception.inference import export
from mtl_perception.ros.bags import cli as bag_cli
from mtl_perception.ros.bags.record import record_dataset
from mtl_perception.training.cli import main as train

pytestmark = pytest.mark.bad_input

NO_SPACE = "no space left on device"
PAUSE = Path(__file__).resolve().parent.parent / "helpers" / "pause_mid_write.py"
TRAIN = {
    "model": {"width_multiplier": 0.125, "input_height": 64, "input_width": 128},
    "stages": [{"name": "joint", "iterations": 1, "lr": 1e-3, "seg_weight": 40, "det_weight": 1}],
    "data": {"workers": 0},
    "batch_size": 2,
    "checkpoint_every": 1,
    "validate_every": 0,
    "val_images": 1,
    "overlays": 0,
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A 128x64 dataset (train 2, val 2), a small checkpoint and a training config."""
    root = tmp_path_factory.mktemp("output_failures")
    write_dataset(
        root / "data", {"train": 2, "val": 2}, seed=3, width=128, height=64, progress=False
    )
    save_model(root / "model.pt", calibrated_small_model(config=SMALL_NAMED))
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    return root


def _full_disk_refusal(main, argv, out: Path, inputs: Path, *mentions: str) -> str:
    """Runs ``main(argv)``; asserts the one line, exit 2, the inputs unchanged. Returns it."""
    before = Snapshot(inputs)
    outcome = invoke(main, *argv)
    line = assert_refused(outcome, NO_SPACE, str(out), *mentions)
    assert "Traceback" not in outcome.stderr and "Write Error" not in outcome.stderr
    assert "partial" not in line and "[Errno" not in line, line
    before.assert_unchanged()
    return line


# -- a full disk ----------------------------------------------------------------------------


@pytest.mark.parametrize(("overlays", "free_kib"), [(2, 12), (0, 0)])
def test_eval_on_a_full_disk(inputs, tmp_path, overlays, free_kib):
    """While writing its overlays, and on a disk full before it starts."""
    with small_disk(tmp_path / "disk", 64, free_kib) as disk:
        out = disk / "eval"
        argv = ["--checkpoint", inputs / "model.pt", "--data", inputs / "data", "--split", "val"]
        line = _full_disk_refusal(
            evaluate.main, [*argv, "--out", out, "--save-overlays", overlays], out, inputs
        )
        assert f"--out {out}" in line
        assert entries(disk) == ["filler"]


def test_export_on_a_full_disk(inputs, tmp_path):
    with small_disk(tmp_path / "disk", 256) as disk:
        out = disk / "model.onnx"
        argv = ["--checkpoint", inputs / "model.pt", "--out", out]
        _full_disk_refusal(export.main, argv, out, inputs)
        assert entries(disk) == []


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_dataset_on_a_full_disk(inputs, tmp_path, storage):
    """sqlite3 says "database or disk is full" (an OperationalError: it was exit 3)."""
    with small_disk(tmp_path / "disk", 32) as disk:
        out = disk / "bag"
        argv = ["record-dataset", "--data", inputs / "data", "--split", "val"]
        line = _full_disk_refusal(
            bag_cli.main, [*argv, "--storage", storage, "--out", out], out, inputs
        )
        assert f"--out {out}" in line
        assert entries(disk) == []


def test_synthetic_dataset_on_a_full_disk(inputs, tmp_path):
    """cv2.imwrite returned False unchecked: 'wrote 3 images' about images never written."""
    with small_disk(tmp_path / "disk", 48) as disk:
        out = disk / "cityscapes"
        argv = ["--out", out, "--train", 3, "--val", 0, "--width", 256, "--height", 128]
        line = _full_disk_refusal(synthetic.main, argv, out, inputs)
        assert f"--out {out}" in line
        assert entries(disk) == []


def test_train_on_a_disk_that_fills_at_the_first_checkpoint(inputs, tmp_path):
    """torch.save's RuntimeError '[enforce fail at inline_container.cc:672]' was exit 3."""
    with small_disk(tmp_path / "disk", 1024) as disk:
        out = disk / "run"
        argv = ["--no-progress", "--config", inputs / "train.yaml", "--data", inputs / "data"]
        line = _full_disk_refusal(train, [*argv, "--out", out], out, inputs)
        assert "checkpoints" in line  # the file that did not fit
        assert not [name for name in entries(disk) if name.endswith((".pt", ".tmp"))]


def test_train_on_a_disk_that_is_full_from_the_start(inputs, tmp_path):
    """TensorBoard's event thread hits it first, or the config or metrics file: whichever it is,
    one line naming the run (TensorBoard printed its thread's traceback, then a bare
    '[Errno 28] No space left on device')."""
    with small_disk(tmp_path / "disk", 64, 4) as disk:
        out = disk / "run"
        argv = ["--no-progress", "--config", inputs / "train.yaml", "--data", inputs / "data"]
        _full_disk_refusal(train, [*argv, "--out", out], out, inputs)
        assert not [name for name in entries(disk) if name.endswith((".pt", ".tmp"))]


@pytest.fixture(scope="module")
def run_bag(inputs) -> tuple[Path, Path]:
    """The ground-truth bag of the val split and a run's output bag of it (a real node)."""
    bag = inputs / "bag"
    record_dataset(inputs / "data", "val", bag, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ros_environment().items():
            patch.setenv(key, value)
        argv = ["run", "--bag", bag, "--checkpoint", inputs / "model.pt", "--out", inputs / "run"]
        outcome = invoke(bag_cli.main, *argv, "--as-fast-as-possible")
    assert outcome.code == 0, outcome.stderr[-3000:]
    return bag, inputs / "run"


@pytest.mark.ros
def test_score_on_a_full_disk(inputs, run_bag, tmp_path):
    bag, run = run_bag
    with small_disk(tmp_path / "disk", 64) as disk:
        out = disk / "score"
        argv = ["score", "--run", run, "--ground-truth", bag, "--out", out, "--overlays", 2]
        line = _full_disk_refusal(bag_cli.main, argv, out, inputs)
        assert f"--out {out}" in line
        assert entries(disk) == []


# -- SIGKILL in the middle of a write, then the same command again -----------------------------


def _killed_mid_write(target: str, call: int, tool: str, argv: list) -> None:
    """Runs ``tool`` until the ``call``-th call of ``target`` returned, then SIGKILLs it."""
    process = subprocess.Popen(
        [sys.executable, str(PAUSE), target, str(call), tool, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = []
        while not printed or printed[-1] not in ("paused\n", ""):  # "": it ended
            printed.append(process.stdout.readline())
        assert printed[-1] == "paused\n", "".join(printed) + process.stderr.read()[-3000:]
    finally:
        process.kill()
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


def _rerun_removes_the_partial(main, argv: list, out: Path) -> None:
    partials = [p for p in out.parent.iterdir() if p.name.endswith(".partial")]
    assert len(partials) == 1 and any(partials[0].rglob("*")), "the kill left nothing to clean"
    outcome = invoke(main, *argv)
    assert outcome.code == 0, outcome.stderr[-3000:]
    notes = [line for line in outcome.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "removed 1 unfinished temporary folder" in notes[0], notes
    assert partials[0].name in notes[0] and f"--out {out}" in notes[0]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_eval_killed_while_writing_overlays_is_cleaned_up_by_the_next_run(inputs, tmp_path):
    out = tmp_path / "results" / "eval"
    argv = ["--checkpoint", inputs / "model.pt", "--data", inputs / "data", "--split", "val"]
    argv += ["--out", out, "--save-overlays", 2]
    _killed_mid_write(
        "mtl_perception.evaluation.evaluate:write_image",
        1,
        "mtl_perception.evaluation.evaluate",
        argv,
    )
    _rerun_removes_the_partial(evaluate.main, argv, out)
    assert (out / "metrics.json").is_file() and len(list((out / "overlays").iterdir())) == 2


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_dataset_killed_mid_bag_is_cleaned_up_by_the_next_run(inputs, tmp_path, storage):
    out = tmp_path / "bags" / "val"
    argv = ["record-dataset", "--data", inputs / "data", "--split", "val", "--out", out]
    argv += ["--storage", storage]
    _killed_mid_write("rosbags.rosbag2:Writer.write", 4, "mtl_perception.ros.bags.cli", argv)
    _rerun_removes_the_partial(bag_cli.main, argv, out)
    assert (out / "metadata.yaml").is_file()


@pytest.mark.ros
def test_score_killed_while_writing_its_report_is_cleaned_up_by_the_next_run(run_bag, tmp_path):
    bag, run = run_bag
    out = tmp_path / "reports" / "score"
    argv = ["score", "--run", run, "--ground-truth", bag, "--out", out, "--overlays", 2]
    _killed_mid_write(
        "mtl_perception.ros.bags.report:write_image", 2, "mtl_perception.ros.bags.cli", argv
    )
    _rerun_removes_the_partial(bag_cli.main, argv, out)
    assert (out / "report.json").is_file()
