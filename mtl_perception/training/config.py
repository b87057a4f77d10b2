"""Training configuration: plain dataclasses loaded from one YAML file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_loading import from_mapping, read_yaml
from ..losses import BOX_LOSSES
from ..model.config import ModelConfig
from ..model.network import DETECTOR_PARTS, SEGMENTATION_PARTS
from ..resources import resolve_config_path
from .schedule import POLY_POWER, RESTART_PERIOD

PRECISIONS = ("auto", "fp32", "fp16", "bf16")

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
        if self.iterations < 0:
            raise ValueError(f"stage {self.name}: iterations must be >= 0, got {self.iterations}")
        if self.lr <= 0:
            raise ValueError(f"stage {self.name}: lr must be > 0, got {self.lr}")
        for name in ("seg_weight", "det_weight"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"stage {self.name}: {name} must be >= 0, got {value}")
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

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be 0 < low <= high, got {list(self.scale_range)}")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {self.flip_probability}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        if self.total_iterations < 1:
            raise ValueError("stages: the schedule has no iterations")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must differ (they name checkpoints), got {names}")
        at_least = {
            "batch_size": 1,
            "checkpoint_every": 1,
            "log_every": 1,
            "restart_period": 1,
            "validate_every": 0,
            "overlays": 0,
            "seed": 0,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.val_images is not None and self.val_images < 1:
            raise ValueError(f"val_images must be >= 1 or null (all), got {self.val_images}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {list(BOX_LOSSES)}, got {self.box_loss!r}")
        if not all(0.0 <= beta < 1.0 for beta in self.adam_betas):
            raise ValueError(f"adam_betas must be in [0, 1), got {list(self.adam_betas)}")
        for name in ("adam_eps", "poly_power"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("focal_gamma", "box_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"focal_alpha must be in [0, 1], got {self.focal_alpha}")

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
        """Builds the config; a bad value is refused naming its field, type and value."""
        if isinstance(values, dict):
            missing = [key for key in ("model", "stages") if key not in values]
            if missing:
                raise ValueError(f"a training config needs {missing} sections")
        return from_mapping(cls, values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        path = resolve_config_path(path)
        try:
            return cls.from_dict(read_yaml(path, "training config"))
        except ValueError as error:
            message = str(error)
            if str(path) in message:
                raise
            raise ValueError(f"invalid training config {path}: {message}") from error
