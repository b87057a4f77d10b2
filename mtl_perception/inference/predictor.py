"""The one inference path: images of any size in, masks and boxes in original pixels out.

Used by the ROS node, the bag evaluator and the offline evaluator alike.

Per batch: upload the uint8 images, resize each to the network input on the device (bilinear,
like training's cv2.INTER_LINEAR), normalise, run the network (PyTorch, or ONNX Runtime), then
on the same device decode, threshold, per-class NMS (IoU 0.55) and top-k.

Masks: the argmax over the non-void classes at the network resolution, upsampled to the
original resolution by nearest neighbour (cheap, and what most real-time segmenters publish;
``mask_mode="logits"`` upsamples the logits bilinearly before the argmax instead, sharper on
boundaries, slower). Void cannot be predicted: the network is never trained on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..detection.postprocess import PostprocessConfig, postprocess
from ..model.checkpoint import load_model
from ..model.config import OUTPUT_STRIDE, ModelConfig
from ..model.network import MultiTaskNet, check_input_size, normalize_images

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class PredictorConfig:
    """Attributes:
    device: "cpu", "cuda" or "cuda:N".
    precision: "fp32", or "fp16" / "bf16" autocast (fp16 needs CUDA).
    channels_last: run the network in channels-last memory format.
    input_height, input_width: network input size, multiples of 16 (default: the model's).
    score_threshold, nms_iou, max_detections, pre_nms_top_k: post-processing.
    mask_mode: "nearest" (upsample the argmax) or "logits" (argmax of upsampled logits).
    backend: "torch" or "onnxruntime".
    """

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    input_height: int | None = None
    input_width: int | None = None
    score_threshold: float = 0.25
    nms_iou: float = 0.55
    max_detections: int = 100
    pre_nms_top_k: int = 1000
    mask_mode: str = "nearest"
    backend: str = "torch"


@dataclass
class Prediction:
    """Results for one image, in its original pixels.

    Attributes:
        mask: (H, W) uint8 segmentation class ids (never void).
        boxes: (N, 4) float32 xyxy pixels; scores: (N,) float32 in [0, 1]; classes: (N,) int64.
    """

    mask: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


class Predictor:
    """Runs the multi-task network on images of any size.

    Args:
        model: a :class:`MultiTaskNet` (ignored with the onnxruntime backend, may be None).
        model_config: the network's config (classes, anchors, input size).
        config: device, precision, post-processing options.
        onnx_path: the exported model, for ``backend="onnxruntime"``.
    """

    def __init__(
        self,
        model: MultiTaskNet | None,
        model_config: ModelConfig,
        config: PredictorConfig | None = None,
        onnx_path: str | Path | None = None,
    ) -> None:
        self.config = config = config or PredictorConfig()
        self.model_config = model_config
        if config.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {sorted(PRECISIONS)}, got {config.precision!r}"
            )
        if config.mask_mode not in ("nearest", "logits"):
            raise ValueError(f"mask_mode must be 'nearest' or 'logits', got {config.mask_mode!r}")
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} requested but CUDA is not available")
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        self.input_size = (
            config.input_height or model_config.input_height,
            config.input_width or model_config.input_width,
        )
        check_input_size(*self.input_size)
        self.anchors = torch.tensor(model_config.anchors, device=self.device)
        self.postprocess_config = PostprocessConfig(
            config.score_threshold, config.nms_iou, config.pre_nms_top_k, config.max_detections
        )
        self.model = None
        self.session = None
        if config.backend == "torch":
            if model is None:
                raise ValueError("the torch backend needs a model")
            self.model = model.to(self.device).eval()
            if config.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
        elif config.backend == "onnxruntime":
            if onnx_path is None:
                raise ValueError("the onnxruntime backend needs onnx_path")
            from .onnx_backend import OnnxSession

            self.session = OnnxSession(onnx_path, self.device)
        else:
            raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {config.backend!r}")

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: PredictorConfig | None = None) -> Predictor:
        config = config or PredictorConfig()
        model, content = load_model(path, "cpu")
        return cls(model, ModelConfig.from_dict(content["model_config"]), config)

    @classmethod
    def from_onnx(cls, path: str | Path, config: PredictorConfig | None = None) -> Predictor:
        """An onnxruntime predictor; the model config comes from the file's metadata."""
        import onnx

        metadata = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        if "mtl_perception.model_config" not in metadata:
            raise ValueError(
                f"{path} has no mtl_perception model config in its metadata; "
                "export it with mtl_perception.inference.export"
            )
        model_config = ModelConfig.from_dict(json.loads(metadata["mtl_perception.model_config"]))
        config = config or PredictorConfig()
        height, width = (
            int(metadata["mtl_perception.input_height"]),
            int(metadata["mtl_perception.input_width"]),
        )
        config = PredictorConfig(
            **{
                **config.__dict__,
                "backend": "onnxruntime",
                "input_height": height,
                "input_width": width,
            }
        )
        return cls(None, model_config, config, onnx_path=path)

    def _to_batch(
        self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Uploads, resizes and normalises: -> (B, 3, h, w) float and original (H, W) sizes."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"a tensor batch must be (B, 3, H, W), got {tuple(images.shape)}")
            batch = images.to(self.device, non_blocking=True)
            sizes = [tuple(batch.shape[-2:])] * batch.shape[0]
            resized = F.interpolate(
                batch.float(), size=self.input_size, mode="bilinear", align_corners=False
            )
            return normalize_images(resized), sizes
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        tensors, sizes = [], []
        for image in images:
            if (
                not isinstance(image, np.ndarray)
                or image.ndim != 3
                or image.shape[2] != 3
                or image.dtype != np.uint8
            ):
                shape = getattr(image, "shape", None)
                raise ValueError(
                    f"images must be HxWx3 uint8 RGB arrays, got {type(image).__name__} {shape}"
                )
            if image.shape[0] == 0 or image.shape[1] == 0:
                raise ValueError(f"empty image of shape {image.shape}")
            upload = torch.from_numpy(np.ascontiguousarray(image)).to(
                self.device, non_blocking=True
            )
            upload = upload.permute(2, 0, 1)[None].float()  # (1, 3, H, W)
            tensors.append(
                F.interpolate(upload, size=self.input_size, mode="bilinear", align_corners=False)
            )
            sizes.append(image.shape[:2])
        return normalize_images(torch.cat(tensors)), sizes

    def _autocast(self):
        dtype = PRECISIONS[self.config.precision]
        if dtype is None or self.session is not None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> list[Prediction]:
        """Runs on one HxWx3 uint8 RGB image, a list of them (any sizes), or a (B, 3, H, W) uint8
        tensor; returns one :class:`Prediction` per image.

        Raises:
            ValueError: an image of the wrong type or shape.
            FloatingPointError: the network's outputs are not finite (nothing is returned).
        """
        batch, sizes = self._to_batch(images)
        if self.session is not None:
            seg_logits, detections = self.session.run(batch)
        else:
            if self.config.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                outputs = self.model(batch)
            seg_logits, detections = outputs.seg_logits, outputs.detections
        finite = torch.stack([torch.isfinite(t).all() for t in (seg_logits, *detections)]).all()
        if not bool(finite):
            raise FloatingPointError("the network produced non-finite outputs (NaN or inf)")
        results = postprocess(detections, self.anchors, OUTPUT_STRIDE, self.postprocess_config)
        seg_logits = seg_logits.float()
        predictions = []
        in_h, in_w = self.input_size
        for index, (height, width) in enumerate(sizes):
            logits = seg_logits[index : index + 1, 1:]  # void is never predicted
            if self.config.mask_mode == "logits":
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
                mask = logits.argmax(dim=1) + 1
            else:
                mask = (logits.argmax(dim=1, keepdim=True) + 1).to(torch.uint8)
                mask = F.interpolate(mask, size=(height, width), mode="nearest-exact")[:, 0]
            found = results[index]
            scale = torch.tensor([width / in_w, height / in_h] * 2, device=found.boxes.device)
            limits = torch.tensor(
                [width, height] * 2, device=found.boxes.device, dtype=torch.float32
            )
            boxes = torch.minimum((found.boxes * scale).clamp(min=0), limits)
            predictions.append(
                Prediction(
                    mask=mask[0].to(torch.uint8).cpu().numpy(),
                    boxes=boxes.float().cpu().numpy(),
                    scores=found.scores.float().cpu().numpy(),
                    classes=found.classes.cpu().numpy(),
                )
            )
        return predictions
