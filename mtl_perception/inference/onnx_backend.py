"""Running an exported model with ONNX Runtime, returning tensors like the PyTorch network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class OnnxSession:
    """An onnxruntime session over a file written by :mod:`mtl_perception.inference.export`.

    Uses the CUDA execution provider for a CUDA device when onnxruntime has it, else the CPU.
    """

    def __init__(self, path: str | Path, device: torch.device) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"{path} is not a loadable ONNX model: {error}") from error
        self.device = device
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, 3, H, W) normalised float -> seg logits and per-branch detection maps."""
        outputs = self.session.run(None, {self.input_name: images.float().cpu().numpy()})
        tensors = [torch.from_numpy(np.asarray(o)).to(self.device) for o in outputs]
        return tensors[0], tuple(tensors[1:])
