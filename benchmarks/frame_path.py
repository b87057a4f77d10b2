"""The node's frame path as the imported ``mtl_perception`` has it, for benchmarks measuring it in
process with either version (this checkout's, or a ``--baseline``'s in a child process:
benchmarks/baseline.py): the node's Predictor defaults, and whether frames go in as bgr.

Before issue 23 the node converted a bgr8 frame to RGB on the CPU and ran fp32 eager; after it,
the Predictor takes the bgr8 pixels as they are (reordered on the device) and the node runs the
fastest measured path of its device (``default_fast_path``).
"""

from __future__ import annotations

import inspect

import numpy as np

from mtl_perception.inference import predictor as predictor_module
from mtl_perception.inference.predictor import Predictor, PredictorConfig


def node_config(device: str, precision: str = "node", **fields: object) -> PredictorConfig:
    """The PredictorConfig the node uses on ``device`` ('cpu', 'cuda'): its default fast path
    where this version has one (``precision='node'``), else fp32 eager or ``precision``."""
    fast = getattr(predictor_module, "default_fast_path", None)
    if precision == "node" and fast is not None:
        return PredictorConfig(device=device, **{**fast(device), **fields})
    return PredictorConfig(
        device=device, precision="fp32" if precision == "node" else precision, **fields
    )


def takes_bgr(predictor: Predictor) -> bool:
    """The Predictor reorders bgr8 pixels itself (``predict(images, bgr=True)``)."""
    return "bgr" in inspect.signature(predictor.predict).parameters


def device_input(predictor: Predictor, bgr: np.ndarray) -> tuple[np.ndarray, dict[str, bool]]:
    """What the node hands the Predictor for a bgr8 frame ((H, W, 3) uint8), as ``predict``'s
    image and keyword arguments: the pixels as they are where the Predictor takes bgr, else the
    RGB copy the node made first (its conversion step, not the device step)."""
    if takes_bgr(predictor):
        return bgr, {"bgr": True}
    return np.ascontiguousarray(bgr[..., ::-1]), {}
