"""Inference: the Predictor (PyTorch or ONNX Runtime) and ONNX export.

The Predictor names are loaded on first use (PEP 562), so that importing a light module of this
package (``device_names``: the node's parameter check, run inside the launch process) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .predictor import Prediction, Predictor, PredictorConfig

__all__ = ["Prediction", "Predictor", "PredictorConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".predictor", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
