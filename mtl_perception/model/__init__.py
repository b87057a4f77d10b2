"""The multi-task network of the paper (AdapNet++ segmentation + Trident YOLO detection)."""

from .config import ModelConfig
from .freezing import freeze_detector, freeze_segmentation, set_frozen, unfreeze_all
from .network import (
    PIXEL_MEAN,
    PIXEL_STD,
    MultiTaskNet,
    MultiTaskOutput,
    check_input_size,
    normalize_images,
)

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "ModelConfig",
    "MultiTaskNet",
    "MultiTaskOutput",
    "check_input_size",
    "freeze_detector",
    "freeze_segmentation",
    "normalize_images",
    "set_frozen",
    "unfreeze_all",
]
