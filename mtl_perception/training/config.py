"""Training configuration: plain dataclasses loaded from one YAML file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..losses import BOX_LOSSES
from ..model.config import ModelConfig
from ..model.network import DETECTOR_PARTS, SEGMENTATION_PARTS
from .schedule import POLY_POWER, RESTART_PERIOD

PARTS = (*SEGMENTATION_PARTS, *DETECTOR_PARTS)


@dataclass(frozen=True)
class StageConfig:
    """One stage of the schedule (paper section 4.2).

    Attributes:
        name: a label for logs and checkpoint names.
        iterations: optimizer steps in this stage.
        lr: initial learning rate (decayed polynomially, restarted every ``restart_period``).
        seg_weight, det_weight: W_seg and W_det of equation 2.
        frozen: parts kept fixed, BN statistics included (encoder, easpp, decoder, detector).
    """

    name: str
    iterations: int
    lr: float
    seg_weight: float
    det_weight: float
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "frozen", tuple(self.frozen))
        unknown = sorted(set(self.frozen) - set(PARTS))
        if unknown:
            raise ValueError(
                f"stage {self.name}: unknown frozen parts {unknown}; parts: {list(PARTS)}"
            )
        if self.iterations < 0 or self.lr <= 0:
            raise ValueError(f"stage {self.name}: iterations must be >= 0 and lr > 0")
        if set(self.frozen) == set(PARTS):
            raise ValueError(f"stage {self.name} freezes the whole network")


@dataclass(frozen=True)
class DataConfig:
    classes: str = "config/classes_cityscapes.yaml"
    train_split: str = "train"
    val_split: str = "val"
    scale_range: tuple[float, float] = (1.0, 1.5)
    flip_probability: float = 0.5
    workers: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data path.

    Input size comes from ``model.input_height`` / ``model.input_width``.
    """

    model: ModelConfig
    stages: tuple[StageConfig, ...]
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 8  # per process
    adam_betas: tuple[float, float] = (0.9, 0.999)  # paper section 4.2
    adam_eps: float = 1e-10  # paper section 4.2
    restart_period: int = RESTART_PERIOD
    poly_power: float = POLY_POWER
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weight: float = 1.0
    box_loss: str = "mse"  # mse (YOLOv2 offsets and log sizes) or giou (1 - GIoU of decoded boxes)
    checkpoint_every: int = 2000
    validate_every: int = 10000
    val_images: int | None = None
    overlays: int = 4
    log_every: int = 20
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32, fp16, bf16
    channels_last: bool | None = None  # None: on for CUDA
    pretrained: str | None = None

    @property
    def total_iterations(self) -> int:
        return sum(stage.iterations for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            return value

        result = plain(self)
        result["model"] = self.model.to_dict()
        return result

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        if "model" not in values or "stages" not in values:
            raise ValueError("a training config needs 'model' and 'stages' sections")
        model = values.pop("model")
        values["model"] = model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)
        values["stages"] = tuple(
            s if isinstance(s, StageConfig) else StageConfig(**s) for s in values["stages"]
        )
        data = values.get("data", {})
        values["data"] = data if isinstance(data, DataConfig) else DataConfig(**data)
        for key in ("adam_betas",):
            if key in values:
                values[key] = tuple(values[key])
        config = cls(**values)
        if config.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(
                f"precision must be auto, fp32, fp16 or bf16, got {config.precision!r}"
            )
        if config.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {config.box_loss!r}")
        if config.batch_size < 1 or not config.stages:
            raise ValueError("batch_size must be >= 1 and at least one stage given")
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            return cls.from_dict(yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError, TypeError, ValueError) as error:
            raise ValueError(f"invalid training config {path}: {error}") from error
