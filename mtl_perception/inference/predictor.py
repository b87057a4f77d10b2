"""The one inference path: images of any size in, masks and boxes in original pixels out.

Used by the ROS node, the bag evaluator and the offline evaluator alike.

Per batch: upload the uint8 images, resize each to the network input on the device (bilinear,
like training's cv2.INTER_LINEAR), normalise, run the network (PyTorch, or ONNX Runtime), then
on the same device decode, threshold, per-class NMS (IoU 0.55) and top-k, and upsample the mask.
Only the input upload and the final outputs cross between host and device.

Masks: the argmax over the non-void classes at the network resolution, upsampled to the
original resolution by nearest neighbour (cheap, and what most real-time segmenters publish;
``mask_mode="logits"`` upsamples the logits bilinearly before the argmax instead, sharper on
boundaries, slower). Void cannot be predicted: the network is never trained on it.

Fast paths (:class:`PredictorConfig`, each checked against fp32 eager by test/test_fast_paths.py):
channels-last memory format; fp16/bf16 autocast; ``torch.compile`` (default, max-autotune,
reduce-overhead); an explicit CUDA graph of the whole device step for a fixed input size;
pre-allocated (pinned) input and output buffers; resizing on the host instead of the device;
the ONNX Runtime backend. On CUDA the post-processing runs with fixed shapes
(:func:`postprocess_fixed`), so a frame costs no host synchronisation before its outputs.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..detection.postprocess import (
    FIXED_NMS_ROUNDS,
    PostprocessConfig,
    postprocess,
    postprocess_fixed,
)
from ..model.checkpoint import load_model
from ..model.config import OUTPUT_STRIDE, ModelConfig
from ..model.network import MultiTaskNet, check_input_size, normalize_images

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")
RESIZE_PLACES = ("device", "host")


@dataclass(frozen=True)
class PredictorConfig:
    """Attributes:
    device: "cpu", "cuda" or "cuda:N".
    precision: "fp32", or "fp16" / "bf16" autocast (fp16 needs CUDA).
    channels_last: run the network in channels-last memory format.
    compile: torch.compile mode for the network: "none", "default", "max-autotune" or
        "reduce-overhead" (CUDA graphs through the compiler).
    cuda_graph: capture the whole device step (resize, network, post-processing, mask) in one
        CUDA graph per input shape and replay it (CUDA, torch backend, compile "none").
    preallocate: reuse input and output buffers (pinned host memory on CUDA) across frames.
    resize: "device" (upload the original image, resize there) or "host" (cv2 first).
    fixed_shapes: fixed-shape, sync-free post-processing; None: on for CUDA.
    input_height, input_width: network input size, multiples of 16 (default: the model's).
    score_threshold, nms_iou, max_detections, pre_nms_top_k: post-processing.
    mask_mode: "nearest" (upsample the argmax) or "logits" (argmax of upsampled logits).
    backend: "torch" or "onnxruntime".
    """

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "none"
    cuda_graph: bool = False
    preallocate: bool = False
    resize: str = "device"
    fixed_shapes: bool | None = None
    input_height: int | None = None
    input_width: int | None = None
    score_threshold: float = 0.25
    nms_iou: float = 0.55
    max_detections: int = 100
    pre_nms_top_k: int = 1000
    mask_mode: str = "nearest"
    backend: str = "torch"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises ValueError naming the first unusable option."""
        choices = {
            "precision": (self.precision, tuple(PRECISIONS)),
            "compile": (self.compile, COMPILE_MODES),
            "resize": (self.resize, RESIZE_PLACES),
            "mask_mode": (self.mask_mode, ("nearest", "logits")),
            "backend": (self.backend, ("torch", "onnxruntime")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        cuda = self.device.startswith("cuda")
        if self.precision == "fp16" and not cuda:
            raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
        if self.cuda_graph and not (cuda and self.backend == "torch" and self.compile == "none"):
            raise ValueError(
                "cuda_graph needs a CUDA device, the torch backend and compile 'none' "
                "(compile 'reduce-overhead' is the compiler's own CUDA-graph path)"
            )
        if self.backend == "onnxruntime" and (self.compile != "none" or self.channels_last):
            raise ValueError("compile and channels_last apply to the torch backend only")


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
        model: a :class:`MultiTaskNet` (ignored with the onnxruntime backend, may be None). Its
            parameters are never changed: where the config needs them in another memory format
            (``channels_last``) or on another device, the Predictor converts its own copy;
            otherwise it shares them and switches ``model`` to eval mode.
        model_config: the network's config (classes, anchors, input size).
        config: device, precision, fast paths, post-processing options.
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
        config.check()
        self.model_config = model_config
        try:
            self.device = torch.device(config.device)
        except RuntimeError as error:
            raise ValueError(
                f"device must be 'cpu', 'cuda' or 'cuda:N', got {config.device!r}"
            ) from error
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r} requested but CUDA is not available")
        if self.device.type == "cuda" and (self.device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {config.device!r} requested but there are only "
                f"{torch.cuda.device_count()} CUDA devices"
            )
        self.input_size = (
            config.input_height or model_config.input_height,
            config.input_width or model_config.input_width,
        )
        check_input_size(*self.input_size)
        self.fixed_shapes = (
            self.device.type == "cuda" if config.fixed_shapes is None else config.fixed_shapes
        )
        if config.cuda_graph and not self.fixed_shapes:
            raise ValueError("cuda_graph needs fixed_shapes (a graph cannot hold dynamic shapes)")
        self.anchors = torch.tensor(model_config.anchors, device=self.device)
        self.postprocess_config = PostprocessConfig(
            config.score_threshold, config.nms_iou, config.pre_nms_top_k, config.max_detections
        )
        self.model = None
        self.session = None
        self.network: Callable[[torch.Tensor], object] | None = None
        if config.backend == "torch":
            if model is None:
                raise ValueError("the torch backend needs a model")
            # Module.to converts parameters in place, it does not copy: a channels-last or
            # device-moving Predictor used to change the caller's model, so everything that
            # later ran that model (another Predictor, a reference) ran in another memory format,
            # another summation order, and its boxes moved by up to 4e-3 px.
            target = torch.empty(0, device=self.device).device  # "cuda" -> "cuda:N"
            tensors = [*model.parameters(), *model.buffers()]
            if config.channels_last or any(t.device != target for t in tensors):
                model = copy.deepcopy(model)
            self.model = model.to(self.device).eval()
            if config.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.network = self.model
            if config.compile != "none":
                mode = None if config.compile == "default" else config.compile
                self.network = torch.compile(self.model, mode=mode, dynamic=False)
        else:
            if onnx_path is None:
                raise ValueError("the onnxruntime backend needs onnx_path")
            from .onnx_backend import OnnxSession

            self.session = OnnxSession(onnx_path, self.device)
        self.nms_rounds = FIXED_NMS_ROUNDS  # fixed-shape NMS rounds before the host finishes
        self._buffers: dict[tuple, dict[str, torch.Tensor]] = {}
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, dict]] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: PredictorConfig | None = None) -> Predictor:
        config = config or PredictorConfig()
        model, content = load_model(path, "cpu")
        return cls(model, ModelConfig.from_dict(content["model_config"]), config)

    @classmethod
    def from_onnx(cls, path: str | Path, config: PredictorConfig | None = None) -> Predictor:
        """An onnxruntime predictor; the model config comes from the file's metadata.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an ONNX file, or not one written by mtl-export (no or corrupt
                metadata, other inputs or outputs); names the file and the metadata key.
        """
        import onnx

        from .onnx_backend import (
            CONFIG_KEY,
            EXPORT_HINT,
            HEIGHT_KEY,
            WIDTH_KEY,
            check_onnx_file,
            check_signature,
        )

        path = check_onnx_file(path)
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # protobuf's DecodeError and onnx's own types
            if isinstance(error, OSError):  # unreadable: reported as such
                raise
            raise ValueError(f"{path} is not an ONNX model ({type(error).__name__})") from error
        if not proto.ir_version or not proto.graph.node:  # e.g. empty or a text file
            raise ValueError(f"{path} is not an ONNX model (no graph)")
        metadata = {p.key: p.value for p in proto.metadata_props}
        if CONFIG_KEY not in metadata:
            raise ValueError(
                f"ONNX model {path} has no mtl_perception model config in its metadata "
                f"('{CONFIG_KEY}'); {EXPORT_HINT}"
            )
        try:
            model_config = ModelConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            raise ValueError(
                f"ONNX model {path}: metadata '{CONFIG_KEY}' is invalid: {error}"
            ) from error
        size = []
        for key in (HEIGHT_KEY, WIDTH_KEY):
            text = metadata.get(key)
            if text is None or not text.isdigit():
                raise ValueError(
                    f"ONNX model {path}: metadata '{key}' must be a positive integer, got {text!r}"
                )
            size.append(int(text))
        height, width = size
        try:
            check_input_size(height, width)
        except ValueError as error:
            raise ValueError(f"ONNX model {path}: metadata input size: {error}") from error
        weights = {t.name for t in proto.graph.initializer}
        inputs = [
            (i.name, [d.dim_value or d.dim_param or None for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input
            if i.name not in weights
        ]
        check_signature(path, inputs, [o.name for o in proto.graph.output])
        if inputs[0][1][2:] != [height, width]:
            raise ValueError(
                f"ONNX model {path}: its graph takes {inputs[0][1][2:]} images but metadata "
                f"says {height}x{width}"
            )
        config = config or PredictorConfig()
        config = PredictorConfig(
            **{
                **config.__dict__,
                "backend": "onnxruntime",
                "input_height": height,
                "input_width": width,
            }
        )
        return cls(None, model_config, config, onnx_path=path)

    # -- per frame ---------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> list[Prediction]:
        """Runs on one HxWx3 uint8 RGB image, a list of them (any sizes), or a (B, 3, H, W) uint8
        tensor; returns one :class:`Prediction` per image.

        Raises:
            ValueError: an image of the wrong type or shape.
            FloatingPointError: the network's outputs are not finite (nothing is returned).
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"a tensor batch must be (B, 3, H, W), got {tuple(images.shape)}")
            staged = images.to(self.device, non_blocking=True)
            return self._run(staged, tuple(images.shape[-2:]))
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        for image in images:
            _check_image(image)
        if len({image.shape for image in images}) > 1:
            return self._predict_mixed(images)
        size = images[0].shape[:2]
        if self.config.resize == "host":
            images = self._host_resize(images)
        return self._run(self._upload(images), size)

    def _predict_mixed(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Images of different sizes (cameras of different resolutions) in ONE forward pass:
        each image is brought to the network input exactly as a batch of one would be, the
        (B, 3, h, w) batch runs at the network resolution, then each mask is upsampled to its own
        image's size and each image's boxes are scaled to its own pixels.
        ``mask_mode="logits"`` upsamples logits before the argmax, which one tensor cannot hold
        for different sizes: one image at a time there."""
        if self.config.mask_mode == "logits":
            return [self.predict(image)[0] for image in images]
        sizes = [tuple(image.shape[:2]) for image in images]
        if self.config.resize == "host":  # all at the input size already: one upload
            batch = self._to_input_size(self._upload(self._host_resize(images)))
        else:  # one upload per size (a staging buffer holds one size), each resized on its own
            groups: dict[tuple, list[int]] = {}
            for index, image in enumerate(images):
                groups.setdefault(image.shape, []).append(index)
            resized: dict[int, torch.Tensor] = {}
            for indices in groups.values():
                staged = self._to_input_size(self._upload([images[i] for i in indices]))
                resized.update(zip(indices, staged, strict=True))
            batch = torch.stack([resized[i] for i in range(len(images))])
        if self.config.cuda_graph:
            result = self._replay(batch, self.input_size)
        else:
            result = self._device_step(batch, self.input_size)
        flat = [  # (h, w) network-resolution masks -> one flat tensor of every (H_i, W_i) mask
            _upsample_ids(mask[None, None], size).flatten()
            for mask, size in zip(result["mask"], sizes, strict=True)
        ]
        return self._finish({**result, "mask": torch.cat(flat)}, sizes)

    def _host_resize(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """HxWx3 uint8 -> hxwx3 float32 at the network input, on the host. In float: rounding
        the resized pixels to uint8 would move a network's outputs."""
        height, width = self.input_size
        return [
            cv2.resize(i.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            for i in images
        ]

    def _to_input_size(self, staged: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 (or float after a host resize) -> (B, 3, h, w) float at the network
        input size (bilinear, like training's cv2.INTER_LINEAR)."""
        batch = staged.float()
        if tuple(batch.shape[-2:]) != self.input_size:
            batch = F.interpolate(batch, size=self.input_size, mode="bilinear", align_corners=False)
        return batch

    def _upload(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-size HxWx3 uint8 (float32 after a host resize) images -> (B, 3, H, W) on the
        device (a channels-last view of one NHWC upload).

        One writable image on the CPU (or without ``preallocate``) is not copied on the host:
        the batch is a view of it (``np.stack`` of one image was a full copy per frame).
        """
        single = len(images) == 1 and images[0].flags.writeable
        if single and (self.device.type == "cpu" or not self.config.preallocate):
            batch = torch.from_numpy(images[0])[None].to(self.device, non_blocking=True)
            return batch.permute(0, 3, 1, 2)
        if not self.config.preallocate:
            batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
            return batch.permute(0, 3, 1, 2)
        buffers = self._buffers_for(("input", len(images), *images[0].shape), images[0].dtype)
        host, device = buffers["host"], buffers["device"]
        for index, image in enumerate(images):
            np.copyto(host[index].numpy(), image)
        if device is not host:
            device.copy_(host, non_blocking=True)
        return device.permute(0, 3, 1, 2)

    def _buffers_for(self, key: tuple, dtype: np.dtype) -> dict[str, torch.Tensor]:
        """Input staging buffers for ('input', B, H, W, 3): pinned host memory and its device
        twin (the same tensor on the CPU)."""
        key = (*key, str(dtype))
        if key not in self._buffers:
            shape = key[1:-1]
            dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
            cuda = self.device.type == "cuda"
            host = torch.empty(shape, dtype=dtype, pin_memory=cuda)
            device = torch.empty(shape, dtype=dtype, device=self.device) if cuda else host
            self._buffers[key] = {"host": host, "device": device}
        return self._buffers[key]

    def _run(self, staged: torch.Tensor, size: tuple[int, int]) -> list[Prediction]:
        if self.config.cuda_graph:
            result = self._replay(staged, size)
        else:
            result = self._device_step(staged, size)
        return self._finish(result, size)

    def _autocast(self):
        dtype = PRECISIONS[self.config.precision]
        if dtype is None or self.session is not None:
            return nullcontext()
        # Cached casts would live outside a captured CUDA graph's memory pool (PyTorch's advice).
        return torch.autocast(
            self.device.type, dtype=dtype, cache_enabled=not self.config.cuda_graph
        )

    def _device_step(self, staged: torch.Tensor, size: tuple[int, int]) -> dict[str, object]:
        """Everything between upload and download, on the device, without host syncs when
        ``fixed_shapes``: (B, 3, h, w) uint8 -> mask (B, H, W) uint8 at ``size``, detections and
        a finiteness flag."""
        batch = normalize_images(self._to_input_size(staged))
        if self.session is not None:
            seg_logits, detections = self.session.run(batch)
        else:
            memory_format = torch.channels_last if self.config.channels_last else None
            batch = batch.contiguous(memory_format=memory_format or torch.contiguous_format)
            with self._autocast():
                outputs = self.network(batch)
            seg_logits, detections = outputs.seg_logits, outputs.detections
        # min and max propagate NaN and hold any inf: two reductions instead of a boolean map
        # per element (isfinite(...).all() cost 14 ms per frame on a CPU at 768x384).
        finite = torch.isfinite(
            torch.stack([v.float() for t in (seg_logits, *detections) for v in torch.aminmax(t)])
        ).all()
        result: dict[str, object] = {
            "mask": self._mask(seg_logits, size),
            "finite": finite,
            "detections": detections,
        }
        if self.fixed_shapes:
            fixed = postprocess_fixed(
                detections, self.anchors, OUTPUT_STRIDE, self.postprocess_config, self.nms_rounds
            )
            result.update(table=fixed.table, counts=fixed.counts, settled=fixed.settled)
        return result

    def _mask(self, seg_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, C, h, w) logits -> (B, H, W) uint8 class ids at ``size``; void never predicted."""
        logits = seg_logits[:, 1:]
        if self.config.mask_mode == "logits":
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
            return _class_ids(logits)[:, 0]
        return _upsample_ids(_class_ids(logits), size)

    def _replay(self, staged: torch.Tensor, size: tuple[int, int]) -> dict[str, object]:
        """The device step as a CUDA graph, captured on first use of an input shape."""
        key = (tuple(staged.shape), tuple(staged.stride()), size)
        if key not in self._graphs:
            static_input = torch.empty_strided(
                staged.shape, staged.stride(), dtype=staged.dtype, device=self.device
            )
            static_input.copy_(staged)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN algorithm choice, allocator pools
                    self._device_step(static_input, size)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_output = self._device_step(static_input, size)
            self._graphs[key] = (graph, static_input, static_output)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(staged, non_blocking=True)
        graph.replay()
        return static_output

    def _download(self, result: dict[str, object]) -> dict[str, np.ndarray]:
        """The final outputs to the host: one copy each, one synchronisation."""
        names = ["finite", "mask"] + (["table", "counts", "settled"] if self.fixed_shapes else [])
        tensors = {name: result[name] for name in names}
        if self.device.type != "cuda":
            return {name: tensor.numpy() for name, tensor in tensors.items()}
        if not self.config.preallocate:
            return {name: tensor.cpu().numpy() for name, tensor in tensors.items()}
        key = ("output", *[(n, tuple(t.shape), t.dtype) for n, t in tensors.items()])
        if key not in self._buffers:
            self._buffers[key] = {
                n: torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for n, t in tensors.items()
            }
        host = self._buffers[key]
        for name, tensor in tensors.items():
            host[name].copy_(tensor, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return {name: tensor.numpy().copy() for name, tensor in host.items()}

    def _finish(
        self, result: dict[str, object], size: tuple[int, int] | list[tuple[int, int]]
    ) -> list[Prediction]:
        """Downloads, checks finiteness and builds one :class:`Prediction` per image. ``size``:
        the images' (H, W), or one per image (mixed sizes: ``result["mask"]`` is then every
        image's mask flattened into one tensor, in order)."""
        outputs = self._download(result)
        if not bool(outputs["finite"]):
            raise FloatingPointError("the network produced non-finite outputs (NaN or inf)")
        detections = result["detections"]
        unsettled = self.fixed_shapes and not outputs["settled"].all()
        if self.fixed_shapes and not unsettled:
            counts = outputs["counts"]
            rows = [table[:count] for table, count in zip(outputs["table"], counts, strict=True)]
        else:  # rare on CUDA: NMS needed more fixed rounds
            found = postprocess(detections, self.anchors, OUTPUT_STRIDE, self.postprocess_config)
            rows = [
                torch.cat([d.boxes, d.scores[:, None], d.classes[:, None].float()], dim=1)
                .cpu()
                .numpy()
                for d in found
            ]
        masks = outputs["mask"]
        if isinstance(size, list):
            sizes = size
            bounds = np.cumsum([h * w for h, w in sizes])[:-1]
            masks = [m.reshape(s) for m, s in zip(np.split(masks, bounds), sizes, strict=True)]
        else:
            sizes = [size] * len(rows)
        in_h, in_w = self.input_size
        predictions = []
        for mask, table, (height, width) in zip(masks, rows, sizes, strict=True):
            scale = np.array([width / in_w, height / in_h] * 2, np.float32)
            limits = np.array([width, height] * 2, np.float32)
            boxes = np.minimum(np.maximum(table[:, :4] * scale, 0), limits).astype(np.float32)
            predictions.append(
                Prediction(
                    mask=mask,
                    boxes=boxes,
                    scores=table[:, 4].astype(np.float32),
                    classes=table[:, 5].astype(np.int64),
                )
            )
        return predictions


def _upsample_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) uint8 class ids -> (B, H, W) at ``size`` (nearest-exact)."""
    if tuple(ids.shape[-2:]) == tuple(size):
        return ids[:, 0]
    if ids.device.type == "cpu":  # a gather of precomputed rows and columns: 3x faster
        rows = _nearest_exact_indices(ids.shape[-2], size[0])
        columns = _nearest_exact_indices(ids.shape[-1], size[1])
        return torch.from_numpy(ids[:, 0].numpy()[:, rows][:, :, columns])
    return F.interpolate(ids, size=size, mode="nearest-exact")[:, 0]


@lru_cache(maxsize=32)
def _nearest_exact_indices(source: int, target: int) -> np.ndarray:
    """(target,) int64 source index of each target pixel under ``nearest-exact`` up-sampling,
    taken from PyTorch itself (a float32 ramp, exact up to 2**24 pixels), so the gather equals
    ``F.interpolate(mode="nearest-exact")`` on uint8."""
    ramp = torch.arange(source, dtype=torch.float32).view(1, 1, source)
    return F.interpolate(ramp, size=target, mode="nearest-exact").view(target).long().numpy()


def _class_ids(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) logits of the non-void classes (C <= 254) -> (B, 1, h, w) uint8 class ids
    ``argmax + 1`` (ties: the first), the network's void (0) never chosen.

    On a CPU, ``argmax`` over the channel dimension runs one element at a time (78 ms at
    768x384 with 11 classes); the channel-wise maximum and, per class plane, one comparison
    with it give the same ids in a tenth of the time.
    """
    if logits.device.type != "cpu":
        return (logits.argmax(dim=1, keepdim=True) + 1).to(torch.uint8)
    classes = logits.shape[1]
    best = logits.amax(dim=1)  # (B, h, w)
    weight = torch.zeros(best.shape, dtype=torch.uint8)  # classes - c of the first maximum c
    for c in range(classes):
        torch.maximum(weight, logits[:, c].eq(best).to(torch.uint8).mul_(classes - c), out=weight)
    return weight.neg_().add_(classes + 1)[:, None]  # classes - (classes - c) + 1 = c + 1


def _check_image(image: object) -> None:
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
