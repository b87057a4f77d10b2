"""He (Kaiming) initialisation for everything not loaded from a pretrained file (paper 4.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .layers import LEAKY_SLOPE

if TYPE_CHECKING:
    from .network import MultiTaskNet


def _he_init(module: nn.Module, nonlinearity: str, slope: float = 0.0) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(
                layer.weight, a=slope, mode="fan_out", nonlinearity=nonlinearity
            )
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
            layer.reset_running_stats()


def init_weights(model: MultiTaskNet) -> None:
    """He-normal convs (ReLU gain; leaky-ReLU gain in the detector), unit BN, prior head biases."""
    for name in ("encoder", "easpp", "decoder"):
        _he_init(getattr(model, name), "relu")
    _he_init(model.detector, "leaky_relu", LEAKY_SLOPE)
    model.detector.reset_head_biases()
