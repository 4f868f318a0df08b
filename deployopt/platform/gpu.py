"""Is there a usable NVIDIA GPU here, and which one? Answered through PyTorch's CUDA runtime.

Every GPU path (TensorRT engines, the CUDA PyTorch runner, GPU benchmarks) asks :func:`require_cuda_gpu`
first, so a machine without a driver, without a GPU or with a CPU-only torch build gets one clear line
naming what is missing instead of a failure deep inside a library.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from deployopt.errors import BackendUnavailableError

NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str  # "9.0"
    memory_gib: float

    def to_json(self) -> dict:
        return asdict(self)


def _device_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here (one sentence), or None when a GPU is usable."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.version.cuda is None:
        return f"this PyTorch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch"
    if torch.cuda.is_available():
        return None
    if not NVIDIA_DRIVER_FILE.exists():
        return "no NVIDIA driver is loaded on this machine (no GPU, or the driver is not installed)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return f"the NVIDIA driver is loaded but CUDA sees no usable GPU{hint}"


def require_cuda_gpu(device: str = "cuda") -> GpuInfo:
    """The GPU behind ``device`` ("cuda" or "cuda:N"); raises :class:`BackendUnavailableError` naming the gap."""
    problem = cuda_problem()
    if problem:
        raise BackendUnavailableError(f"no usable CUDA GPU: {problem}")
    import torch

    index = _device_index(device)
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"GPU {device} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    props = torch.cuda.get_device_properties(index)
    return GpuInfo(index, props.name, f"{props.major}.{props.minor}", round(props.total_memory / 2**30, 1))


class CudaTimer:
    """Device time of the work enqueued on ``stream`` inside the ``with`` block, from a pair of CUDA events."""

    def __init__(self, stream) -> None:
        import torch

        self._stream = stream
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __enter__(self) -> CudaTimer:
        self._start.record(self._stream)
        return self

    def __exit__(self, *exc: object) -> None:
        self._end.record(self._stream)

    def elapsed_ms(self) -> float:
        """Waits for the end event, so call it after the results are needed anyway."""
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))
