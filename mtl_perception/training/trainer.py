"""The training loop of the paper's four-stage schedule (section 4.2).

The step itself is data -> loss -> backward -> step. Around it: the stage changes (freezing,
a fresh Adam per stage), the learning rate, logging (tqdm, TensorBoard, metrics.jsonl),
checkpoints (atomic, every N iterations and at each stage end) and validation (every N
iterations and at each stage end). A non-finite loss stops the run at once.

Run directory::

    RUN_DIR/config.yaml             the training config, as run
    RUN_DIR/checkpoints/last.pt     latest state (what --resume reads)
    RUN_DIR/checkpoints/stage{k}_{name}.pt, final.pt
    RUN_DIR/tensorboard/            losses, learning rate, mIoU, mAP, overlay images
    RUN_DIR/metrics.jsonl           one JSON line per log step and per validation
    RUN_DIR/overlays/iter_{i}/      validation overlay PNGs
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cv2
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.cityscapes import CityscapesDataset
from ..data.labels import ClassMap
from ..data.loader import Batch, collate
from ..data.transforms import TrainAugmentation
from ..evaluation.evaluate import EVAL_SCORE_THRESHOLD, evaluate
from ..inference.predictor import Predictor, PredictorConfig
from ..losses import LossConfig, MultiTaskLoss
from ..model.checkpoint import read_checkpoint, save_checkpoint
from ..model.config import OUTPUT_STRIDE, ModelConfig
from ..model.freezing import set_frozen, unfreeze_all
from ..model.network import MultiTaskNet, normalize_images
from ..model.pretrained import load_pretrained_encoder
from .config import StageConfig, TrainConfig
from .distributed import DistributedContext
from .sampler import IterationSampler
from .schedule import poly_restart_lr

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str | Path) -> Path:
    """A path from a config: absolute, relative to the working directory, or to the repo."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def stage_at(stages: tuple[StageConfig, ...], iteration: int) -> tuple[int, int]:
    """(stage index, iteration within the stage) of the global ``iteration`` (0-based)."""
    start = 0
    for index, stage in enumerate(stages):
        if iteration < start + stage.iterations:
            return index, iteration - start
        start += stage.iterations
    raise ValueError(f"iteration {iteration} is past the schedule's {start} iterations")


class Trainer:
    """Trains (or resumes) one run.

    Args:
        config: the training config.
        data_root: a Cityscapes-layout dataset.
        run_dir: where everything is written.
        context: the process group (single process by default).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        stop_after: stop (with a checkpoint) after this many iterations of this invocation.
        progress: show the tqdm bar.
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
    ) -> None:
        self.config = config
        self.data_root = Path(data_root)
        self.run_dir = Path(run_dir)
        self.context = context
        self.device = context.device
        self.stop_after = stop_after
        self.progress = progress and context.is_main
        self.class_map = ClassMap.from_yaml(resolve_path(config.data.classes))
        self.model_config = self._model_config_with_names(config.model)
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
        torch.manual_seed(config.seed)
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
        self.iteration = 0
        self.stage_index: int | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.network: torch.nn.Module = self.model
        self._resume_state: dict[str, Any] | None = None
        if resume:
            self._load_last()
        elif config.pretrained:
            report = load_pretrained_encoder(self.model.encoder, resolve_path(config.pretrained))
            self._log_text(report.summary())

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
        path = self.run_dir / "checkpoints" / "last.pt"
        content = read_checkpoint(path)
        saved = content["model_config"]
        ours = self.model_config.to_dict()
        differing = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
        if differing:
            raise ValueError(
                f"checkpoint {path} was written for a different model config "
                f"(differs in {differing}); it cannot resume this run"
            )
        self.model.load_state_dict(content["model"])
        self.iteration = int(content["iteration"])
        self._resume_state = content

    def _enter_stage(self, index: int) -> None:
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
        state = self._resume_state
        if state is not None and state.get("stage") == index and "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            rng = state.get("rng", {})
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
        self._resume_state = None
        self.stage_index = index

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

    # -- hooks ------------------------------------------------------------------------------

    def checkpoint(self, names: list[str]) -> None:
        if not self.context.is_main:
            return
        content = {
            "model_config": self.model_config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "scheduler": {
                "type": "poly_restart",
                "restart_period": self.config.restart_period,
                "power": self.config.poly_power,
            },
            "stage": self.stage_index,
            "iteration": self.iteration,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "train_config": self.config.to_dict(),
            "data_root": str(self.data_root),
        }
        for name in names:
            save_checkpoint(self.run_dir / "checkpoints" / name, content)

    def validate(self, writer) -> dict[str, Any] | None:
        """mIoU and mAP on the val split (main process); overlays to disk and TensorBoard."""
        if self.context.is_main:
            overlay_dir = self.run_dir / "overlays" / f"iter_{self.iteration:07d}"
            predictor = Predictor(
                self.model,
                self.model_config,
                PredictorConfig(device=str(self.device), score_threshold=EVAL_SCORE_THRESHOLD),
            )
            metrics = evaluate(
                predictor,
                self.val_set,
                overlay_dir=overlay_dir,
                save_overlays=self.config.overlays,
                max_images=self.config.val_images,
                progress=False,
            )
            self.model.train()
            if writer is not None:
                for key in ("miou", "map"):
                    if metrics[key] is not None:
                        writer.add_scalar(f"val/{key}", metrics[key], self.iteration)
                for path in sorted(overlay_dir.glob("*.png")):
                    picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
                    writer.add_image(f"val/{path.stem}", picture, self.iteration, dataformats="HWC")
            self._append_metrics(
                {"iteration": self.iteration, "stage": self._stage_name(), "validation": metrics}
            )
        else:
            metrics = None
        self.context.barrier()
        return metrics

    def _stage_name(self) -> str:
        return self.config.stages[self.stage_index].name if self.stage_index is not None else ""

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with (self.run_dir / "metrics.jsonl").open("a") as stream:
            stream.write(json.dumps(record) + "\n")

    def _log_text(self, text: str) -> None:
        if self.context.is_main:
            tqdm.write(text)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any] | None:
        """Trains to the end of the schedule (or ``stop_after``); returns the last validation."""
        config = self.config
        total = config.total_iterations
        writer = None
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_file = self.run_dir / "config.yaml"
            if not config_file.exists():
                config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        sampler = IterationSampler(
            len(self.train_set),
            config.batch_size,
            config.seed,
            start_iteration=self.iteration,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=config.data.workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=config.data.workers > 0,
        )
        batches = iter(loader)
        bar = tqdm(
            total=total,
            initial=self.iteration,
            disable=not self.progress,
            unit="it",
            dynamic_ncols=True,
        )
        last_validation = None
        started_at, start_iteration = time.monotonic(), self.iteration
        try:
            while self.iteration < total:
                index, stage_iteration = stage_at(config.stages, self.iteration)
                stage = config.stages[index]
                if index != self.stage_index:
                    self._enter_stage(index)
                    self._log_text(
                        f"stage {index + 1}/{len(config.stages)} '{stage.name}': "
                        f"{stage.iterations} iterations, lr {stage.lr:g}, "
                        f"W_seg {stage.seg_weight:g}, "
                        f"W_det {stage.det_weight:g}, frozen {list(stage.frozen) or 'nothing'}"
                    )
                losses = self.train_step(next(batches), stage, stage_iteration)
                self.iteration += 1
                bar.update(1)
                stage_end = stage_iteration + 1 == stage.iterations
                if self.iteration % config.log_every == 0 or stage_end:
                    values = {k: float(v.detach()) for k, v in losses.items()}
                    bar.set_description(f"{index + 1}:{stage.name}")
                    bar.set_postfix(
                        {k.removeprefix("loss_"): f"{v:.3g}" for k, v in values.items()},
                        refresh=False,
                    )
                    if writer is not None:
                        for key, value in values.items():
                            writer.add_scalar(f"train/{key}", value, self.iteration)
                        elapsed = time.monotonic() - started_at
                        writer.add_scalar(
                            "train/iterations_per_second",
                            (self.iteration - start_iteration) / max(elapsed, 1e-9),
                            self.iteration,
                        )
                        self._append_metrics(
                            {"iteration": self.iteration, "stage": stage.name, **values}
                        )
                names = []
                if self.iteration % config.checkpoint_every == 0:
                    names.append("last.pt")
                if stage_end:
                    names += ["last.pt", f"stage{index + 1}_{stage.name}.pt"]
                stopping = (
                    self.stop_after is not None
                    and self.iteration - start_iteration >= self.stop_after
                )
                if stopping:
                    names.append("last.pt")
                if self.iteration == total:
                    names.append("final.pt")
                if names:
                    self.checkpoint(sorted(set(names)))
                if (
                    config.validate_every and self.iteration % config.validate_every == 0
                ) or stage_end:
                    last_validation = self.validate(writer)
                    if last_validation is not None:
                        self._log_text(
                            f"iteration {self.iteration}: mIoU {_pct(last_validation['miou'])}, "
                            f"mAP@0.5 {_pct(last_validation['map'])}"
                        )
                if stopping:
                    self._log_text(
                        f"stopped after {self.stop_after} iterations at {self.iteration}"
                    )
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return last_validation


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"
