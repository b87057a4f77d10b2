"""Small building blocks shared by the model's parts."""

from __future__ import annotations

from torch import nn

# Paper section 3.2: leaky ReLU in the detector; YOLOv2's slope.
LEAKY_SLOPE = 0.1


def scaled(channels: int, multiplier: float, divisor: int = 8) -> int:
    """Channel count ``channels * multiplier`` rounded to a multiple of ``divisor`` (>= divisor).

    Rounds to nearest, but never more than 10% below the target (as timm's make_divisible).
    """
    target = channels * multiplier
    value = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if value < 0.9 * target:
        value += divisor
    return value


def conv_bn_act(
    in_chs: int,
    out_chs: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    act: str = "relu",
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> activation ('relu', 'leaky' or 'none'); 'same' padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_chs),
    ]
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "leaky":
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    elif act != "none":
        raise ValueError(f"unknown activation {act!r}; expected 'relu', 'leaky' or 'none'")
    return nn.Sequential(*layers)
