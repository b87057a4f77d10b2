"""The node's frame path as the imported ``mtl_perception`` has it, for benchmarks measuring it in
process with either version (this checkout's, or a ``--baseline``'s in a child process:
benchmarks/baseline.py): the node's Predictor defaults, and whether frames go in as bgr.

Before issue 23 the node converted a bgr8 frame to RGB on the CPU and ran fp32 eager; after it,
the Predictor takes the bgr8 pixels as they are (reordered on the device) and the node derives its
Predictor's config from its parameters' defaults on the device (``predictor_config``: fp32 eager
on the CPU, cuda_graph + fp16 + preallocate on CUDA).
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from mtl_perception.inference.predictor import Predictor, PredictorConfig


def node_config(device: str, precision: str = "node", **fields: object) -> PredictorConfig:
    """The PredictorConfig the node uses on ``device`` ('cpu', 'cuda') with its default
    parameters (``precision='node'``; the node's own mapping where this version has one, else
    fp32 eager), or with ``precision`` instead."""
    try:
        from mtl_perception.ros.node import predictor_config
        from mtl_perception.ros.parameters import NodeParameters
    except ImportError:  # a version before issue 23
        predictor_config = None
    if predictor_config is not None:
        values = {} if precision == "node" else {"precision": precision}
        config = predictor_config(NodeParameters(**values), device)
        return dataclasses.replace(config, **fields)
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
