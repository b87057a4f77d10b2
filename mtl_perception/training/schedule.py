"""Polynomial learning-rate decay with cyclic restarts (paper section 4.2).

Within a stage, at iteration i (counted from the stage's start):

    lr(i) = lr_0 * (1 - (i mod R) / R) ** power

with R the restart period (10k iterations in the paper) and lr_0 the stage's initial rate.
The rate is a pure function of (stage, iteration), so resuming needs no scheduler state.
"""

from __future__ import annotations

# Paper section 4.2: "polynomial decay of the Learning rate with cyclic restarts for every 10K".
RESTART_PERIOD = 10_000
POLY_POWER = 0.9  # the usual poly exponent (DeepLab, AdapNet++); the paper gives none


def poly_restart_lr(
    base_lr: float, iteration: int, restart_period: int = RESTART_PERIOD, power: float = POLY_POWER
) -> float:
    """The learning rate at ``iteration`` (counted from the stage start) for ``base_lr``."""
    if restart_period <= 0:
        raise ValueError(f"restart_period must be positive, got {restart_period}")
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return base_lr * (1.0 - (iteration % restart_period) / restart_period) ** power
