"""The memory a build's own batches may take, and the batch sizes that keep within it.

Calibration runs the graph with every intermediate tensor as an output (ONNX Runtime's calibrators), and
verification holds a batch of the runtime's activations: with long inputs (a 9 s waveform) a batch of 16 or 32
fills a 24 GB machine. The activations one sample makes are estimated from the graph (ONNX shape inference with
the inputs fixed to one real sample's shapes); calibration and verification then run in batches that fit the
budget — a fraction of the memory free when the build starts, unless ``--memory-budget-mb`` sets it — and the
report says when that changed a batch size. Timing is not resized: a benchmark's batch is what it measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the share of the free memory the build's batches may take: the runtimes' own arenas, the reference model, the
# parent process and the other candidates' processes need the rest
MEMORY_FRACTION = 0.1
MIB = 1 << 20
# an analysis that fetches every intermediate tensor holds each twice (the runtime's buffer and the array it
# returns); comparing two graphs' tensors holds four
ALL_TENSORS = 2
TWO_GRAPHS_ALL_TENSORS = 4


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class MemoryBudget:
    """The bytes a build's batches may take, and where the figure came from (for the report)."""

    bytes: int
    origin: str

    @classmethod
    def resolve(cls, megabytes: int | None) -> MemoryBudget | None:
        if megabytes is not None:
            return cls(megabytes * MIB, f"--memory-budget-mb {megabytes}")
        free = available_bytes()
        if free is None:
            return None
        share = f"{MEMORY_FRACTION:.0%} of the {free / 2**30:.1f} GiB free at the start"
        return cls(int(free * MEMORY_FRACTION), share)

    def describe(self) -> str:
        return f"{self.bytes / MIB:.0f} MiB ({self.origin})"


@dataclass(frozen=True)
class MemoryPlan:
    """A build's budget and the bytes of every intermediate tensor of one sample: the batch sizes that fit."""

    budget: MemoryBudget
    per_sample: int | None  # None: the graph's shapes could not be inferred; batches stay as asked

    def batch(self, wanted: int, copies: int = 1) -> int:
        """The largest batch up to ``wanted`` whose intermediate tensors, held ``copies`` times, fit (at least 1)."""
        if not self.per_sample:
            return wanted
        return max(1, min(wanted, self.budget.bytes // (copies * self.per_sample)))

    def batches_at_once(self, batch: int, copies: int = 1) -> int:
        """How many batches of ``batch`` samples fit at once with every intermediate tensor held ``copies`` times."""
        return max(1, self.budget.bytes // (copies * batch * self.per_sample)) if self.per_sample else 1 << 30

    def describe(self) -> str:
        activations = f"one sample's activations take ≈ {(self.per_sample or 0) / MIB:.0f} MiB"
        return f"{activations} and the memory budget is {self.budget.describe()}"


def activation_bytes_per_sample(model_path: str | Path, sample: dict[str, np.ndarray]) -> int | None:
    """The bytes of every intermediate tensor of ``model_path`` for one sample (``sample``: its feeds, batch 1),
    by ONNX shape inference; None when the graph's shapes cannot be inferred."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    for graph_input in model.graph.input:
        if graph_input.name in sample:
            shape = graph_input.type.tensor_type.shape
            del shape.dim[:]
            for size in sample[graph_input.name].shape:
                shape.dim.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # a graph ONNX's shape inference cannot follow: no estimate
        return None
    total = 0
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if not tensor.HasField("shape") or any(d <= 0 for d in dims):
            continue
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
        total += math.prod(dims) * itemsize
    return total or None
