"""Everything a run needs to continue exactly, saved and restored in ONE place.

A training run's future depends on: the weights (BN statistics included), the optimizer's
moments, the gradient scaler, every random number generator (torch CPU, each CUDA device,
NumPy's and Python's global ones), the position in the data stream, and the stage. The data
stream is a pure function of the iteration (:class:`~.sampler.IterationSampler`), so the
iteration is its position.

:func:`capture` takes all of it from a trainer; :func:`restore` puts all of it back. A
checkpoint written at a stage end holds the finished stage's optimizer: the next stage starts
a fresh Adam (as a run that never stopped does), but every RNG and the scaler are restored
whatever the stage.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .trainer import Trainer

STATE_VERSION = 2


def seed_everything(seed: int) -> None:
    """Seeds every global RNG (torch, CUDA, NumPy, Python) from the config's seed, so a run's
    random numbers are a function of its config alone."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_states() -> dict[str, Any]:
    """Every global RNG's state, in checkpoint-safe types (tensors, lists, ints, strings)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """The inverse of :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    saved = states.get("numpy")
    if saved:
        np.random.set_state(
            (
                saved["kind"],
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["gauss"],
            )
        )
    saved = states.get("python")
    if saved:
        random.setstate((saved["version"], tuple(saved["state"]), saved["gauss"]))


def capture(trainer: Trainer) -> dict[str, Any]:
    """The whole resume state of ``trainer`` (the checkpoint's content, less its format tag)."""
    config = trainer.config
    return {
        "state_version": STATE_VERSION,
        "model_config": trainer.model_config.to_dict(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict() if trainer.optimizer else {},
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else {},
        "scheduler": {
            "type": "poly_restart",
            "restart_period": config.restart_period,
            "power": config.poly_power,
        },
        "stage": trainer.stage_index,
        "iteration": trainer.iteration,
        "rng": rng_states(),
        "train_config": config.to_dict(),
        "data_root": str(trainer.data_root.resolve()),  # --resume may run from elsewhere
    }


def restore(trainer: Trainer, content: dict[str, Any]) -> None:
    """Puts ``content`` (from :func:`capture`) back into ``trainer``, whose weights are already
    loaded and whose current stage (:meth:`Trainer.enter_stage`) is the one of its iteration."""
    if content.get("stage") == trainer.stage_index and content.get("optimizer"):
        trainer.optimizer.load_state_dict(content["optimizer"])
    if content.get("scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(content["scaler"])
    set_rng_states(content["rng"])
