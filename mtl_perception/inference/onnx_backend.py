"""Running an exported model with ONNX Runtime, returning tensors like the PyTorch network.

The file layout is the one :mod:`mtl_perception.inference.export` writes: one input
``images`` (B, 3, H, W) and the outputs :data:`OUTPUT_NAMES`, with the model config and the
input size in the metadata under :data:`METADATA_KEYS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model.file_kind import check_regular_file, describe_file

INPUT_NAME = "images"
OUTPUT_NAMES = ("seg_logits", "det_branch1", "det_branch2", "det_branch3")
CONFIG_KEY = "mtl_perception.model_config"
HEIGHT_KEY = "mtl_perception.input_height"
WIDTH_KEY = "mtl_perception.input_width"
METADATA_KEYS = (CONFIG_KEY, HEIGHT_KEY, WIDTH_KEY)
EXPORT_HINT = "export it with mtl-export"


def check_onnx_file(path: str | Path) -> Path:
    """Refuses a path that is not a regular file, or a file whose first bytes show another
    kind (a torch checkpoint, a YAML file, an empty file), naming it and what it is.

    Raises:
        FileNotFoundError: nothing there.
        ValueError: a folder, a symlink loop, a FIFO or device (never opened), or a file of a
            recognised other kind.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"ONNX model {path} is a folder, not a file")
    check_regular_file(path, "ONNX model")
    kind = describe_file(path)
    if kind is not None and not kind.startswith(("an ONNX model", "unrecognised binary")):
        raise ValueError(f"{path} is not an ONNX model: it is {kind}")
    return path


def check_signature(path: str | Path, inputs: list[tuple[str, list]], outputs: list[str]) -> None:
    """Refuses a graph whose inputs or outputs are not those of our export (names the file).

    Args:
        path: the model, for the message.
        inputs: (name, shape) of each graph input; a shape lists ints or dimension names.
        outputs: the graph's output names.
    """
    names = [name for name, _ in inputs]
    if names != [INPUT_NAME]:
        raise ValueError(
            f"ONNX model {path} takes inputs {names}, expected ['{INPUT_NAME}'] "
            f"(not an mtl_perception export; {EXPORT_HINT})"
        )
    shape = inputs[0][1]
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(
            f"ONNX model {path}: input '{INPUT_NAME}' has shape {shape}, expected (B, 3, H, W)"
        )
    if list(outputs) != list(OUTPUT_NAMES):
        raise ValueError(
            f"ONNX model {path} has outputs {list(outputs)}, expected {list(OUTPUT_NAMES)} "
            f"({EXPORT_HINT})"
        )


class OnnxSession:
    """An onnxruntime session over a file written by :mod:`mtl_perception.inference.export`.

    Uses the CUDA execution provider for a CUDA device when onnxruntime has it, else the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable ONNX model, or one with other inputs or outputs than our
            export's (names the file).
    """

    def __init__(self, path: str | Path, device: torch.device) -> None:
        import onnxruntime as ort

        path = check_onnx_file(path)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"{path} is not a loadable ONNX model: {error}") from error
        check_signature(
            path,
            [(i.name, list(i.shape)) for i in self.session.get_inputs()],
            [o.name for o in self.session.get_outputs()],
        )
        self.device = device
        self.input_name = INPUT_NAME

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, 3, H, W) normalised float -> seg logits and per-branch detection maps."""
        outputs = self.session.run(None, {self.input_name: images.float().cpu().numpy()})
        tensors = [torch.from_numpy(np.asarray(o)).to(self.device) for o in outputs]
        return tensors[0], tuple(tensors[1:])
