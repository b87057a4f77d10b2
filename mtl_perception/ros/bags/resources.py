"""What the node's process uses while a bag is replayed: CPU, memory and, with CUDA, the GPU.

A background thread samples the process every ``interval_s`` (psutil): its CPU time as a
percentage of one core since the previous sample (as ``top`` shows it: 200 % is two cores busy)
and its resident memory (RSS, MiB). Where NVML (nvidia-ml-py) finds NVIDIA GPUs, each sample also
holds the GPU memory the process uses (the devices whose compute processes include its pid) and
those devices' utilisation (%, the whole device's, whatever else runs on it); without NVML or a
GPU the summary says so ("n/a: no NVIDIA GPU"). Samples carry the monotonic clock
(``time.monotonic_ns``), so a run keeps only those of its replay (:meth:`ResourceSampler.summary`).

Only a process the run started is sampled: a node it attaches to is not (its pid is not known).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

INTERVAL_S = 0.2
MIB = 2**20
NO_GPU = "n/a: no NVIDIA GPU"
ATTACHED = "not sampled (attached node)"


@dataclass(frozen=True)
class Sample:
    """One look at the process: monotonic time (ns), CPU (% of one core since the previous
    sample), RSS (MiB), its GPU memory (MiB, None when no GPU lists it) and the utilisation (%)
    of the GPUs it uses (None without them)."""

    time_ns: int
    cpu_percent: float
    rss_mib: float
    gpu_memory_mib: float | None = None
    gpu_utilization: float | None = None


class _Gpus:
    """NVML's view of the GPUs, or why there is none (:attr:`missing`)."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        self.names: list[str] = []
        self.missing: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
        except ImportError:
            self.missing = f"{NO_GPU} (nvidia-ml-py is not installed)"
            return
        except Exception:  # pynvml.NVMLError: no driver library, no device
            self.missing = NO_GPU
            return
        self.nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = [pynvml.nvmlDeviceGetName(h) for h in self.handles]  # str, bytes before 11.5
            self.names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except pynvml.NVMLError as error:
            self.missing = f"{NO_GPU} (NVML: {error})"
        if not self.handles and self.missing is None:
            self.missing = NO_GPU

    def usage(self, pid: int) -> tuple[float | None, float | None]:
        """(GPU memory of ``pid`` in MiB, utilisation % of the devices it is on), None where
        no device lists the process (or NVML cannot tell)."""
        if self.missing is not None:
            return None, None
        pynvml = self.nvml
        memory, utilization = None, []
        for handle in self.handles:
            try:
                processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except pynvml.NVMLError:
                continue
            mine = [p for p in processes if p.pid == pid]
            if not mine:
                continue
            used = [p.usedGpuMemory for p in mine if p.usedGpuMemory is not None]
            if used:
                memory = (memory or 0.0) + sum(used) / MIB
            with contextlib.suppress(pynvml.NVMLError):  # a device that cannot tell
                utilization.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        return memory, max(utilization) if utilization else None

    def close(self) -> None:
        if self.nvml is not None:
            with contextlib.suppress(self.nvml.NVMLError):  # already shut down
                self.nvml.nvmlShutdown()


class ResourceSampler:
    """Samples process ``pid`` every ``interval_s`` seconds in a background thread between
    :meth:`start` and :meth:`stop` (or as a context manager)."""

    def __init__(self, pid: int, interval_s: float = INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.gone: str | None = None  # why sampling ended early (the process exited)
        self._gpus: _Gpus | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._gpus = _Gpus()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._gpus is not None:
            self._gpus.close()

    def _run(self) -> None:
        try:
            process = psutil.Process(self.pid)
            process.cpu_percent(None)  # the first call only starts the CPU-time count
            stopping = False
            while not stopping:  # a last sample when stopped: the end is always covered
                stopping = self._stop.wait(self.interval_s)
                with process.oneshot():
                    cpu = process.cpu_percent(None)
                    rss = process.memory_info().rss / MIB
                memory, utilization = self._gpus.usage(self.pid) if self._gpus else (None, None)
                self.samples.append(Sample(time.monotonic_ns(), cpu, rss, memory, utilization))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as error:
            self.gone = f"sampling ended early: {type(error).__name__}"

    def summary(self, start_ns: int | None = None, end_ns: int | None = None) -> dict[str, Any]:
        """The samples taken between the monotonic times ``start_ns`` and ``end_ns`` (each
        sample covers the interval before it: the first one after ``end_ns`` is kept too)."""
        chosen = []
        for sample in self.samples:
            if start_ns is not None and sample.time_ns <= start_ns:
                continue
            chosen.append(sample)
            if end_ns is not None and sample.time_ns >= end_ns:
                break
        gpus = self._gpus
        return summarize(
            chosen,
            self.interval_s,
            gpu_missing=gpus.missing if gpus else NO_GPU,
            gpu_names=gpus.names if gpus else [],
            gone=self.gone,
        )


def _stats(values: list[float], final: bool = False) -> dict[str, float] | None:
    if not values:
        return None
    stats = {"mean": sum(values) / len(values), "max": max(values)}
    return stats | {"final": values[-1]} if final else stats


def summarize(
    samples: list[Sample],
    interval_s: float,
    *,
    gpu_missing: str | None,
    gpu_names: list[str],
    gone: str | None = None,
) -> dict[str, Any]:
    """The run settings' ``resources``: CPU % (mean, max), RSS MiB (mean, max, final), the
    GPU's (or why there is none), sample count and interval."""
    if gpu_missing is not None:
        gpu: dict[str, Any] = {"note": gpu_missing}
    else:
        memory = [s.gpu_memory_mib for s in samples if s.gpu_memory_mib is not None]
        utilization = [s.gpu_utilization for s in samples if s.gpu_utilization is not None]
        gpu = {
            "devices": gpu_names,
            "memory_mib": _stats(memory, final=True),
            "utilization_percent": _stats(utilization),
            "note": None
            if memory or utilization
            else "n/a: no GPU lists the node's process (it ran on the CPU, or a PID namespace "
            "hides it from NVML)",
        }
    return {
        "sampled": True,
        "interval_s": interval_s,
        "samples": len(samples),
        "cpu_percent": _stats([s.cpu_percent for s in samples]),
        "rss_mib": _stats([s.rss_mib for s in samples], final=True),
        "gpu": gpu,
        "note": gone,
    }


def not_sampled(reason: str = ATTACHED) -> dict[str, Any]:
    """The ``resources`` of a run whose node process is not ours."""
    return {"sampled": False, "note": reason}


def resources_line(resources: dict[str, Any] | None) -> str | None:
    """One line for report.md and the command line; None for a run recorded without it."""
    if resources is None:
        return None
    if not resources["sampled"]:
        return f"node process: {resources['note']}"
    cpu, rss = resources["cpu_percent"], resources["rss_mib"]
    if cpu is None or rss is None:
        return f"node process: no sample in {resources['interval_s']:g} s steps (run too short)"
    text = (
        f"node process: CPU mean {cpu['mean']:.0f} %, max {cpu['max']:.0f} % (of one core); "
        f"RSS mean {rss['mean']:.0f} MiB, max {rss['max']:.0f} MiB, final {rss['final']:.0f} MiB"
    )
    gpu = resources["gpu"]
    if gpu.get("memory_mib") or gpu.get("utilization_percent"):
        memory, utilization = gpu.get("memory_mib"), gpu.get("utilization_percent")
        if memory:
            text += f"; GPU memory mean {memory['mean']:.0f} MiB, max {memory['max']:.0f} MiB"
        if utilization:
            text += (
                f"; GPU utilisation mean {utilization['mean']:.0f} %, max "
                f"{utilization['max']:.0f} % (whole device)"
            )
    else:
        text += f"; GPU {gpu['note']}"
    return text + f" ({resources['samples']} samples every {resources['interval_s']:g} s)"
