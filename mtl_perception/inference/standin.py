"""BENCHMARKS ONLY: a zero-cost stand-in for the network, to measure the node's own ceiling.

``StandInNetwork`` returns outputs of :class:`~mtl_perception.model.network.MultiTaskNet`'s
shapes for any input without computing anything from the pixels: the same tensors every call
(made once per batch shape). Everything around the network (conversion, upload, BGR reordering,
resize, normalisation, mask argmax and up-sampling, post-processing, submit and collect,
publishing) runs for real, through the same :class:`Predictor` (so ``submit``, ``bgr`` and
``mask_resolution`` work as they do with the real network), so a node using it shows the
highest rate a GPU could ever reach through the node (benchmarks/pipeline_ceiling.py). Its
outputs mean nothing: the node selects it only with ``device: benchmark-standin`` (device step
on the CPU; ``benchmark-standin:cuda`` on the GPU), logs a warning at every configure, and its
diagnostics name the device and warn.

The outputs: segmentation logits whose argmax is a fixed pattern of vertical bands over every
non-void class (so colouring and overlays do their usual work), and ``STANDIN_BOXES`` confident
detections spread over the image (so post-processing and the detections message carry boxes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data.labels import default_class_map
from ..model.checkpoint import load_model
from ..model.config import ANCHORS_PER_BRANCH, OUTPUT_STRIDE, TRIDENT_DILATIONS, ModelConfig
from ..model.detector import BOX_PARAMS
from ..model.network import MultiTaskOutput, check_input_size
from .device_names import STANDIN_DEVICE
from .predictor import Predictor, PredictorConfig

STANDIN_BOXES = 6  # confident detections per image (different cells of the first branch)


class StandInNetwork(nn.Module):
    """(B, 3, H, W) images -> :class:`MultiTaskOutput` of the network's shapes, at no cost.

    Args:
        config: the model config the outputs follow (classes, input size).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._outputs: dict[tuple, MultiTaskOutput] = {}

    def forward(self, images: torch.Tensor) -> MultiTaskOutput:
        batch, _, height, width = images.shape
        key = (batch, height, width, images.device)
        if key not in self._outputs:
            check_input_size(height, width)
            self._outputs[key] = self._make(batch, height, width, images.device)
        return self._outputs[key]

    def _make(self, batch: int, height: int, width: int, device: torch.device) -> MultiTaskOutput:
        seg_classes, det_classes = self.config.num_seg_classes, self.config.num_det_classes
        band = torch.arange(width, device=device) * (seg_classes - 1) // width + 1  # 1..C-1
        logits = torch.zeros(batch, seg_classes, height, width, device=device)
        logits.scatter_(1, band.view(1, 1, 1, width).expand(batch, 1, height, width), 4.0)
        cells_h, cells_w = height // OUTPUT_STRIDE, width // OUTPUT_STRIDE
        objectness = BOX_PARAMS  # then the class logits
        shape = (batch, ANCHORS_PER_BRANCH, BOX_PARAMS + 1 + det_classes, cells_h, cells_w)
        detections = []
        for branch in range(len(TRIDENT_DILATIONS)):
            maps = torch.full(shape, -12.0, device=device)  # objectness ~ 6e-6: no box
            maps[:, :, :BOX_PARAMS] = 0.0  # anchor-sized boxes centred on their cells
            if branch == 0:
                for index in range(STANDIN_BOXES):
                    row = (index * cells_h) // STANDIN_BOXES
                    column = (index * 5 * cells_w) // (2 * STANDIN_BOXES) % cells_w
                    maps[:, 0, objectness, row, column] = 8.0
                    maps[:, 0, objectness + 1 + index % det_classes, row, column] = 8.0
            detections.append(maps)
        return MultiTaskOutput(logits, None, None, tuple(detections))


STANDIN_WARNING = (
    f"device '{STANDIN_DEVICE}': THE NETWORK IS REPLACED BY A ZERO-COST STAND-IN FOR "
    "BENCHMARKS; its outputs are fixed patterns, not predictions. Never use it on a robot."
)


def standin_factory(checkpoint: str | Path = "") -> Callable[[PredictorConfig], Predictor]:
    """Builds Predictors around a :class:`StandInNetwork` (a factory for ``FallbackPredictor``).

    Args:
        checkpoint: a checkpoint whose model config (classes, names, input size) the outputs
            follow; empty: the paper's network with the packaged class map's names.
    """
    if checkpoint:
        _, content = load_model(checkpoint, "cpu")
        model_config = ModelConfig.from_dict(content["model_config"])
    else:
        class_map = default_class_map()
        model_config = ModelConfig(
            num_seg_classes=class_map.num_seg_classes,
            num_det_classes=class_map.num_det_classes,
            seg_class_names=class_map.seg_names,
            det_class_names=class_map.det_names,
        )
    network = StandInNetwork(model_config)
    return lambda config: Predictor(network, model_config, config)
