"""The training package: schedule, freezing by stage, exact resume, crash safety, run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
            "iterations": 2,
            "lr": 1e-3,
            "seg_weight": 40,
            "det_weight": 1,
            "frozen": [],
        },
        {
            "name": "segmentation",
            "iterations": 2,
            "lr": 1e-3,
            "seg_weight": 40,
            "det_weight": 0,
            "frozen": ["detector"],
        },
        {
            "name": "detection",
            "iterations": 2,
            "lr": 1e-4,
            "seg_weight": 0,
            "det_weight": 1,
            "frozen": ["encoder", "easpp", "decoder"],
        },
        {
            "name": "finetune",
            "iterations": 2,
            "lr": 1e-4,
            "seg_weight": 40,
            "det_weight": 1,
            "frozen": [],
        },
    ],
    "data": {"workers": 1},
    "batch_size": 2,
    "restart_period": 3,
    "val_images": 1,
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


def _train(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mtl_perception.training", "--no-progress", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
        cwd=cwd,
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
    assert [stage_at(stages, i) for i in (0, 1, 2, 5, 6, 7)] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (2, 1),
        (3, 0),
        (3, 1),
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
    assert [r["iteration"] for r in validations] == [2, 4, 6, 8]  # at each stage end
    assert all(0 <= r["validation"]["miou"] <= 1 for r in validations)
    logged_lr = {r["iteration"]: r["lr"] for r in records if "lr" in r}
    stages = TrainConfig.from_dict(TINY).stages
    for iteration, lr in logged_lr.items():  # the rate used for the step that ended here
        index, local = stage_at(stages, iteration - 1)
        assert lr == pytest.approx(poly_restart_lr(stages[index].lr, local, 3, 0.9), rel=1e-6)
    assert len(list((straight_run / "overlays").rglob("*.png"))) == 4
    model, content = load_model(checkpoints / "final.pt")
    assert content["iteration"] == 8 and model.config.det_class_names[0] == "Car/Truck/Bus"


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


def _same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same run state, bit for bit: weights, optimizer moments and
    step counts, every RNG, iteration and stage."""
    assert a["iteration"] == b["iteration"] and a["stage"] == b["stage"]
    differing = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    for x, y in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert torch.equal(a["rng"]["numpy"]["keys"], b["rng"]["numpy"]["keys"])
    assert a["rng"]["python"] == b["rng"]["python"]


def _in_process(data: Path, run: Path, *, resume: bool = False, stop_after=None) -> Trainer:
    config = TrainConfig.from_dict({**TINY, "data": {"workers": 0}})
    trainer = Trainer(
        config,
        data,
        run,
        init_distributed("cpu"),
        resume=resume,
        stop_after=stop_after,
        progress=False,
    )
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def straight_in_process(data, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("straight_in_process") / "run"
    _in_process(data, run)
    return read_checkpoint(run / "checkpoints" / "final.pt")


@pytest.mark.slow
@pytest.mark.parametrize("stop", range(1, 8))  # TINY: 4 stages x 2; 2, 4, 6 are stage ends
def test_stopping_after_any_iteration_and_resuming_equals_the_straight_run(
    straight_in_process, data, tmp_path, stop
):
    run = tmp_path / "run"
    _in_process(data, run, stop_after=stop)
    assert read_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == stop
    _in_process(data, run, resume=True)
    _same_state(straight_in_process, read_checkpoint(run / "checkpoints" / "final.pt"))


@pytest.mark.slow
def test_cli_stop_at_a_stage_boundary_and_resume_with_a_loader_worker(straight_run, data, tmp_path):
    """The finding: --stop-after 4 (the end of stage 2) + --resume differed from the straight
    run in 451 tensors. Through the CLI, with one DataLoader worker process, as users run it."""
    run = tmp_path / "run"
    config = _config_file(tmp_path)
    _train("--config", str(config), "--data", str(data), "--out", str(run), "--stop-after", "4")
    assert read_checkpoint(run / "checkpoints" / "last.pt")["stage"] == 1  # the finished one
    _train("--resume", str(run))
    _same_state(
        read_checkpoint(straight_run / "checkpoints" / "final.pt"),
        read_checkpoint(run / "checkpoints" / "final.pt"),
    )


KILLER = Path(__file__).parent / "helpers" / "kill_during_checkpoint.py"
VALIDATION_KILLER = Path(__file__).parent / "helpers" / "kill_before_validation.py"


def _killed(helper: Path, count: int, *args: str) -> None:
    """Runs ``helper count mtl-train args`` and checks that it died of SIGKILL."""
    killed = subprocess.run(
        [sys.executable, str(helper), str(count), "--no-progress", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]


def _records(run: Path) -> list[dict]:
    """metrics.jsonl, less the wall-clock figures (validation latency) that no two runs share."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.get("validation", {}).pop("latency_ms", None)
    return records


def _checkpoint_names(run: Path) -> set[str]:
    return {path.name for path in (run / "checkpoints").glob("*.pt")}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("write", "resumes_at"),
    [
        (3, 2),  # during stage1_joint.pt, right after the stage end's last.pt
        (4, 2),  # during last.pt of iteration 3: the one of iteration 2 stays whole
        (6, 4),  # during stage2_segmentation.pt at the next stage boundary
    ],
)
def test_sigkill_during_a_checkpoint_write_never_tears_it_and_resume_matches(
    straight_run, data, tmp_path, write, resumes_at
):
    """SIGKILL in the middle of the N-th checkpoint file write (half its bytes written),
    deterministically; then --resume must reach the straight run's final state."""
    run = tmp_path / "run"
    config = _config_file(tmp_path)
    _killed(KILLER, write, "--config", str(config), "--data", str(data), "--out", str(run))
    checkpoints = run / "checkpoints"
    for path in checkpoints.glob("*.pt"):
        read_checkpoint(path)  # every visible checkpoint is whole
    assert read_checkpoint(checkpoints / "last.pt")["iteration"] == resumes_at
    assert list(checkpoints.glob(".*.tmp"))  # the torn write stayed a temporary file
    _train("--resume", str(run))
    assert not list(checkpoints.glob(".*.tmp"))  # resume cleared it
    _same_state(
        read_checkpoint(straight_run / "checkpoints" / "final.pt"),
        read_checkpoint(checkpoints / "final.pt"),
    )
    # What the kill kept from being done is redone: with write 3, stage1_joint.pt and the
    # validation at iteration 2 (both were missing after resume); no duplicate records.
    assert _checkpoint_names(run) == _checkpoint_names(straight_run)
    assert _records(run) == _records(straight_run)


@pytest.mark.slow
def test_sigkill_between_a_stage_end_checkpoint_and_its_validation_resumes_the_validation(
    straight_run, data, tmp_path
):
    """The finding: killed after the stage-end checkpoint, before that stage's validation, the
    resumed run's metrics.jsonl lacked that validation. Killed at exactly that point (the first
    validation starts at the end of stage 1, iteration 2), --resume redoes it."""
    run = tmp_path / "run"
    config = _config_file(tmp_path)
    _killed(VALIDATION_KILLER, 1, "--config", str(config), "--data", str(data), "--out", str(run))
    assert read_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2
    assert (run / "checkpoints" / "stage1_joint.pt").is_file()
    assert not [r for r in _records(run) if "validation" in r]
    resumed = _train("--resume", str(run))
    assert "iteration 2: mIoU" in resumed.stdout
    assert _records(run) == _records(straight_run)
    assert _checkpoint_names(run) == _checkpoint_names(straight_run)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_starts_again_with_the_same_command(
    straight_run, data, tmp_path
):
    """The finding: SIGKILLed before its first checkpoint, a run left config.yaml (and more)
    but nothing to resume; the same command was refused ("exists and is not empty") and so was
    --resume ("no checkpoint"). Killed in the middle of its first checkpoint write here."""
    run = tmp_path / "run"
    command = ["--config", str(_config_file(tmp_path)), "--data", str(data), "--out", str(run)]
    _killed(KILLER, 1, *command)
    assert (run / "config.yaml").is_file() and not _checkpoint_names(run)
    refused = _train("--resume", str(run), check=False)
    assert refused.returncode == 2, refused.stderr
    assert "nothing to resume" in refused.stderr
    assert f"--config {run / 'config.yaml'}" in refused.stderr  # says what to do
    again = _train(*command)
    assert "starting again a run stopped before its first checkpoint" in again.stdout
    _same_state(
        read_checkpoint(straight_run / "checkpoints" / "final.pt"),
        read_checkpoint(run / "checkpoints" / "final.pt"),
    )
    assert _records(run) == _records(straight_run)  # the killed start's records are gone


@pytest.mark.slow
def test_resume_from_another_directory_finds_a_relative_data_root(data, tmp_path):
    """The finding: the data root was stored as given (relative), so --resume from another
    directory failed. It is stored resolved."""
    run = tmp_path / "run"
    config = _config_file(tmp_path)
    _train(
        "--config", str(config), "--data", data.name, "--out", str(run), "--stop-after", "1",
        cwd=data.parent,
    )  # fmt: skip
    assert read_checkpoint(run / "checkpoints" / "last.pt")["data_root"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _train("--resume", str(run), "--stop-after", "1", cwd=elsewhere)
    assert read_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 2


def test_a_run_folder_taken_by_another_run_between_its_creation_and_the_lock_stays(
    tmp_path, monkeypatch
):
    """Two starts for a missing --out at the same instant: both see it missing, one makes it,
    the other locks it first. The one refused must not remove the folder it made (empty then),
    which the other is about to fill. Deterministic: the other run's lock is taken (by this
    test) right before ours."""
    from mtl_perception.file_locks import lock_exclusively
    from mtl_perception.training import run_dir

    run = tmp_path / "runs" / "run"
    other: list[int] = []

    def other_run_first(path, **kwargs):
        other.append(lock_exclusively(path, **kwargs))
        return lock_exclusively(path, **kwargs)

    monkeypatch.setattr(run_dir, "lock_exclusively", other_run_first)
    refused = pytest.raises(ValueError, match=f"--out {run} is in use by a running mtl-train")
    try:
        with refused, run_dir.owned_run_dir(run, "--out", create=True):
            pass
        assert run.is_dir()
    finally:
        for handle in other:
            os.close(handle)


def test_checkpoints_follow_the_umask_so_other_users_can_read_them(tmp_path):
    from mtl_perception.model.checkpoint import save_checkpoint

    for umask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            save_checkpoint(tmp_path / f"{umask:o}.pt", {"model_config": {}, "model": {}})
        finally:
            os.umask(old)
        assert (tmp_path / f"{umask:o}.pt").stat().st_mode & 0o777 == mode


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
    # --resume continues with the config the checkpoint holds; an edited config.yaml is refused.
    assert "config.yaml differs" in result.stderr and "['model']" in result.stderr


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
        ({"learning_rate": 1}, r"unknown keys \['learning_rate'\]"),
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
    assert content["iteration"] == 8
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("validation" in r for r in records) == 4  # written once, by rank 0


# The step's own peak: VmHWM of this process's memory map, reset to the current RSS just before
# the step (writing 5 to /proc/self/clear_refs). Not ru_maxrss: Linux carries the parent's peak
# across fork and exec into it, so under a fat pytest worker it showed no growth at all.
MEASURE_STEP = """
import sys, torch
from mtl_perception.model.config import ModelConfig
from mtl_perception.model.network import MultiTaskNet
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
torch.set_num_threads(1)
width, height, batch = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
network = MultiTaskNet(ModelConfig(width_multiplier=width, input_height=height,
                                   input_width=2 * height))
optimizer = torch.optim.Adam(network.parameters())
images = torch.randn(batch, 3, height, 2 * height)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as peak:
    peak.write("5")
outputs = network(images)
loss = sum(t.float().square().mean() for o in outputs if o is not None
           for t in (o if isinstance(o, tuple) else (o,)))
loss.backward()
optimizer.step()
print(status("VmHWM") - before)
"""


@pytest.mark.parametrize(("width", "height", "batch"), [(0.125, 256, 2), (0.5, 128, 2)])
def test_memory_estimate_has_the_order_of_a_real_steps_peak(width, height, batch):
    """The estimate of training/memory.py against one real step's peak growth of the resident
    memory (a fresh process; the weights were resident before, so 4 of the 16 bytes a
    parameter are left out): within a factor of 2 either way."""
    from mtl_perception.model.config import ModelConfig
    from mtl_perception.training.memory import estimate_training_memory

    measured = subprocess.run(
        [sys.executable, "-c", MEASURE_STEP, str(width), str(height), str(batch)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=True,
    )
    peak_growth = int(measured.stdout.split()[-1])
    config = ModelConfig(width_multiplier=width, input_height=height, input_width=2 * height)
    estimate = estimate_training_memory(config, batch, largest_scale=1.0, workers=0)
    expected = estimate.step + estimate.model * 12 // 16
    assert 0.5 < peak_growth / expected < 2.0, (peak_growth, estimate)


def test_memory_estimate_scales_with_pixels_and_leaves_the_rng_alone():
    from mtl_perception.model.config import ModelConfig
    from mtl_perception.training.memory import estimate_training_memory

    torch.manual_seed(5)
    before = torch.get_rng_state()
    small = estimate_training_memory(ModelConfig(width_multiplier=0.125), 2, 1.5, 1)
    assert torch.equal(torch.get_rng_state(), before)  # a run's random numbers are its own
    large = estimate_training_memory(
        ModelConfig(width_multiplier=0.125, input_height=768, input_width=1536), 4, 1.5, 1
    )
    assert large.model == small.model
    assert large.step == pytest.approx(8 * small.step, rel=1e-6)
    assert large.data == pytest.approx(8 * small.data, rel=1e-6)


def test_memory_check_compares_each_part_with_where_it_lives(monkeypatch):
    """CPU: all of it with the host's MemAvailable. CUDA: weights, optimizer and activations with
    the GPU's free memory, the data in flight with the host's, once per local process."""
    from mtl_perception.model.config import ModelConfig
    from mtl_perception.training import memory

    gib = 2**30
    estimate = memory.MemoryEstimate(model=2 * gib, step=6 * gib, data=1 * gib)
    config = ModelConfig(input_height=384, input_width=768)
    monkeypatch.setattr(memory, "available_host_memory", lambda: 4 * gib)
    monkeypatch.setattr(memory, "available_device_memory", lambda device: 10 * gib)
    memory.check_memory(estimate, config, 8, torch.device("cuda:0"))  # 8 of 10 GiB, 1 of 4
    with pytest.raises(ValueError, match=r"384x768 with batch_size 8 needs about 9\.0 GiB "):
        memory.check_memory(estimate, config, 8, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"of 5 processes needs about 5\.0 GiB .* 4\.0 GiB"):
        memory.check_memory(estimate, config, 8, torch.device("cuda:0"), processes=5)
    monkeypatch.setattr(memory, "available_device_memory", lambda device: 7 * gib)
    with pytest.raises(ValueError, match=r"about 8\.0 GiB \(estimated\), more than the 7\.0 GiB "):
        memory.check_memory(estimate, config, 8, torch.device("cuda:0"))
    monkeypatch.setattr(memory, "available_host_memory", lambda: None)  # no /proc/meminfo
    memory.check_memory(estimate, config, 8, torch.device("cpu"))
