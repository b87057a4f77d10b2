"""Bad inputs to ``mtl-train``: configs, datasets, run directories, checkpoints to resume.

Each case: exit code 2, one ``error:`` line naming the problem and the file or field, no
traceback, and every file that existed before byte-identical after (nothing left behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
import torch
import yaml
from helpers.refusal import Snapshot, assert_refused, invoke

from mtl_perception.data.synthetic import write_dataset
from mtl_perception.model.checkpoint import read_checkpoint, save_checkpoint
from mtl_perception.training.cli import main as train

pytestmark = pytest.mark.bad_input

TINY = {
    "model": {"width_multiplier": 0.125, "input_height": 64, "input_width": 128},
    "stages": [
        {"name": "joint", "iterations": 1, "lr": 1e-3, "seg_weight": 40, "det_weight": 1},
        {
            "name": "detection",
            "iterations": 1,
            "lr": 1e-4,
            "seg_weight": 0,
            "det_weight": 1,
            "frozen": ["encoder", "easpp", "decoder"],
        },
    ],
    "data": {"workers": 0},
    "batch_size": 2,
    "checkpoint_every": 1,
    "validate_every": 0,
    "val_images": 1,
    "overlays": 0,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_inputs") / "data"
    write_dataset(root, {"train": 2, "val": 1}, seed=3, width=128, height=64, progress=False)
    return root


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    """A complete tiny run to resume from (copied by each case that changes it)."""
    folder = tmp_path_factory.mktemp("finished")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "stages": [{**TINY["stages"][0], "iterations": 2}]}))
    run = folder / "run"
    code = invoke(train, "--no-progress", "--config", config, "--data", data, "--out", run)
    assert code.code == 0, code.stderr
    return run


def _config(folder: Path, text: str | None = None, **changes) -> Path:
    path = folder / "train.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({**TINY, **changes}))
    return path


def _refused_start(folder: Path, data: Path, config: Path, *mentions: str, extra=()) -> None:
    out = folder / "run"
    before = Snapshot(folder, data)
    outcome = invoke(
        train, "--no-progress", "--config", config, "--data", data, "--out", out, *extra
    )
    assert_refused(outcome, *mentions)
    before.assert_unchanged()
    assert not out.exists()


# -- configs -----------------------------------------------------------------------------------

CONFIG_CASES = {
    "iterations_fraction": (
        {"stages": [{**TINY["stages"][0], "iterations": 2.5}]},
        ["stages[0].iterations", "expected an integer", "2.5"],
    ),
    "checkpoint_every_zero": ({"checkpoint_every": 0}, ["checkpoint_every", ">= 1", "0"]),
    "log_every_zero": ({"log_every": 0}, ["log_every", ">= 1"]),
    "lr_word": (
        {"stages": [{**TINY["stages"][0], "lr": "fast"}]},
        ["stages[0].lr", "expected a number", "fast"],
    ),
    "lr_negative": ({"stages": [{**TINY["stages"][0], "lr": -1e-3}]}, ["lr must be > 0"]),
    "batch_size_zero": ({"batch_size": 0}, ["batch_size", ">= 1"]),
    "batch_size_bool": ({"batch_size": True}, ["batch_size", "expected an integer"]),
    "no_stages": ({"stages": []}, ["stages", "at least one stage"]),
    "zero_iterations": (
        {"stages": [{**TINY["stages"][0], "iterations": 0}]},
        ["stages", "no iterations"],
    ),
    "duplicate_stage_names": (
        {"stages": [TINY["stages"][0], TINY["stages"][0]]},
        ["stages", "names must differ"],
    ),
    "unknown_key": ({"learning_rate": 1}, ["unknown keys", "learning_rate"]),
    "unknown_stage_key": (
        {"stages": [{**TINY["stages"][0], "epochs": 3}]},
        ["stages[0]", "unknown keys", "epochs"],
    ),
    "missing_stage_key": (
        {"stages": [{"name": "x", "iterations": 1, "lr": 1e-3}]},
        ["stages[0]", "missing required keys", "seg_weight"],
    ),
    "precision": ({"precision": "fp8"}, ["precision must be one of", "fp8"]),
    "frozen_part": (
        {"stages": [{**TINY["stages"][0], "frozen": ["wheels"]}]},
        ["unknown frozen parts", "wheels"],
    ),
    "input_not_multiple_of_16": (
        {"model": {**TINY["model"], "input_width": 100}},
        ["input_width", "multiple of 16", "100"],
    ),
    "anchors_shape": (
        {"model": {**TINY["model"], "anchors": [[[1, 2]]]}},
        ["anchors must be 3 branches"],
    ),
    "anchor_not_a_number": (
        {"model": {**TINY["model"], "anchors": [[[4, "x"], [8, 6], [6, 14]]] * 3}},
        ["model.anchors[0][0][1]", "expected a number", "x"],
    ),
    "workers_negative": ({"data": {"workers": -1}}, ["workers must be >= 0"]),
    "workers_word": ({"data": {"workers": "two"}}, ["data.workers", "expected an integer"]),
    "scale_range_reversed": ({"data": {"scale_range": [1.5, 1.0]}}, ["scale_range"]),
    "flip_probability": ({"data": {"flip_probability": 2}}, ["flip_probability", "[0, 1]"]),
    "val_images_zero": ({"val_images": 0}, ["val_images"]),
    "classes_file_missing": (  # the finding: neither the field nor the config file was named
        {"data": {"classes": "nowhere/classes.yaml", "workers": 0}},
        ["data.classes in", "train.yaml", "class map not found: nowhere/classes.yaml"],
    ),
    "lr_nan": ({"stages": [{**TINY["stages"][0], "lr": float("nan")}]}, ["finite number"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value_is_named(data, tmp_path, case):
    changes, mentions = CONFIG_CASES[case]
    _refused_start(tmp_path, data, _config(tmp_path, **changes), *mentions)


YAML_CASES = {
    "syntax_error": ("stages: [\n  {name: a\n", ["not valid YAML", "line"]),
    "duplicate_key": (
        yaml.safe_dump(TINY) + "batch_size: 4\n",
        ["not valid YAML", "duplicate key 'batch_size'"],
    ),
    "list_at_top": ("- 1\n- 2\n", ["must be a mapping", "list"]),
    "empty_file": ("", ["needs", "model", "stages"]),
    "binary": ("\x00\x01\x02", ["train.yaml"]),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_unreadable_config_file_is_named(data, tmp_path, case):
    text, mentions = YAML_CASES[case]
    config = _config(tmp_path, text=text)
    _refused_start(tmp_path, data, config, str(config), *mentions)


def test_config_that_is_a_folder_or_missing(data, tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    _refused_start(tmp_path, data, tmp_path / "folder.yaml", "folder.yaml", "is a folder")
    _refused_start(tmp_path, data, tmp_path / "none.yaml", "none.yaml", "not found")


def test_scientific_notation_floats_are_floats(tmp_path):
    """PyYAML reads `lr: 1e-3` as a string; users write exactly this."""
    from mtl_perception.training.config import TrainConfig

    text = yaml.safe_dump(TINY).replace("lr: 0.001", "lr: 1e-3")
    assert "lr: 1e-3" in text
    config = TrainConfig.from_yaml(_config(tmp_path, text=text))
    assert config.stages[0].lr == pytest.approx(1e-3) and isinstance(config.stages[0].lr, float)


# -- command line and output folder ------------------------------------------------------------


def test_out_is_an_existing_file(data, tmp_path):
    (tmp_path / "run").write_text("mine")
    config = _config(tmp_path)
    before = Snapshot(tmp_path, data)
    outcome = invoke(train, "--config", config, "--data", data, "--out", tmp_path / "run")
    assert_refused(outcome, "--out", "run", "existing file")
    before.assert_unchanged()


def test_out_is_a_folder_with_content(data, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    config = _config(tmp_path)
    before = Snapshot(tmp_path, data)
    outcome = invoke(train, "--config", config, "--data", data, "--out", tmp_path / "run")
    assert_refused(outcome, "--out", "not empty")
    before.assert_unchanged()


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["--stop-after", "0"], ["--stop-after", ">= 1"]),
        (["--stop-after", "two"], ["--stop-after", "integer"]),
        (["--device", "cuda:0"], ["cuda:0", "CUDA is not available"]),
        (["--pretrained", "nowhere.safetensors"], ["--pretrained", "nowhere.safetensors"]),
    ],
    ids=["stop_after_zero", "stop_after_word", "cuda_missing", "pretrained_missing"],
)
def test_bad_option_is_named(data, tmp_path, argv, mentions):
    _refused_start(tmp_path, data, _config(tmp_path), *mentions, extra=argv)


def test_missing_dataset_is_named(tmp_path):
    _refused_start(tmp_path, tmp_path / "nodata", _config(tmp_path), "nodata", "does not exist")


# -- datasets ----------------------------------------------------------------------------------


def _broken_copy(data: Path, folder: Path, how: str) -> Path:
    copy = folder / "data"
    shutil.copytree(data, copy)
    (image,) = sorted((copy / "leftImg8bit" / "train").rglob("*.png"))[:1]
    label = Path(
        str(image)
        .replace("leftImg8bit", "gtFine", 1)
        .replace("_leftImg8bit.png", "_gtFine_labelIds.png")
    )
    if how == "image_not_png":
        image.write_bytes(b"this is not a picture")
    elif how == "label_size":
        cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
    return copy


@pytest.mark.parametrize("how", ["image_not_png", "label_size"])
@pytest.mark.parametrize("workers", [0, 1])
def test_bad_sample_gives_one_line_with_or_without_loader_workers(data, tmp_path, how, workers):
    """The finding: with workers >= 1 the error arrived as 'Caught ValueError in DataLoader
    worker process 0. Original Traceback...'. The same one line either way, and a start that
    fails leaves no run directory."""
    copy = _broken_copy(data, tmp_path, how)
    config = _config(tmp_path, data={"workers": workers})
    line = {"image_not_png": "unreadable image", "label_size": "sizes must match"}[how]
    outcome = invoke(
        train, "--no-progress", "--config", config, "--data", copy, "--out", tmp_path / "run"
    )
    assert_refused(outcome, line, "train")
    assert "DataLoader worker" not in outcome.stderr
    assert not (tmp_path / "run").exists()


# -- resume -----------------------------------------------------------------------------------


def _copy_run(run: Path, folder: Path) -> Path:
    copy = folder / "run"
    shutil.copytree(run, copy)
    return copy


def _refused_resume(run: Path, data: Path, *mentions: str, extra=()) -> None:
    before = Snapshot(run.parent, data)
    assert_refused(invoke(train, "--no-progress", "--resume", run, *extra), *mentions)
    before.assert_unchanged()


def _unstarted_run(folder: Path, **changes) -> Path:
    """What a run killed before its first checkpoint leaves: config.yaml, metrics.jsonl,
    tensorboard/ and a torn temporary checkpoint."""
    run = folder / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tensorboard").mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({**TINY, **changes}))
    (run / "metrics.jsonl").write_text('{"iteration": 1, "stage": "joint", "loss": 1.0}\n')
    (run / "checkpoints" / ".last.pt.0123abcd.tmp").write_bytes(b"PK\x03\x04 torn")
    return run


def test_resume_without_a_checkpoint(data, tmp_path):
    """A start that died before its first checkpoint: --resume says there is nothing to
    resume, and the command that starts it again."""
    run = _unstarted_run(tmp_path)
    _refused_resume(
        run, data, "no checkpoint", "last.pt", "nothing to resume", f"--config {run}/config.yaml"
    )
    _refused_resume(tmp_path / "nowhere", data, "no such run directory")


def test_out_holding_an_unstarted_run_of_another_config(data, tmp_path):
    """A run killed before its first checkpoint is started again by the same command only:
    another config is refused naming what differs, and the killed run's files stay."""
    _unstarted_run(tmp_path, batch_size=1)
    _refused_start_keeping(
        tmp_path, data, _config(tmp_path), "stopped before its first", "batch_size"
    )


def test_out_holding_an_unstarted_run_and_a_file_of_the_users(data, tmp_path):
    """Only a run's own files are removed to start again: a folder with anything else is
    refused as before."""
    run = _unstarted_run(tmp_path)
    (run / "notes.txt").write_text("mine")
    _refused_start_keeping(tmp_path, data, _config(tmp_path), "--out", "not empty")


def test_out_holding_an_unstarted_run_with_an_unreadable_config(data, tmp_path):
    run = _unstarted_run(tmp_path)
    (run / "config.yaml").write_text("stages: [\n")
    _refused_start_keeping(tmp_path, data, _config(tmp_path), "stopped before", "unreadable")


def _refused_start_keeping(folder: Path, data: Path, config: Path, *mentions: str) -> None:
    """Refused, and everything under ``folder`` (the existing --out included) unchanged."""
    before = Snapshot(folder, data)
    outcome = invoke(
        train, "--no-progress", "--config", config, "--data", data, "--out", folder / "run"
    )
    assert_refused(outcome, *mentions)
    before.assert_unchanged()


def test_out_holding_a_stopped_run_gives_the_resume_command(finished_run, data, tmp_path):
    """The finding: the same command again after a kill with last.pt present said only
    "exists and is not empty; choose another folder". It says the folder holds a run with
    checkpoints and how to continue it."""
    run = _copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "final.pt").unlink()
    _refused_start_keeping(
        tmp_path, data, _config(tmp_path), "holds a run with checkpoints",
        f"mtl-train --resume {run}",
    )  # fmt: skip


def test_out_holding_a_finished_run_says_so(finished_run, data, tmp_path):
    _copy_run(finished_run, tmp_path)
    _refused_start_keeping(tmp_path, data, _config(tmp_path), "holds a finished run", "final.pt")


def test_a_class_map_error_names_the_field_and_the_config_file(data, tmp_path):
    """The finding: 'class map not found: nope.yaml', naming neither ``data.classes`` nor the
    config file. Refused before any work, leaving no folder (its missing parents included)."""
    config = _config(tmp_path, data={"classes": "nope.yaml", "workers": 0})
    before = Snapshot(tmp_path, data)
    out = tmp_path / "runs" / "first"
    outcome = invoke(train, "--no-progress", "--config", config, "--data", data, "--out", out)
    assert_refused(outcome, f"data.classes in {config}: class map not found: nope.yaml")
    before.assert_unchanged()


# -- one run folder, one training at a time ------------------------------------------------------

PAUSER = Path(__file__).parent.parent / "helpers" / "pause_mid_write.py"


def _paused_after_its_first_step(command: list) -> subprocess.Popen:
    """``mtl-train *command`` in a process of its own, returned once it has paused after its
    first step (config.yaml and tensorboard/ written, no checkpoint yet)."""
    run = subprocess.Popen(
        [sys.executable, str(PAUSER), "mtl_perception.training.trainer:Trainer.train_step", "1",
         "mtl_perception.training.cli", *map(str, command)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    for line in run.stdout:
        if line.strip() == "paused":
            return run
    run.kill()
    run.wait()
    pytest.fail(f"the run ended before its first step: {run.stderr.read()}")


def test_a_second_start_is_refused_while_the_first_runs_and_works_once_it_is_killed(data, tmp_path):
    """The finding: the same command started twice at once: the second took the first's
    folder (no checkpoint yet) for a killed run and removed its config.yaml, metrics.jsonl
    and tensorboard/; the first died on its missing events file. The first run holds its
    folder: the second is refused naming it and the first's pid, and nothing changes. Once the
    first is SIGKILLed, the kernel drops its lock and the same command starts again.
    Deterministic: the first run pauses after its first step (config.yaml and tensorboard/
    written, no checkpoint yet)."""
    config = _config(tmp_path)
    out = tmp_path / "run"
    command = ["--no-progress", "--config", config, "--data", data, "--out", out]
    first = _paused_after_its_first_step(command)
    try:
        assert (out / "config.yaml").is_file() and (out / "tensorboard").is_dir()
        before = Snapshot(tmp_path, data)
        second = invoke(train, *command)
        assert_refused(
            second, f"--out {out} is in use by a running mtl-train (pid {first.pid})",
            "choose another folder",
        )  # fmt: skip
        before.assert_unchanged()
    finally:
        first.kill()
        first.communicate()
    again = invoke(train, *command)
    assert again.code == 0, again.stderr
    assert "starting again a run stopped before its first checkpoint" in again.stdout
    assert (out / "checkpoints" / "final.pt").is_file()


def test_a_killed_runs_data_loader_workers_do_not_hold_its_folder(data, tmp_path):
    """Second outside test: SIGKILL a run with a data-loader worker, rerun at once: refused "in
    use by a running mtl-train (pid N)" naming the dead run, since its forked worker (alive for
    seconds until it notices) shared the folder's lock. The worker's copy is closed at fork."""
    config = _config(tmp_path, data={"workers": 1})
    out = tmp_path / "run"
    command = ["--no-progress", "--config", config, "--data", data, "--out", out]
    first = _paused_after_its_first_step(command)
    try:
        workers = psutil.Process(first.pid).children()
        assert workers, "the run has no data-loader worker"
    finally:
        first.kill()
        first.wait()  # not communicate(): the worker keeps the pipes open until it notices
    try:
        again = invoke(train, *command)
        assert again.code == 0, again.stderr
        assert "starting again a run stopped before its first checkpoint" in again.stdout
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        first.stdout.close()
        first.stderr.close()


def test_resume_of_a_run_in_use_is_refused(finished_run, data, tmp_path):
    """--resume too: while another process holds the folder (here this test, by the same
    flock a running mtl-train takes), nothing is read, trimmed or written."""
    from mtl_perception.file_locks import lock_exclusively

    run = _copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "final.pt").unlink()
    holder = lock_exclusively(run)
    try:
        _refused_resume(
            run, data, f"--resume {run} is in use by a running mtl-train (pid {os.getpid()})"
        )
    finally:
        os.close(holder)


def test_an_empty_out_in_use_is_refused_and_kept(data, tmp_path):
    from mtl_perception.file_locks import lock_exclusively

    (tmp_path / "run").mkdir()
    holder = lock_exclusively(tmp_path / "run")
    try:
        _refused_start_keeping(tmp_path, data, _config(tmp_path), "--out", "is in use by")
    finally:
        os.close(holder)
    assert (tmp_path / "run").is_dir()


def test_resume_of_a_finished_run_says_it_is_complete_and_changes_nothing(
    finished_run, data, tmp_path
):
    """The finding: --resume of a finished run printed only a 100% bar (and added an events
    file to tensorboard/)."""
    run = _copy_run(finished_run, tmp_path)
    before = Snapshot(tmp_path, data)
    outcome = invoke(train, "--resume", run)
    assert outcome.code == 0, outcome.stderr
    assert outcome.stdout.splitlines() == [
        f"--resume {run}: the run is already complete (2 iterations); nothing to do"
    ]
    assert "100%" not in outcome.stderr
    before.assert_unchanged()


def test_resume_of_a_run_killed_before_its_last_validation_was_logged_does_it(
    finished_run, data, tmp_path
):
    """A run at its last iteration is complete only with that iteration's validation logged:
    killed before it, --resume still does it (and then says the run is complete)."""
    run = _copy_run(finished_run, tmp_path)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("".join(f"{line}\n" for line in lines if '"validation"' not in line))
    outcome = invoke(train, "--no-progress", "--resume", run)
    assert outcome.code == 0, outcome.stderr
    assert "iteration 2: mIoU" in outcome.stdout
    assert outcome.stdout.splitlines()[-1] == "the run is complete (2 iterations)"
    assert _without_latency(metrics.read_text()) == _without_latency("\n".join(lines))


def _without_latency(text: str) -> list[dict]:
    """metrics.jsonl's records less the validations' wall-clock latency (no two runs share
    it)."""
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        record.get("validation", {}).pop("latency_ms", None)
    return records


# -- memory -------------------------------------------------------------------------------------


def test_input_size_beyond_the_machines_memory_is_refused_before_the_run(data, tmp_path):
    """The finding: 16384x32768 was accepted; training started and died with exit 3 (OpenCV out
    of memory). Refused first, naming the fields, the estimate and what is available."""
    model = {**TINY["model"], "input_height": 16384, "input_width": 32768}
    config = _config(tmp_path, model=model, batch_size=64)
    _refused_start(
        tmp_path, data, config, "model.input_height", "16384x32768", "batch_size 64",
        "needs about", "TiB (estimated)", "MemAvailable",
    )  # fmt: skip


def test_batch_size_beyond_the_machines_memory_is_refused(data, tmp_path):
    config = _config(tmp_path, batch_size=10_000_000)
    _refused_start(tmp_path, data, config, "batch_size 10000000", "64x128", "needs about")


@pytest.fixture
def small_machine(monkeypatch):
    """A machine with 8 MiB available: less than the tiny config's estimate (~20 MiB)."""
    from mtl_perception.training import memory

    monkeypatch.setattr(memory, "available_host_memory", lambda: 8 * 2**20)


def test_refusal_names_the_memory_available(data, tmp_path, small_machine):
    line = _refused_start_line(tmp_path, data, _config(tmp_path))
    assert "more than the 8.0 MiB of memory available on this machine" in line
    needed = float(line.split("needs about ")[1].split(" MiB")[0])
    assert 8.0 < needed < 200, line  # the tiny config's estimate, in MiB


def test_resume_on_a_machine_with_too_little_memory_changes_nothing(
    finished_run, data, tmp_path, small_machine
):
    run = _copy_run(finished_run, tmp_path)
    _refused_resume(run, data, "needs about", "8.0 MiB", "batch_size 2")


def _refused_start_line(folder: Path, data: Path, config: Path) -> str:
    before = Snapshot(folder, data)
    outcome = invoke(
        train, "--no-progress", "--config", config, "--data", data, "--out", folder / "run"
    )
    line = assert_refused(outcome, "needs about")
    before.assert_unchanged()
    return line


# -- the data root a run resumes with ------------------------------------------------------------


def _with_data_root(run: Path, root: object) -> None:
    path = run / "checkpoints" / "last.pt"
    content = read_checkpoint(path)
    content.pop("format")
    if root is None:
        content.pop("data_root")
    else:
        content["data_root"] = str(root)
    save_checkpoint(path, content)


def test_resume_when_the_data_root_is_gone(finished_run, data, tmp_path):
    """The run's data root, stored resolved, no longer exists: refused naming it and --data."""
    run = _copy_run(finished_run, tmp_path)
    _with_data_root(run, tmp_path / "moved_away")
    _refused_resume(run, data, str(tmp_path / "moved_away"), "is gone", "give --data")


def test_resume_when_the_data_root_is_a_file(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    (tmp_path / "data.tar").write_bytes(b"not a folder")
    _with_data_root(run, tmp_path / "data.tar")
    _refused_resume(run, data, "data.tar", "is not a folder", "--data")


def test_resume_of_an_old_run_with_a_relative_data_root_elsewhere(
    finished_run, data, tmp_path, monkeypatch
):
    """Checkpoints of older versions hold the data root as given (relative): from another
    directory it is refused saying so, instead of a dataset error."""
    run = _copy_run(finished_run, tmp_path)
    _with_data_root(run, "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _refused_resume(run, data, "data root data is gone", "relative path", str(elsewhere))


def test_resume_of_a_checkpoint_naming_no_data_root(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    _with_data_root(run, None)
    _refused_resume(run, data, "names no data root", "--data")


def test_resume_refuses_a_config_yaml_that_changed(finished_run, data, tmp_path):
    """The finding: a leftover config.yaml of another config was silently used by --resume."""
    run = _copy_run(finished_run, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["batch_size"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    _refused_resume(run, data, "config.yaml", "differs", "batch_size")


def test_resume_refuses_mis_shaped_weights(finished_run, data, tmp_path):
    """The finding: a last.pt with the right config but wrongly shaped tensors gave a
    RuntimeError traceback."""
    run = _copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    content = read_checkpoint(path)
    name = next(k for k, v in content["model"].items() if v.ndim == 4)
    content["model"][name] = torch.zeros(1, 1, 1, 1)
    content.pop("format")
    save_checkpoint(path, content)
    _refused_resume(run, data, "does not fit", name)


def test_resume_refuses_non_finite_weights(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    content = read_checkpoint(path)
    name = next(k for k, v in content["model"].items() if v.is_floating_point())
    content["model"][name] = content["model"][name] * float("nan")
    content.pop("format")
    save_checkpoint(path, content)
    _refused_resume(run, data, "non-finite", name)


def test_resume_refuses_a_truncated_checkpoint(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[:1000])
    _refused_resume(run, data, "last.pt", "not a readable checkpoint")


def test_resume_of_a_cut_checkpoint_says_so_without_an_errno(finished_run, data, tmp_path):
    """The finding: a last.pt cut to a few kB gave '... (truncated or not a torch file):
    [Errno 22] Invalid argument' (a failed seek inside torch, for 5 to 66 kB); one of 1 kB,
    torch's paragraph of advice on miniz. The line says what the file is, and its size."""
    run = _copy_run(finished_run, tmp_path)
    path = run / "checkpoints" / "last.pt"
    whole = path.read_bytes()
    for size in (10_000, 1000):
        path.write_bytes(whole[:size])
        before = Snapshot(run.parent, data)
        line = assert_refused(invoke(train, "--no-progress", "--resume", run))
        before.assert_unchanged()
        assert f"truncated or not a torch file; {size} bytes" in line, line
        assert "Errno" not in line and "miniz" not in line, line


def test_resume_refuses_new_config_options(finished_run, data, tmp_path):
    run = _copy_run(finished_run, tmp_path)
    _refused_resume(run, data, "--resume continues a run as it was", extra=["--config", "x.yaml"])


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.pth"])
def test_pretrained_file_that_is_not_weights(data, tmp_path, name):
    weights = tmp_path / name
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage}")
    config = _config(tmp_path)
    _refused_start(
        tmp_path, data, config, name, "not a readable weights file", extra=["--pretrained", weights]
    )


def test_sigterm_before_the_first_checkpoint_leaves_nothing(tmp_path, data):
    """SIGTERM (timeout, systemd, docker stop, a cancelled CI job) gets Ctrl-C's clean-up: one
    line, exit 143, and a run that never wrote a checkpoint leaves no folder behind (it left
    config.yaml, metrics.jsonl and tensorboard/, so neither --resume nor a new run with the same
    --out worked). Deterministic: the signal is sent once config.yaml exists, and the schedule's
    first checkpoint is 10000 iterations away."""
    long = {**TINY["stages"][0], "iterations": 10_000}
    config = _config(tmp_path, stages=[long], checkpoint_every=10_000)
    out = tmp_path / "run"
    before = Snapshot(tmp_path, data)
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl_perception.training", "--no-progress",
         "--config", str(config), "--data", str(data), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == "error: terminated", stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    before.assert_unchanged()
