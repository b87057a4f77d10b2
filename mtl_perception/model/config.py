"""Model configuration: one frozen dataclass, loadable from YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_loading import from_mapping, read_yaml
from ..resources import resolve_config_path

# Paper section 3.2: three Trident branches (dilations 1, 2, 3), three anchors each.
TRIDENT_DILATIONS = (1, 2, 3)
ANCHORS_PER_BRANCH = 3
# Paper section 3.2: the detection maps have the bottleneck's resolution, 1/16 of the input.
OUTPUT_STRIDE = 16

# Anchors (width, height) in input pixels at 768x384, sorted by area, smallest three for the
# dilation-1 branch. Replace them with `python -m mtl_perception.detection.anchors` on your data.
DEFAULT_ANCHORS = (
    ((8.0, 16.0), (16.0, 12.0), (12.0, 30.0)),
    ((28.0, 22.0), (22.0, 52.0), (48.0, 36.0)),
    ((44.0, 96.0), (96.0, 68.0), (180.0, 130.0)),
)


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`~mtl_perception.model.network.MultiTaskNet`.

    Attributes:
        num_seg_classes: segmentation classes including void (paper: 11 + void).
        num_det_classes: detection classes (paper: 3).
        anchors: per Trident branch, ``ANCHORS_PER_BRANCH`` (width, height) pairs in input
            pixels, branches ordered by dilation 1, 2, 3 (small to large objects).
        dropout: dropout probability in encoder block 4 and before the Trident block (paper 4.2).
        width_multiplier: scales every channel count; 1.0 is the paper's network, smaller
            values give the small variant used by CPU tests and the demo.
        trident_blocks: bottleneck residual blocks in each (weight-shared) Trident branch.
        block4_dilations: dilation rates of the two halves of block 4's multiscale units.
        input_height, input_width: the training resolution (pixels); any multiple of 16 runs.
        seg_class_names, det_class_names: names, index = class id (empty: unnamed).
    """

    num_seg_classes: int = 12
    num_det_classes: int = 3
    anchors: tuple[tuple[tuple[float, float], ...], ...] = DEFAULT_ANCHORS
    dropout: float = 0.5
    width_multiplier: float = 1.0
    trident_blocks: int = 3
    block4_dilations: tuple[int, int] = (2, 2)
    input_height: int = 384
    input_width: int = 768
    seg_class_names: tuple[str, ...] = field(default=())
    det_class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        anchors = tuple(
            tuple(tuple(float(v) for v in wh) for wh in branch) for branch in self.anchors
        )
        object.__setattr__(self, "anchors", anchors)
        object.__setattr__(self, "block4_dilations", tuple(self.block4_dilations))
        object.__setattr__(self, "seg_class_names", tuple(self.seg_class_names))
        object.__setattr__(self, "det_class_names", tuple(self.det_class_names))
        if self.num_seg_classes < 2 or self.num_det_classes < 1:
            raise ValueError(
                f"num_seg_classes must be >= 2 and num_det_classes >= 1, got "
                f"{self.num_seg_classes} and {self.num_det_classes}"
            )
        if len(anchors) != len(TRIDENT_DILATIONS) or any(
            len(branch) != ANCHORS_PER_BRANCH or any(len(wh) != 2 for wh in branch)
            for branch in anchors
        ):
            raise ValueError(
                f"anchors must be {len(TRIDENT_DILATIONS)} branches of {ANCHORS_PER_BRANCH} "
                f"(width, height) pairs, got {self.anchors!r}"
            )
        if any(v <= 0 for branch in anchors for wh in branch for v in wh):
            raise ValueError(f"anchor sizes must be positive pixels, got {self.anchors!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {self.width_multiplier}")
        if self.trident_blocks < 1:
            raise ValueError(f"trident_blocks must be >= 1, got {self.trident_blocks}")
        for side, value in (("input_height", self.input_height), ("input_width", self.input_width)):
            if value <= 0 or value % OUTPUT_STRIDE:
                raise ValueError(
                    f"{side} must be a positive multiple of {OUTPUT_STRIDE}, got {value}"
                )
        for names, count, what in (
            (self.seg_class_names, self.num_seg_classes, "seg_class_names"),
            (self.det_class_names, self.num_det_classes, "det_class_names"),
        ):
            if names and len(names) != count:
                raise ValueError(f"{what} has {len(names)} names for {count} classes")

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML- and checkpoint-safe dictionary (lists, numbers, strings)."""

        def plain(value: Any) -> Any:
            return [plain(v) for v in value] if isinstance(value, tuple | list) else value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "") -> ModelConfig:
        """Builds the config; a bad value is refused naming its field, type and value."""
        return from_mapping(cls, values, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelConfig:
        """Reads a YAML file whose top level (or ``model:`` section) holds the fields
        (``config/<name>``: the packaged file where no such file exists here)."""
        path = resolve_config_path(path)
        data = read_yaml(path, "model config")
        data = data.get("model", data)
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"invalid model config {path}: {error}") from error
