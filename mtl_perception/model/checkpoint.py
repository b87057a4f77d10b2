"""Checkpoints: written atomically, read with ``weights_only=True``, checked before use.

Written with the usual file permissions (0666 less the umask), so a node running as another
user can read them. Weights are checked against the network their config describes (names and
shapes) and for non-finite values, by everything that loads them: the node, the evaluators,
the exporter and ``--resume``.

A checkpoint is a dict of plain containers and tensors:

* ``format``: :data:`CHECKPOINT_FORMAT`;
* ``model_config``: :meth:`ModelConfig.to_dict` (classes, class names, anchors, input size ...);
* ``model``: the network's state dict;
* anything the trainer adds (optimizer, scheduler, stage, iteration, RNG states).
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from ..outputs import atomic_file
from .config import ModelConfig
from .file_kind import check_regular_file, file_kind
from .network import MultiTaskNet

CHECKPOINT_FORMAT = "mtl_perception/1"


class _WriteFailures:
    """A binary stream that remembers the ``OSError`` its ``write`` raised: ``torch.save``
    turns it into a ``RuntimeError`` ("enforce fail at inline_container.cc") that no longer
    says the disk was full."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str) -> Any:  # flush, fileno, ...: the stream's own
        return getattr(self._stream, name)


def save_checkpoint(path: str | Path, content: dict[str, Any]) -> None:
    """Writes ``content`` to ``path`` atomically: a temporary file in the same folder, fsync'd,
    then renamed over the target, so a reader (or a crash) never sees a partial file.

    Raises:
        OSError: the write failed (a full disk: "no space left on device writing PATH"); the
            temporary file is removed and an earlier ``path`` is untouched.
    """
    with atomic_file(path, "wb") as stream:
        recorded = _WriteFailures(stream)
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **content}, recorded)
        except RuntimeError:
            if recorded.error is None:
                raise
            raise recorded.error from None  # the disk's own error, told against path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a checkpoint without unpickling code.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, a symlink loop, not a regular file (a FIFO, a device), truncated,
            not a checkpoint, or not one of ours (names the file).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder, not a checkpoint file")
    check_regular_file(path, "checkpoint")  # a FIFO is never opened: it would block
    if not os.access(path, os.R_OK):
        raise ValueError(f"checkpoint {path} is not readable (permission denied)")
    kind = file_kind(path)
    if kind is not None:
        raise ValueError(f"{path} is not a checkpoint: it is {kind}")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: the error says it
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        why = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if "Weights only load failed" in why:
            why = (
                "it holds Python objects other than tensors and plain containers (a whole "
                "pickled model?), which loading would have to run as code"
            )
        raise ValueError(f"{path} is not a readable checkpoint: {why}") from error
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        # torch's words: one useful clause, then a paragraph of advice. A file cut to a few kB
        # fails a seek inside torch instead, as a bare "[Errno 22] Invalid argument".
        why = str(error).split(". ")[0] if isinstance(error, RuntimeError) else ""
        raise ValueError(
            f"{path} is not a readable checkpoint (truncated or not a torch file; "
            f"{path.stat().st_size} bytes)" + (f": {why}" if why else "")
        ) from error
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ValueError(
            f"{path} is not an mtl_perception checkpoint "
            f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    for key in ("model_config", "model"):
        if key not in content:
            raise ValueError(f"checkpoint {path} lacks '{key}'")
    return content


def load_model(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[MultiTaskNet, dict[str, Any]]:
    """Builds the network a checkpoint describes and loads its weights (eval mode).

    Returns:
        The model and the whole checkpoint dict.

    Raises:
        ValueError: the checkpoint's config is invalid or its weights do not fit the network it
            describes (lists the differing keys).
    """
    content = read_checkpoint(path)
    try:
        config = ModelConfig.from_dict(content["model_config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {path} has an invalid model config: {error}") from error
    model = MultiTaskNet(config)
    state = content["model"]
    check_weights(model.state_dict(), state, path)
    model.load_state_dict(state)
    return model.to(device).eval(), content


def check_weights(expected: Mapping[str, torch.Tensor], state: object, path: str | Path) -> None:
    """Refuses weights that do not fit a network (missing, unexpected or mis-shaped tensors,
    listed) or hold NaN or infinite values (naming the first such tensor).

    Args:
        expected: the network's own ``state_dict()``.
        state: the checkpoint's weights.
        path: the checkpoint, for the message.
    """
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"checkpoint {path}: 'model' is not a mapping of names to tensors")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shape mismatches {mismatched[:5]}" if mismatched else "",
            )
            if part
        )
        raise ValueError(
            f"checkpoint {path} does not fit the network its config describes: {details}"
        )
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"checkpoint {path} holds non-finite values (NaN or inf) in '{name}': "
                "a diverged or damaged training run"
            )
