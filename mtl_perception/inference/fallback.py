"""Fast paths that fail fall back to simpler ones instead of stopping the node.

A fast path (CUDA graph capture, ``torch.compile``, preallocated buffers, fp16/bf16 autocast,
channels-last) can fail on a machine it was never tried on: when it is set up, or on the first
frame, where graphs are captured and compiled code is built. :class:`FallbackPredictor` then
drops one feature after another, in that order, down to fp32 eager, and keeps the first path that
works; :attr:`FallbackPredictor.active_path` names it and :attr:`FallbackPredictor.fallbacks`
says why each faster one was given up.

A failure that the simplest path shares (no CUDA device, a frame the network cannot take,
non-finite outputs of fp32 eager) is not a fast path's: it is raised as it is, and the path
asked for stays active.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import load_model
from ..model.config import ModelConfig
from .predictor import (  # default_fast_path: the node's defaults, whose chain is simpler_paths
    PendingPrediction,
    Prediction,
    Predictor,
    PredictorConfig,
    default_fast_path,
)

__all__ = ["FallbackPredictor", "default_fast_path", "describe", "simpler_paths"]

Factory = Callable[[PredictorConfig], Predictor]


def describe(config: PredictorConfig) -> str:
    """A path's name, e.g. "cuda_graph+fp16+preallocate" or "fp32 eager"."""
    parts = []
    if config.backend != "torch":
        parts.append(config.backend)
    if config.cuda_graph:
        parts.append("cuda_graph")
    if config.compile != "none":
        parts.append(f"compile:{config.compile}")
    if config.precision != "fp32":
        parts.append(config.precision)
    if config.channels_last:
        parts.append("channels_last")
    if config.preallocate:
        parts.append("preallocate")
    return "+".join(parts) if parts else "fp32 eager"


def simpler_paths(config: PredictorConfig) -> list[PredictorConfig]:
    """``config`` then ever simpler ones, each without one more fast feature: CUDA graph, then
    compile, then preallocated buffers, then reduced precision and channels-last (fp32 eager).
    Post-processing options, input size, device and backend are kept."""
    steps = (
        {"cuda_graph": False},
        {"compile": "none"},
        {"preallocate": False},
        {"precision": "fp32", "channels_last": False},
    )
    chain = [config]
    for change in steps:
        simpler = dataclasses.replace(chain[-1], **change)
        if simpler != chain[-1]:
            chain.append(simpler)
    return chain


class FallbackPredictor:
    """A :class:`Predictor` whose fast path falls back to simpler ones when it fails to set up
    or on its first frame. ``predict``, ``submit`` and the attributes the node reads
    (``config``, ``model_config``, ``input_size``, ``device``) are the active predictor's.

    Args:
        config: the path asked for.
        factory: builds a Predictor for a config (e.g. ``lambda c: Predictor(model, mc, c)``).
        log: called with one line per fallback (why, and the path taken instead).
    """

    def __init__(
        self,
        config: PredictorConfig,
        factory: Factory,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self._factory = factory
        self._log = log
        self._chain = simpler_paths(config)
        self.fallbacks: list[str] = []
        self._proven = False
        failures: list[tuple[int, str, BaseException]] = []
        self.predictor, self._level = self._first_set_up(0, failures)
        self._report(failures)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: PredictorConfig, log: Callable[[str], None] = print
    ) -> FallbackPredictor:
        """Loads the checkpoint once (its errors are raised as they are); each path shares it."""
        model, content = load_model(path, "cpu")
        model_config = ModelConfig.from_dict(content["model_config"])
        return cls(config, lambda c: Predictor(model, model_config, c), log)

    @classmethod
    def from_onnx(
        cls, path: str | Path, config: PredictorConfig, log: Callable[[str], None] = print
    ) -> FallbackPredictor:
        """Only precision and preallocation can fall back on this backend; its file errors are
        raised as they are (the first set-up reads and checks the file)."""
        return cls(config, lambda c: Predictor.from_onnx(path, c), log)

    @property
    def active_path(self) -> str:
        return describe(self.predictor.config)

    @property
    def requested_path(self) -> str:
        return describe(self._chain[0])

    def __getattr__(self, name: str) -> object:  # config, model_config, input_size, device...
        if name == "predictor":  # not set yet: __init__ failed part-way
            raise AttributeError(name)
        return getattr(self.predictor, name)

    def predict(
        self,
        images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
        bgr: bool | Sequence[bool] = False,
    ) -> list[Prediction]:
        """As :meth:`Predictor.predict`. Until a frame has gone through, a failure makes the
        next simpler path try the same frame; a frame that fails on fp32 eager too raises that
        error and leaves the path asked for active."""
        if self._proven:
            return self.predictor.predict(images, bgr)
        try:
            result = self.predictor.predict(images, bgr)
        except Exception as error:
            result = self._fall_back(images, bgr, error)
        self._proven = True
        return result

    def submit(
        self,
        images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
        bgr: bool | Sequence[bool] = False,
    ) -> PendingPrediction:
        """As :meth:`Predictor.submit`. Until a frame has gone through, it runs synchronously
        through :meth:`predict` (a fast path's failure shows on the first frame: graph capture,
        compiled code, fp16 overflow), so it still falls back; then submits go straight to the
        active path. Non-finite outputs that fp32 eager shares are raised by ``result`` then
        too."""
        if self._proven:
            return self.predictor.submit(images, bgr)
        try:
            predictions = self.predict(images, bgr)
        except FloatingPointError as error:
            return PendingPrediction.failed(error)
        return PendingPrediction.completed(predictions)

    def _fall_back(self, images: object, bgr: object, error: Exception) -> list[Prediction]:
        failures: list[tuple[int, str, BaseException]] = [(self._level, "the first frame", error)]
        level = self._level
        while level < len(self._chain) - 1:
            try:
                predictor, level = self._first_set_up(level + 1, failures)
            except Exception:  # even fp32 eager cannot be set up: not a fast path's fault
                raise error from None
            try:
                result = predictor.predict(images, bgr)
            except Exception as next_error:
                failures.append((level, "the first frame", next_error))
                continue
            self._report(failures)
            self.predictor, self._level = predictor, level
            return result
        raise failures[-1][2]  # fp32 eager fails on this frame too: the frame's own fault

    def _first_set_up(
        self, level: int, failures: list[tuple[int, str, BaseException]]
    ) -> tuple[Predictor, int]:
        """The first predictor from ``level`` on whose set-up works, and its level; raises the
        simplest path's error when none does (not a fast path's failure then)."""
        for index in range(level, len(self._chain)):
            try:
                return self._factory(self._chain[index]), index
            except Exception as error:
                if index == len(self._chain) - 1:
                    raise
                failures.append((index, "set-up", error))
        raise AssertionError("unreachable: the simplest path's failure is raised")

    def _report(self, failures: list[tuple[int, str, BaseException]]) -> None:
        for index, stage, error in failures:
            message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            line = (
                f"fast path {describe(self._chain[index])} failed at {stage} "
                f"({type(error).__name__}{': ' + message if message else ''}); "
                f"falling back to {describe(self._chain[index + 1])}"
            )
            self.fallbacks.append(line)
            self._log(line)
