"""The training loop of the paper's four-stage schedule (section 4.2).

The step itself is data -> loss -> backward -> step (:meth:`Trainer.train_step`). The loop
(:meth:`Trainer.run`) enters each stage (freezing, a fresh Adam) and runs the hooks of
:mod:`.hooks` around the step: progress and logging (tqdm, TensorBoard, metrics.jsonl),
checkpoints (atomic; every N iterations, at each stage end, when stopping, at the end),
validation (every N iterations and at each stage end) and stopping. A non-finite loss stops the
run at once. Everything a run needs to continue exactly is saved and restored by
:mod:`.state`, in one place, so ``--resume`` from any checkpoint equals a run that never
stopped, bit for bit.

What a run writes is listed in :mod:`.run_dir`. A resumed run first redoes what its
checkpoint's iteration still owed (a stage-end validation, a named checkpoint) when the kill came
between writing ``last.pt`` and finishing them, so its outputs equal a run that never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.cityscapes import CityscapesDataset
from ..data.labels import ClassMap
from ..data.loader import Batch, LoadFailure, collate, reporting
from ..data.transforms import TrainAugmentation
from ..losses import LossConfig, MultiTaskLoss
from ..model.checkpoint import check_weights, read_checkpoint
from ..model.config import OUTPUT_STRIDE, ModelConfig
from ..model.freezing import set_frozen, unfreeze_all
from ..model.network import MultiTaskNet, normalize_images
from ..model.pretrained import load_pretrained_encoder
from ..outputs import write_text
from . import state
from .config import StageConfig, TrainConfig
from .distributed import DistributedContext
from .hooks import CheckpointHook, Hook, ProgressHook, StopHook, ValidationHook, write_run_config
from .memory import check_training_fits
from .run_dir import finished, last_checkpoint, metrics_records
from .sampler import IterationSampler
from .schedule import poly_restart_lr, stage_at


def _class_map(config: TrainConfig, source: str | Path | None) -> ClassMap:
    """The class map ``data.classes`` names; a failure names that field and ``source``."""
    try:
        return ClassMap.from_yaml(config.data.classes)
    except ValueError as error:
        where = f" in {source}" if source else ""
        raise ValueError(f"data.classes{where}: {error}") from error


class Trainer:
    """Trains (or resumes) one run.

    Args:
        config: the training config.
        data_root: a Cityscapes-layout dataset.
        run_dir: where everything is written.
        context: the process group (single process by default).
        resume: continue from ``run_dir/checkpoints/last.pt`` (whose weights, config and
            state are checked against ``config`` first).
        stop_after: stop (with a checkpoint) after this many iterations of this invocation.
        progress: show the tqdm bar.
        config_source: where ``config`` came from (its YAML file, a checkpoint), named in
            errors about what its fields point to (``data.classes``).
    """

    def __init__(
        self,
        config: TrainConfig,
        data_root: str | Path,
        run_dir: str | Path,
        context: DistributedContext,
        *,
        resume: bool = False,
        stop_after: int | None = None,
        progress: bool = True,
        config_source: str | Path | None = None,
    ) -> None:
        if stop_after is not None and stop_after < 1:
            raise ValueError(f"--stop-after must be >= 1, got {stop_after}")
        self.config = config
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.context = context
        self.device = context.device
        self.class_map = _class_map(config, config_source)
        self.model_config = self._model_config_with_names(config.model)
        check_training_fits(
            self.model_config,
            config.batch_size,
            config.data.scale_range[1],
            config.data.workers,
            self.device,
            context.local_world_size,
        )
        height, width = self.model_config.input_height, self.model_config.input_width
        self.train_set = CityscapesDataset(
            self.data_root,
            config.data.train_split,
            self.class_map,
            TrainAugmentation(
                height,
                width,
                tuple(config.data.scale_range),
                config.data.flip_probability,
                self.class_map.min_box_size,
            ),
        )
        self.val_set = CityscapesDataset(self.data_root, config.data.val_split, self.class_map)
        state.seed_everything(config.seed)
        self.model = MultiTaskNet(self.model_config).to(self.device)
        self.channels_last = (
            self.device.type == "cuda" if config.channels_last is None else config.channels_last
        )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = MultiTaskLoss(
            torch.tensor(self.model_config.anchors),
            OUTPUT_STRIDE,
            LossConfig(
                focal_alpha=config.focal_alpha,
                focal_gamma=config.focal_gamma,
                box_weight=config.box_weight,
                box_loss=config.box_loss,
            ),
        ).to(self.device)
        self.precision = self._precision()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == torch.float16)
        # Loop state, read by the hooks.
        self.iteration = 0
        self.stage_index: int | None = None
        self.stage: StageConfig | None = None
        self.stage_ended = False
        self.stop_requested = False
        self.losses: dict[str, torch.Tensor] = {}
        self.checkpoints_written = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.network: torch.nn.Module = self.model
        self._resume_content: dict[str, Any] | None = None
        self.resumed = resume
        self.logged_validations: set[int] = set()  # iterations metrics.jsonl has validated
        if resume:
            self._load_last()
        elif config.pretrained:
            report = load_pretrained_encoder(self.model.encoder, Path(config.pretrained))
            self.log(report.summary())
        self.progress = ProgressHook(progress)
        self.validation = ValidationHook(self.progress)
        # Order matters: stop decides before the checkpoint hook writes last.pt for it.
        self.hooks: list[Hook] = [
            StopHook(stop_after),
            self.progress,
            CheckpointHook(),
            self.validation,
        ]
        for hook in self.hooks:
            hook.trainer = self

    # -- set-up ---------------------------------------------------------------------------

    def _model_config_with_names(self, model: ModelConfig) -> ModelConfig:
        cm = self.class_map
        if (model.num_seg_classes, model.num_det_classes) != (
            cm.num_seg_classes,
            cm.num_det_classes,
        ):
            raise ValueError(
                f"the model config has {model.num_seg_classes} segmentation and "
                f"{model.num_det_classes} detection classes, the class map "
                f"{self.config.data.classes} {cm.num_seg_classes} and {cm.num_det_classes}"
            )
        return dataclasses.replace(
            model, seg_class_names=cm.seg_names, det_class_names=cm.det_names
        )

    def _precision(self) -> torch.dtype | None:
        wanted = self.config.precision
        if wanted == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        if wanted == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use fp32 or bf16")
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[wanted]

    def _load_last(self) -> None:
        """Reads ``last.pt`` and checks it belongs to this run before anything is changed."""
        path = last_checkpoint(self.run_dir)
        content = read_checkpoint(path)
        saved = content["model_config"]
        ours = self.model_config.to_dict()
        differing = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        if differing:
            raise ValueError(
                f"checkpoint {path} was written for a different model config "
                f"(differs in {differing}); it cannot resume this run"
            )
        check_weights(self.model.state_dict(), content["model"], path)
        iteration = content.get("iteration")
        if not isinstance(iteration, int) or not 0 < iteration <= self.config.total_iterations:
            raise ValueError(
                f"checkpoint {path} is at iteration {iteration!r}, outside this run's schedule "
                f"of {self.config.total_iterations} iterations"
            )
        self.model.load_state_dict(content["model"])
        self.iteration = iteration
        self._resume_content = content

    def enter_stage(self, index: int) -> None:
        """Freezes what the stage freezes and gives it a fresh Adam (paper section 4.2)."""
        stage = self.config.stages[index]
        unfreeze_all(self.model)
        set_frozen(self.model, stage.frozen, True)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            trainable, lr=stage.lr, betas=self.config.adam_betas, eps=self.config.adam_eps
        )
        self.network = self.model
        if self.context.enabled:
            self.network = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.model.train()
        self.stage_index, self.stage = index, stage
        self.log(
            f"stage {index + 1}/{len(self.config.stages)} '{stage.name}': "
            f"{stage.iterations} iterations, lr {stage.lr:g}, W_seg {stage.seg_weight:g}, "
            f"W_det {stage.det_weight:g}, frozen {list(stage.frozen) or 'nothing'}"
        )

    # -- the step ---------------------------------------------------------------------------

    def train_step(
        self, batch: Batch, stage: StageConfig, stage_iteration: int
    ) -> dict[str, torch.Tensor]:
        """One optimizer step; returns the (weighted, detached) losses."""
        lr = poly_restart_lr(
            stage.lr, stage_iteration, self.config.restart_period, self.config.poly_power
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(self.device, non_blocking=True)
        images = normalize_images(batch.images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=self.precision)
            if self.precision
            else nullcontext()
        )
        # A task with weight 0 whose head is frozen is not computed at all (the detection stage
        # skips the segmentation head, the segmentation stage the detector).
        segmentation = bool(stage.seg_weight) or "decoder" not in stage.frozen
        detection = bool(stage.det_weight) or "detector" not in stage.frozen
        with autocast:
            outputs = self.network(images, segmentation=segmentation, detection=detection)
        losses = self.criterion(
            outputs,
            batch.segmentation,
            batch.boxes,
            batch.classes,
            stage.seg_weight,
            stage.det_weight,
        )
        if not torch.isfinite(losses["loss"]):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise FloatingPointError(
                f"non-finite loss at iteration {self.iteration} (stage {stage.name}): {values}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"lr": torch.tensor(lr), **{k: v.detach() for k, v in losses.items()}}

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any] | None:
        """Trains to the end of the schedule (or ``stop_after``); returns the last validation.

        A new run whose start fails before its first checkpoint leaves no run directory; a
        finished run resumed says so in one line and changes nothing.
        """
        if self.resumed and finished(self.run_dir, self.config, self.iteration):
            self.log(
                f"--resume {self.run_dir}: the run is already complete "
                f"({self.iteration} iterations); nothing to do"
            )
            return None
        created = self._prepare_run_dir()
        complete = self.iteration >= self.config.total_iterations  # resumed to redo what it owed
        try:
            loader = self._loader()
            batches = iter(loader)
            if self.iteration < self.config.total_iterations:
                self.enter_stage(stage_at(self.config.stages, self.iteration)[0])
            if self._resume_content is not None:
                state.restore(self, self._resume_content)
                self._resume_content = None
            for hook in self.hooks:
                hook.before_train()
            try:
                while self.iteration < self.config.total_iterations and not self.stop_requested:
                    index, stage_iteration = stage_at(self.config.stages, self.iteration)
                    if index != self.stage_index:
                        self.enter_stage(index)
                    batch = next(batches)
                    if isinstance(batch, LoadFailure):
                        raise ValueError(batch.message)
                    self.losses = self.train_step(batch, self.stage, stage_iteration)
                    self.iteration += 1
                    self.stage_ended = stage_iteration + 1 == self.stage.iterations
                    for hook in self.hooks:
                        hook.after_step()
            finally:
                for hook in self.hooks:
                    hook.after_train()
        except BaseException:
            if created is not None and self.checkpoints_written == 0 and self.context.is_main:
                created()  # a start that failed leaves nothing behind
            raise
        if complete:
            self.log(f"the run is complete ({self.iteration} iterations)")
        return self.validation.last

    def _prepare_run_dir(self):
        """Creates the run directory of a new run (config.yaml) or trims a resumed run's
        metrics.jsonl to its checkpoint. Returns an undo for a new run, else None."""
        if not self.context.is_main:
            return None
        if self._resume_content is not None:
            self._trim_metrics()
            for stale in (self.run_dir / "checkpoints").glob(".*.tmp"):  # a killed write's
                stale.unlink(missing_ok=True)
            return None
        existed = self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(self)

        def undo() -> None:
            if existed:
                for child in self.run_dir.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            else:
                shutil.rmtree(self.run_dir, ignore_errors=True)

        return undo

    def _trim_metrics(self) -> None:
        """Drops records a killed run logged after the checkpoint it resumes from, and notes
        which iterations the kept ones validated."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line, record in metrics_records(self.run_dir):  # less lines torn by the kill
            if record.get("iteration", 0) <= self.iteration:
                kept.append(line)
                if "validation" in record:
                    self.logged_validations.add(record["iteration"])
        write_text(path, "".join(f"{line}\n" for line in kept))

    def _loader(self) -> DataLoader:
        sampler = IterationSampler(
            len(self.train_set),
            self.config.batch_size,
            self.config.seed,
            start_iteration=self.iteration,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        workers = self.config.data.workers
        return DataLoader(
            reporting(self.train_set),
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            # Its own generator: creating the iterator draws a seed, and must not draw it from
            # the global RNG the run's dropout uses.
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    # -- helpers ------------------------------------------------------------------------------

    def append_metrics(self, record: dict[str, Any]) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def log(self, text: str) -> None:
        if self.context.is_main:
            tqdm.write(text)
