"""The training package: schedule, freezing by stage, exact resume, crash safety, run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtl_perception.data.synthetic import write_dataset
from mtl_perception.model.checkpoint import load_model, read_checkpoint
from mtl_perception.training.config import TrainConfig
from mtl_perception.training.distributed import init_distributed
from mtl_perception.training.sampler import IterationSampler
from mtl_perception.training.schedule import poly_restart_lr
from mtl_perception.training.trainer import Trainer, stage_at

REPO = Path(__file__).resolve().parent.parent

TINY = {
    "model": {
        "width_multiplier": 0.125,
        "input_height": 64,
        "input_width": 128,
        "dropout": 0.5,
        "anchors": [
            [[4, 8], [8, 6], [6, 14]],
            [[14, 11], [11, 26], [24, 18]],
            [[22, 48], [48, 34], [90, 65]],
        ],
    },
    "stages": [
        {
            "name": "joint",
            "iterations": 4,
            "lr": 1e-3,
            "seg_weight": 40,
            "det_weight": 1,
            "frozen": [],
        },
        {
            "name": "segmentation",
            "iterations": 4,
            "lr": 1e-3,
            "seg_weight": 40,
            "det_weight": 0,
            "frozen": ["detector"],
        },
        {
            "name": "detection",
            "iterations": 4,
            "lr": 1e-4,
            "seg_weight": 0,
            "det_weight": 1,
            "frozen": ["encoder", "easpp", "decoder"],
        },
        {
            "name": "finetune",
            "iterations": 4,
            "lr": 1e-4,
            "seg_weight": 40,
            "det_weight": 1,
            "frozen": [],
        },
    ],
    "data": {"workers": 1},
    "batch_size": 2,
    "restart_period": 3,
    "checkpoint_every": 1,
    "validate_every": 0,
    "overlays": 1,
    "log_every": 1,
    "seed": 3,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    write_dataset(root, {"train": 6, "val": 2}, seed=8, width=256, height=128, progress=False)
    return root


def _config_file(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _train(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mtl_perception.training", "--no-progress", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_learning_rate_follows_poly_decay_with_restarts():
    base, period, power = 1e-3, 100, 0.9
    for iteration, expected in [
        (0, base),
        (50, base * 0.5**power),
        (99, base * 0.01**power),
        (100, base),  # restart
        (175, base * 0.25**power),
        (250, base * 0.5**power),
    ]:
        assert poly_restart_lr(base, iteration, period, power) == pytest.approx(expected, rel=1e-12)
    stages = TrainConfig.from_dict(TINY).stages
    assert [stage_at(stages, i) for i in (0, 3, 4, 11, 12, 15)] == [
        (0, 0),
        (0, 3),
        (1, 0),
        (2, 3),
        (3, 0),
        (3, 3),
    ]


def test_sampler_stream_depends_only_on_position():
    straight = IterationSampler(5, 2, seed=1)
    resumed = IterationSampler(5, 2, seed=1, start_iteration=7)
    assert [straight.batch(i) for i in range(7, 12)] == [
        b for b, _ in zip(resumed, range(5), strict=False)
    ]
    two_ranks = [IterationSampler(5, 2, seed=1, rank=r, world_size=2).batch(3) for r in (0, 1)]
    single = IterationSampler(5, 4, seed=1).batch(3)
    assert two_ranks[0] + two_ranks[1] == single
    epoch = [straight.batch(i) for i in range(5)]  # 10 positions = 2 epochs of 5
    indices = [index for batch in epoch for index, _ in batch]
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:]) == list(range(5))


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("straight")
    _train("--config", str(_config_file(folder)), "--data", str(data), "--out", str(folder / "run"))
    return folder / "run"


@pytest.mark.slow
def test_run_directory_holds_what_a_person_expects(straight_run):
    checkpoints = straight_run / "checkpoints"
    assert {p.name for p in checkpoints.glob("*.pt")} == {
        "last.pt",
        "final.pt",
        "stage1_joint.pt",
        "stage2_segmentation.pt",
        "stage3_detection.pt",
        "stage4_finetune.pt",
    }
    assert (
        yaml.safe_load((straight_run / "config.yaml").read_text())["stages"][2]["name"]
        == "detection"
    )
    assert list((straight_run / "tensorboard").glob("events.out.tfevents.*"))
    records = [
        json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines()
    ]
    validations = [r for r in records if "validation" in r]
    assert [r["iteration"] for r in validations] == [4, 8, 12, 16]  # at each stage end
    assert all(0 <= r["validation"]["miou"] <= 1 for r in validations)
    logged_lr = {r["iteration"]: r["lr"] for r in records if "lr" in r}
    stages = TrainConfig.from_dict(TINY).stages
    for iteration, lr in logged_lr.items():  # the rate used for the step that ended here
        index, local = stage_at(stages, iteration - 1)
        assert lr == pytest.approx(poly_restart_lr(stages[index].lr, local, 3, 0.9), rel=1e-6)
    assert len(list((straight_run / "overlays").rglob("*.png"))) == 4
    model, content = load_model(checkpoints / "final.pt")
    assert content["iteration"] == 16 and model.config.det_class_names[0] == "Car/Truck/Bus"


@pytest.mark.slow
def test_stages_freeze_their_parts_including_batchnorm_statistics(straight_run):
    checkpoints = straight_run / "checkpoints"
    joint, segmentation, detection, finetune = (
        _weights(checkpoints / name)
        for name in (
            "stage1_joint.pt",
            "stage2_segmentation.pt",
            "stage3_detection.pt",
            "stage4_finetune.pt",
        )
    )
    # Stage 2: the detector (weights and BN statistics) does not move; the rest does.
    assert _same(joint, segmentation, "detector.")
    assert not _same(joint, segmentation, "encoder.") and not _same(joint, segmentation, "decoder.")
    # Stage 3: encoder, eASPP, decoder (BN statistics too) fixed; the detector moves.
    for part in ("encoder.", "easpp.", "decoder."):
        assert _same(segmentation, detection, part), part
    assert any(k.endswith("running_mean") for k in segmentation if k.startswith("encoder."))
    assert not _same(segmentation, detection, "detector.")
    assert not _same(detection, finetune, "encoder.") and not _same(
        detection, finetune, "detector."
    )


@pytest.mark.slow
def test_stopping_halfway_and_resuming_gives_identical_weights(straight_run, data, tmp_path):
    run = tmp_path / "run"
    _train(
        "--config",
        str(_config_file(tmp_path)),
        "--data",
        str(data),
        "--out",
        str(run),
        "--stop-after",
        "6",
    )
    assert read_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 6  # mid stage 2
    _train("--resume", str(run))
    assert _same(
        _weights(straight_run / "checkpoints" / "final.pt"),
        _weights(run / "checkpoints" / "final.pt"),
    )


@pytest.mark.slow
def test_sigkill_never_leaves_a_corrupt_checkpoint_and_resume_still_matches(
    straight_run, data, tmp_path
):
    run = tmp_path / "run"
    config = _config_file(tmp_path)
    command = [sys.executable, "-m", "mtl_perception.training", "--no-progress"]
    for attempt, delay in enumerate((5.0, 7.5, 9.0)):
        args = (
            ["--resume", str(run)]
            if attempt
            else ["--config", str(config), "--data", str(data), "--out", str(run)]
        )
        process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay * torch.rand(()).item() / 5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        content = read_checkpoint(run / "checkpoints" / "last.pt")  # never torn
        load_model(run / "checkpoints" / "last.pt")
        assert 0 < content["iteration"] <= 16
        if content["iteration"] == 16:
            break
    _train("--resume", str(run))
    assert _same(
        _weights(straight_run / "checkpoints" / "final.pt"),
        _weights(run / "checkpoints" / "final.pt"),
    )


@pytest.mark.slow
def test_resume_refuses_a_run_of_another_model_config(straight_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(straight_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["width_multiplier"] = 0.25
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = _train("--resume", str(run), check=False)
    assert result.returncode == 2
    assert "different model config" in result.stderr and "width_multiplier" in result.stderr


def test_non_finite_loss_stops_the_run_naming_the_iteration(data, tmp_path):
    trainer = Trainer(
        TrainConfig.from_dict({**TINY, "data": {"workers": 0}}),
        data,
        tmp_path / "run",
        init_distributed("cpu"),
        progress=False,
    )
    original = trainer.criterion.forward

    def poisoned(*args, **kwargs):
        losses = original(*args, **kwargs)
        losses["loss"] = losses["loss"] * float("nan")
        return losses

    trainer.criterion.forward = poisoned
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 0 \(stage joint\)"):
        trainer.run()


def test_bad_configs_are_refused_with_the_reason(tmp_path):
    for change, message in (
        ({"stages": [{**TINY["stages"][0], "frozen": ["wheels"]}]}, "unknown frozen parts"),
        ({"precision": "fp8"}, "precision must be"),
        ({"learning_rate": 1}, "unknown training config keys"),
    ):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**TINY, **change}))
        with pytest.raises(ValueError, match=message) as error:
            TrainConfig.from_yaml(path)
        assert str(path) in str(error.value)
    for name in ("train_cityscapes.yaml", "train_synthetic_small.yaml"):
        TrainConfig.from_yaml(REPO / "config" / name)


@pytest.mark.slow
def test_torchrun_trains_with_two_processes(data, tmp_path):
    """torch.distributed data parallel (gloo on CPU here, NCCL on GPUs): the same script."""
    run = tmp_path / "run"
    config = _config_file(tmp_path, batch_size=1, data={"workers": 0})
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "torchrun"),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "mtl_perception.training",
            "--no-progress",
            "--config",
            str(config),
            "--data",
            str(data),
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    content = read_checkpoint(run / "checkpoints" / "final.pt")
    assert content["iteration"] == 16
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("validation" in r for r in records) == 4  # written once, by rank 0
