"""What happens around the train step, as hooks (in the manner of detectron2's train loop).

The loop (:meth:`Trainer.run`) calls, for every hook in order, ``before_train()``, then per
iteration ``after_step()`` once the step is done and ``trainer.iteration`` counts it, then
``after_train()``. A hook reads the trainer's state and never changes what the step computes:
validation runs with the RNG state forked, so a run that validates and one that does not (or a
resumed one) draw the same numbers.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import TYPE_CHECKING, Any

import cv2
import torch
from tqdm import tqdm

from ..evaluation.evaluate import EVAL_SCORE_THRESHOLD, evaluate
from ..inference.predictor import Predictor, PredictorConfig
from ..model.checkpoint import save_checkpoint
from ..outputs import atomic_file, write_text
from . import state
from .schedule import stage_at, stage_ends_at

if TYPE_CHECKING:
    from .config import TrainConfig
    from .trainer import Trainer


class Hook:
    """Base class: override what you need. ``trainer`` is set by the trainer."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


class ProgressHook(Hook):
    """tqdm bar, TensorBoard scalars and ``metrics.jsonl`` every ``log_every`` iterations and at
    each stage end (main process)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None

    def before_train(self) -> None:
        trainer = self.trainer
        if trainer.context.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # On resume, events a killed run logged after its checkpoint are hidden.
            self.writer = SummaryWriter(
                str(trainer.run_dir / "tensorboard"), purge_step=trainer.iteration + 1
            )
        self.bar = tqdm(
            total=trainer.config.total_iterations,
            initial=trainer.iteration,
            disable=not (self.enabled and trainer.context.is_main)
            or trainer.iteration >= trainer.config.total_iterations,  # complete: a line says so
            unit="it",
            dynamic_ncols=True,
        )
        self.started = (time.monotonic(), trainer.iteration)

    def after_step(self) -> None:
        trainer = self.trainer
        self.bar.update(1)
        if not (trainer.iteration % trainer.config.log_every == 0 or trainer.stage_ended):
            return
        values = {k: float(v.detach()) for k, v in trainer.losses.items()}
        stage = trainer.stage
        self.bar.set_description(f"{trainer.stage_index + 1}:{stage.name}")
        self.bar.set_postfix(
            {k.removeprefix("loss_"): f"{v:.3g}" for k, v in values.items()}, refresh=False
        )
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, trainer.iteration)
            elapsed = time.monotonic() - self.started[0]
            self.writer.add_scalar(
                "train/iterations_per_second",
                (trainer.iteration - self.started[1]) / max(elapsed, 1e-9),
                trainer.iteration,
            )
            trainer.append_metrics({"iteration": trainer.iteration, "stage": stage.name, **values})

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def due_checkpoints(config: TrainConfig, done: int) -> set[str]:
    """The checkpoint files the schedule writes once ``done`` steps are done: ``last.pt`` every
    ``checkpoint_every`` steps and at each stage end (with ``stage{k}_{name}.pt``), ``final.pt``
    at the end. (A stop adds ``last.pt``.)"""
    names = set()
    if done % config.checkpoint_every == 0:
        names.add("last.pt")
    ended = stage_ends_at(config.stages, done)
    if ended is not None:
        names |= {"last.pt", f"stage{ended + 1}_{config.stages[ended].name}.pt"}
    if done == config.total_iterations:
        names.add("final.pt")
    return names


def validation_due(config: TrainConfig, done: int) -> bool:
    """Whether the schedule validates once ``done`` steps are done (every ``validate_every``
    steps and at each stage end)."""
    every = config.validate_every
    return bool(every and done % every == 0) or stage_ends_at(config.stages, done) is not None


class CheckpointHook(Hook):
    """The checkpoints of :func:`due_checkpoints`, and ``last.pt`` when stopping (main process).

    On resume, a named checkpoint of the resumed iteration that a kill kept from being written
    (after ``last.pt``, whose content it shares) is written first, as a copy of ``last.pt``."""

    def before_train(self) -> None:
        trainer = self.trainer
        if not (trainer.resumed and trainer.context.is_main):
            return
        folder = trainer.run_dir / "checkpoints"
        for name in sorted(due_checkpoints(trainer.config, trainer.iteration)):
            if not (folder / name).exists():
                with (folder / "last.pt").open("rb") as source, atomic_file(folder / name) as copy:
                    shutil.copyfileobj(source, copy)
                trainer.log(f"wrote {name}, which the stopped run owed at {trainer.iteration}")

    def after_step(self) -> None:
        trainer = self.trainer
        names = due_checkpoints(trainer.config, trainer.iteration)
        if trainer.stop_requested:
            names.add("last.pt")
        if names and trainer.context.is_main:
            content = state.capture(trainer)
            for name in sorted(names):
                save_checkpoint(trainer.run_dir / "checkpoints" / name, content)
            trainer.checkpoints_written += 1


class ValidationHook(Hook):
    """mIoU and mAP on the val split every ``validate_every`` iterations and at each stage end
    (main process); overlays to disk and TensorBoard. RNG-neutral (see module docstring)."""

    def __init__(self, progress: ProgressHook) -> None:
        self.progress = progress
        self.last: dict[str, Any] | None = None

    def before_train(self) -> None:
        """On resume: the validation the checkpoint's iteration owed, when a kill came between
        writing the checkpoint and logging the validation (``metrics.jsonl`` has none)."""
        trainer = self.trainer
        if trainer.resumed and validation_due(trainer.config, trainer.iteration):
            self._run(pending=trainer.iteration not in trainer.logged_validations)

    def after_step(self) -> None:
        if validation_due(self.trainer.config, self.trainer.iteration):
            self._run(pending=True)

    def _run(self, pending: bool) -> None:
        trainer = self.trainer
        if trainer.context.is_main and pending:
            with torch.random.fork_rng(devices=_cuda_devices(trainer)):
                self.last = self._validate()
            trainer.log(
                f"iteration {trainer.iteration}: mIoU {_pct(self.last['miou'])}, "
                f"mAP@0.5 {_pct(self.last['map'])}"
            )
        trainer.context.barrier()

    def _validate(self) -> dict[str, Any]:
        trainer = self.trainer
        overlay_dir = trainer.run_dir / "overlays" / f"iter_{trainer.iteration:07d}"
        predictor = Predictor(
            trainer.model,
            trainer.model_config,
            PredictorConfig(device=str(trainer.device), score_threshold=EVAL_SCORE_THRESHOLD),
        )
        metrics = evaluate(
            predictor,
            trainer.val_set,
            overlay_dir=overlay_dir,
            save_overlays=trainer.config.overlays,
            max_images=trainer.config.val_images,
            progress=False,
        )
        trainer.model.train()
        writer = self.progress.writer
        if writer is not None:
            for key in ("miou", "map"):
                if metrics[key] is not None:
                    writer.add_scalar(f"val/{key}", metrics[key], trainer.iteration)
            for path in sorted(overlay_dir.glob("*.png")):
                picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
                writer.add_image(f"val/{path.stem}", picture, trainer.iteration, dataformats="HWC")
        # The stage that ended at this iteration (a resumed run has entered the next one).
        stage = trainer.config.stages[stage_at(trainer.config.stages, trainer.iteration - 1)[0]]
        trainer.append_metrics(
            {"iteration": trainer.iteration, "stage": stage.name, "validation": metrics}
        )
        return metrics


class StopHook(Hook):
    """Ends the run after ``stop_after`` iterations of this invocation (the checkpoint hook
    writes ``last.pt`` for it)."""

    def __init__(self, stop_after: int | None) -> None:
        self.stop_after = stop_after

    def before_train(self) -> None:
        self.start = self.trainer.iteration

    def after_step(self) -> None:
        """Runs BEFORE the checkpoint hook (the trainer orders it first)."""
        trainer = self.trainer
        if self.stop_after is not None and trainer.iteration - self.start >= self.stop_after:
            trainer.stop_requested = True

    def after_train(self) -> None:
        trainer = self.trainer
        if trainer.stop_requested and trainer.iteration < trainer.config.total_iterations:
            trainer.log(f"stopped after {self.stop_after} iterations at {trainer.iteration}")


def write_run_config(trainer: Trainer) -> None:
    """``config.yaml`` of a new run (atomically)."""
    import yaml

    write_text(
        trainer.run_dir / "config.yaml", yaml.safe_dump(trainer.config.to_dict(), sort_keys=False)
    )


def _cuda_devices(trainer: Trainer) -> list[int]:
    return [trainer.device.index or 0] if trainer.device.type == "cuda" else []


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"
