"""The schedule in time: which stage an iteration is in, and its learning rate (paper 4.2).

:func:`stage_at` maps a global iteration to (stage, iteration within the stage); stages with no
iterations are passed over.

Polynomial learning-rate decay with cyclic restarts:

Within a stage, at iteration i (counted from the stage's start):

    lr(i) = lr_0 * (1 - (i mod R) / R) ** power

with R the restart period (10k iterations in the paper) and lr_0 the stage's initial rate.
The rate is a pure function of (stage, iteration), so resuming needs no scheduler state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import StageConfig

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


def stage_at(stages: Sequence[StageConfig], iteration: int) -> tuple[int, int]:
    """(stage index, iteration within the stage) of the global ``iteration`` (0-based)."""
    start = 0
    for index, stage in enumerate(stages):
        if iteration < start + stage.iterations:
            return index, iteration - start
        start += stage.iterations
    raise ValueError(f"iteration {iteration} is past the schedule's {start} iterations")


def stage_ends_at(stages: Sequence[StageConfig], done: int) -> int | None:
    """The index of the stage whose last step is step ``done`` (1-based count of steps done),
    or None when ``done`` is inside a stage (or 0)."""
    if done < 1:
        return None
    index, local = stage_at(stages, done - 1)
    return index if local + 1 == stages[index].iterations else None
