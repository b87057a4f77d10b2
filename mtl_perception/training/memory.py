"""Does a training config fit in memory? An estimate made before the run starts.

An input size of 16384x32768 once started training and died with OpenCV out of memory; now a
config whose estimate exceeds the memory available is refused first, with both figures.

The estimate, in bytes, for ``batch_size`` B of H x W inputs, a network of P parameters, the
largest augmentation scale s (``data.scale_range[1]``) and ``data.workers`` w:

    model = 16 P                     fp32 weights, gradients and Adam's two moments
    step  = 1.5 a B H W              a: the bytes autograd keeps for backward per input pixel,
                                     measured by one forward pass of a 64x128 image (distinct
                                     tensors, parameters left out); backward's gradients add
                                     about half again (1.3x to 1.7x measured on CPU, widths
                                     0.125 to 1)
    data  = n B H W (8 s^2 + 19)     the augmented samples (image, labels and instances at scale
                                     s, 8 bytes a pixel, then cropped) and the collated batch
                                     (uint8 image, int64 labels: 11 bytes a pixel), for n = 1 + 2w
                                     batches in flight (two prefetched per loader worker)

It is an order of magnitude, not a promise: fp32 throughout (bf16 autocast needs less), one
forward's activations (a stage that skips a head needs less), the source images' decoding left
out. On CPU ``model + step + data`` is compared with the memory the kernel says is available
(``MemAvailable``); on CUDA ``model + step`` with the GPU's free memory and ``data`` with
``MemAvailable``. What is on the host counts once per training process on this machine
(torchrun's ``LOCAL_WORLD_SIZE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.config import ModelConfig
from ..model.network import MultiTaskNet

PROBE_HEIGHT, PROBE_WIDTH = 64, 128  # pixels; the probe forward's input size
BACKWARD_FACTOR = 1.5  # step memory / memory autograd keeps (see module docstring)
OPTIMIZER_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient, Adam's exp_avg and exp_avg_sq


@dataclass(frozen=True)
class MemoryEstimate:
    """A training step's memory, in bytes (see the module docstring for the formula)."""

    model: int
    step: int
    data: int

    @property
    def total(self) -> int:
        return self.model + self.step + self.data


def saved_bytes_per_pixel(network: MultiTaskNet) -> float:
    """Bytes autograd keeps for backward per input pixel (``a`` of the formula): one forward of
    a (1, 3, 64, 128) image in training mode, counting each distinct storage once and the
    parameters not at all. Give a throwaway network: the forward moves its BN statistics."""
    parameters = {p.untyped_storage().data_ptr() for p in network.parameters()}
    saved: dict[int, int] = {}  # storage address -> bytes

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        network(torch.zeros(1, 3, PROBE_HEIGHT, PROBE_WIDTH))
    return sum(saved.values()) / (PROBE_HEIGHT * PROBE_WIDTH)


def estimate_training_memory(
    model_config: ModelConfig, batch_size: int, largest_scale: float, workers: int
) -> MemoryEstimate:
    """The memory a training step at ``model_config``'s input size needs (module docstring).
    Builds a CPU copy of the network to measure; the global RNG is left as it was."""
    pixels = batch_size * model_config.input_height * model_config.input_width
    with torch.random.fork_rng(devices=[]):
        network = MultiTaskNet(model_config)
        parameters = sum(p.numel() for p in network.parameters())
        per_pixel = saved_bytes_per_pixel(network)
    in_flight = 1 + 2 * workers
    return MemoryEstimate(
        model=OPTIMIZER_BYTES_PER_PARAMETER * parameters,
        step=round(BACKWARD_FACTOR * per_pixel * pixels),
        data=round(in_flight * pixels * (8 * largest_scale**2 + 19)),
    )


def available_host_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_device_memory(device: torch.device) -> int | None:
    """Free memory of a CUDA ``device`` in bytes (None for other devices)."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)[0]


def human_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'`` (``B`` below 1 KiB, TiB the largest unit)."""
    if abs(count) < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if abs(count) < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} TiB"


def check_memory(
    estimate: MemoryEstimate,
    model_config: ModelConfig,
    batch_size: int,
    device: torch.device,
    processes: int = 1,
) -> None:
    """Raises ValueError when ``estimate`` (of one of ``processes`` training processes on this
    machine) exceeds the memory available, naming the config's input size and batch size, the
    estimate and what is available."""
    what = (
        f"model.input_height x model.input_width {model_config.input_height}x"
        f"{model_config.input_width} with batch_size {batch_size}"
        + (f" in each of {processes} processes" if processes > 1 else "")
    )
    host = available_host_memory()
    on_host = "of memory available on this machine (MemAvailable)"
    if device.type == "cuda":
        checks = [
            (estimate.model + estimate.step, available_device_memory(device), f"free on {device}"),
            (processes * estimate.data, host, on_host),
        ]
    else:
        checks = [(processes * estimate.total, host, on_host)]
    for needed, available, where in checks:
        if available is not None and needed > available:
            raise ValueError(
                f"training config: {what} needs about {human_bytes(needed)} (estimated), more "
                f"than the {human_bytes(available)} {where}; lower the input size or batch_size"
            )


def check_training_fits(
    model_config: ModelConfig,
    batch_size: int,
    largest_scale: float,
    workers: int,
    device: torch.device,
    processes: int = 1,
) -> MemoryEstimate:
    """Estimates a training step's memory and refuses (ValueError) what does not fit."""
    estimate = estimate_training_memory(model_config, batch_size, largest_scale, workers)
    check_memory(estimate, model_config, batch_size, device, processes)
    return estimate
