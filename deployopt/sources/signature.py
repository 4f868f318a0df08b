"""Input signatures: names, shapes (with symbolic dynamic axes) and dtypes of a model's inputs.

The textual form used by ``--input`` and by pipeline files is ``NAME:SHAPE[:DTYPE]`` where SHAPE is
comma- or ``x``-separated. A dimension that is not an integer is symbolic (dynamic); the batch axis is
the symbolic dimension named one of :data:`BATCH_NAMES` (or the first symbolic one). A symbolic
dimension may carry a typical value, ``seq=128``, used when inputs must be generated.

Examples: ``input:batch,1,8,8``, ``input_ids:B,seq=128:int64``, ``image:1x3x224x224:float16``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deployopt.errors import UsageError

DTYPES = ("float32", "float16", "float64", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
BATCH_NAMES = frozenset({"b", "n", "batch", "batch_size", "bs"})
# Size of a dynamic non-batch dim that neither --input (seq=N) nor a data file fixes, when inputs must be
# generated: a common sequence length, and a multiple of 32 so strided CNNs with dynamic H and W run too.
DEFAULT_DIM_SIZE = 128
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")  # no ":" (it separates the fields)

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor: its name, shape (int = fixed, str = symbolic) and numpy dtype name."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"
    # Typical values for symbolic non-batch dims, e.g. {"seq": 128}; used to generate inputs.
    dim_values: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def batch_axis(self) -> int | None:
        """Index of the batch axis: the symbolic dim with a batch-like name, else the first symbolic one."""
        symbolic = [i for i, d in enumerate(self.shape) if isinstance(d, str)]
        for i in symbolic:
            if str(self.shape[i]).lower() in BATCH_NAMES:
                return i
        return symbolic[0] if symbolic else None

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """Shape with the batch axis set to ``batch`` and other symbolic dims to their typical value
        (:data:`DEFAULT_DIM_SIZE` for those without one; :meth:`Signature.default_sized` names them)."""
        out = []
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, int):
                out.append(dim)
            elif axis == self.batch_axis:
                out.append(batch)
            else:
                out.append(self.dim_values.get(dim, DEFAULT_DIM_SIZE))
        return tuple(out)

    @property
    def unsized_dims(self) -> list[str]:
        """Dynamic non-batch dims without a typical value (generated inputs use the default size)."""
        return [
            str(d)
            for i, d in enumerate(self.shape)
            if isinstance(d, str) and i != self.batch_axis and d not in self.dim_values
        ]

    def accepts(self, shape: Sequence[int]) -> bool:
        """Whether a concrete array shape fits this spec (same rank, fixed dims equal)."""
        if len(shape) != len(self.shape):
            return False
        return all(isinstance(d, str) or d == s for d, s in zip(self.shape, shape, strict=True))

    def to_text(self) -> str:
        dims = ",".join(
            f"{d}={self.dim_values[d]}" if isinstance(d, str) and d in self.dim_values else str(d) for d in self.shape
        )
        return f"{self.name}:{dims}:{self.dtype}"

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "dim_values": self.dim_values}

    @classmethod
    def from_json(cls, data: dict) -> TensorSpec:
        return cls(
            name=data["name"],
            shape=tuple(data["shape"]),
            dtype=data.get("dtype", "float32"),
            dim_values=dict(data.get("dim_values", {})),
        )


@dataclass(frozen=True)
class Signature:
    """The ordered inputs of a model."""

    inputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.inputs]
        if len(set(names)) != len(names):
            raise UsageError(f"input names must be unique, got {names}")
        if not names:
            raise UsageError("a signature needs at least one input")

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def __getitem__(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def has_dynamic_batch(self) -> bool:
        """Some input has a batch axis; inputs without one (a BatchNorm ``scale`` of shape [C] beside ``x`` of
        [N, C, H, W]) are fed whole to every call."""
        return any(spec.batch_axis is not None for spec in self.inputs)

    def sample_axis(self, spec: TensorSpec) -> int | None:
        """The axis ``spec``'s samples are stacked along in data files, or None when every call gets it whole.

        With a dynamic batch that is the input's batch axis; in a fully fixed-shape model the inputs whose
        leading dim equals the first input's are stacked along axis 0 (in multiples of that batch)."""
        if self.has_dynamic_batch:
            return spec.batch_axis
        lead = self.inputs[0].shape[:1]
        return 0 if lead and spec.shape[:1] == lead else None

    def sized_from(self, arrays: dict[str, Any]) -> Signature:
        """This signature with each unsized dynamic non-batch dim (``seq``) set to its size in ``arrays`` (real
        data the user gave), so generated inputs for benchmarks and export match the data's shapes."""
        specs = []
        for spec in self.inputs:
            array, values = arrays.get(spec.name), dict(spec.dim_values)
            if array is not None and len(array.shape) == len(spec.shape):
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, str) and axis != spec.batch_axis and dim not in values:
                        values[dim] = int(array.shape[axis])
            specs.append(replace(spec, dim_values=values))
        return Signature(tuple(specs))

    def default_sized(self) -> list[str]:
        """One note per input whose generated values use :data:`DEFAULT_DIM_SIZE`, for reports."""
        return [
            f"input '{spec.name}': dynamic {'dims' if len(dims) > 1 else 'dim'} {', '.join(dims)} sized "
            f"{DEFAULT_DIM_SIZE} (the default) in generated inputs; size "
            + ("them" if len(dims) > 1 else "it")
            + f" with --input {spec.name}:"
            + ",".join(f"{d}=N" if d in dims else str(d) for d in spec.shape)
            + ", or give --data"
            for spec in self.inputs
            if (dims := spec.unsized_dims)
        ]

    @property
    def fixed_batch(self) -> int | None:
        """The batch a model without a dynamic batch axis always runs at (its first input's leading dim)."""
        if self.has_dynamic_batch:
            return None
        first = self.inputs[0].shape
        return first[0] if first and isinstance(first[0], int) else 1

    def to_text(self) -> list[str]:
        return [spec.to_text() for spec in self.inputs]

    def to_json(self) -> list[dict]:
        return [spec.to_json() for spec in self.inputs]

    @classmethod
    def from_json(cls, data: Iterable[dict]) -> Signature:
        return cls(tuple(TensorSpec.from_json(item) for item in data))

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Signature:
        return cls(tuple(parse_tensor_spec(text) for text in texts))


def parse_tensor_spec(text: str) -> TensorSpec:
    """Parse ``NAME:SHAPE[:DTYPE]``; raise :class:`UsageError` naming the bad part and a valid example."""
    example = "e.g. --input input:batch,3,224,224:float32"
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"--input '{text}': expected NAME:SHAPE[:DTYPE], {example}")
    name, shape_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if not _NAME.match(name):
        raise UsageError(f"--input '{text}': '{name}' is not a valid input name, {example}")
    if dtype not in DTYPES:
        raise UsageError(f"--input '{text}': unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    shape: list[Dim] = []
    dim_values: dict[str, int] = {}
    # Dimensions are comma-separated; 1x3x224x224 is accepted as a spelling of all-numeric shapes only, so a
    # dimension named like max_len is never split at its x.
    separator = r"[x×]" if re.fullmatch(r"\d+([x×]\d+)+", shape_text.strip()) else ","
    for raw in re.split(separator, shape_text):
        raw = raw.strip()
        if not raw:
            raise UsageError(f"--input '{text}': empty dimension in shape '{shape_text}', {example}")
        if raw.isdigit():
            if int(raw) <= 0:
                raise UsageError(f"--input '{text}': dimension {raw} must be positive")
            shape.append(int(raw))
            continue
        symbol, _, typical = raw.partition("=")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", symbol):
            raise UsageError(f"--input '{text}': dimension '{raw}' is neither a positive integer nor a name")
        if typical:
            if not typical.isdigit() or int(typical) <= 0:
                raise UsageError(f"--input '{text}': typical value in '{raw}' must be a positive integer")
            dim_values[symbol] = int(typical)
        shape.append(symbol)
    return TensorSpec(name=name, shape=tuple(shape), dtype=dtype, dim_values=dim_values)


def refine(graph: Signature, given: Signature, where: object) -> Signature:
    """``--input`` on a model that declares its own inputs (ONNX): it may name sizes for the graph's dynamic
    dims (``seq=128``, or a number), never contradict it. Inputs it does not name keep the graph's spec, with
    the sizes it gives to dims of the same name (``sequence=512`` on one input sizes ``sequence`` everywhere).
    A name the graph lacks, another rank, dtype or fixed size is a :class:`UsageError` naming both signatures."""
    unknown = [name for name in given.names if name not in graph.names]
    if unknown:
        raise UsageError(
            f"{where}: --input names {', '.join(unknown)}, which the model does not have; its inputs are "
            f"{' '.join(graph.to_text())}: use the model's input names or drop --input"
        )
    sizes = {dim: size for spec in given.inputs for dim, size in spec.dim_values.items()}
    refined = []
    for spec in graph.inputs:
        if spec.name not in given.names:
            shared = {d: sizes[d] for d in spec.shape if isinstance(d, str) and d in sizes}
            refined.append(replace(spec, dim_values={**spec.dim_values, **shared}))
            continue
        wanted = given[spec.name]
        problem = None
        if len(wanted.shape) != len(spec.shape):
            problem = f"rank {len(wanted.shape)} vs the model's {len(spec.shape)}"
        elif wanted.dtype != spec.dtype:
            problem = f"dtype {wanted.dtype} vs the model's {spec.dtype}"
        else:
            for axis, (theirs, ours) in enumerate(zip(spec.shape, wanted.shape, strict=True)):
                if isinstance(theirs, int) and theirs != ours:
                    problem = f"dimension {axis} is fixed at {theirs} in the model, --input says {ours}"
                    break
        if problem:
            raise UsageError(
                f"{where}: --input {wanted.to_text()} contradicts the model's input {spec.to_text()} ({problem}); "
                "match the model or drop --input"
            )
        refined.append(wanted)
    return Signature(tuple(refined))
