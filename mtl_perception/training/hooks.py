"""What happens around the train step, as hooks (in the manner of detectron2's train loop).

The loop (:meth:`Trainer.run`) calls, for every hook in order, ``before_train()``, then per
iteration ``after_step()`` once the step is done and ``trainer.iteration`` counts it, then
``after_train()``. A hook reads the trainer's state and never changes what the step computes:
validation runs with the RNG state forked, so a run that validates and one that does not (or a
resumed one) draw the same numbers.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import cv2
import torch
from tqdm import tqdm

from ..evaluation.evaluate import EVAL_SCORE_THRESHOLD, evaluate
from ..inference.predictor import Predictor, PredictorConfig
from ..model.checkpoint import save_checkpoint
from ..outputs import write_text
from . import state

if TYPE_CHECKING:
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
            disable=not (self.enabled and trainer.context.is_main),
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


class CheckpointHook(Hook):
    """``last.pt`` every ``checkpoint_every`` iterations, at each stage end (with
    ``stage{k}_{name}.pt``), when stopping, and ``final.pt`` at the end (main process)."""

    def after_step(self) -> None:
        trainer = self.trainer
        names = set()
        if trainer.iteration % trainer.config.checkpoint_every == 0:
            names.add("last.pt")
        if trainer.stage_ended:
            names |= {"last.pt", f"stage{trainer.stage_index + 1}_{trainer.stage.name}.pt"}
        if trainer.stop_requested:
            names.add("last.pt")
        if trainer.iteration == trainer.config.total_iterations:
            names.add("final.pt")
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

    def after_step(self) -> None:
        trainer = self.trainer
        every = trainer.config.validate_every
        if not ((every and trainer.iteration % every == 0) or trainer.stage_ended):
            return
        if trainer.context.is_main:
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
        trainer.append_metrics(
            {"iteration": trainer.iteration, "stage": trainer.stage.name, "validation": metrics}
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
