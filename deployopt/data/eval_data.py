"""Evaluation data: real arrays from .npz/.npy files or a registered dataset, or seeded generated inputs.

Everything is checked against the model's input signature up front, so a shape or dtype mismatch is
one clear line naming the file, the input and the fix — never an error from deep inside a runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from deployopt.data.arrays import load_arrays
from deployopt.data.user_data import is_dataset_path, load_user_split
from deployopt.errors import InputFileError, UsageError, file_error
from deployopt.sources.signature import Signature, TensorSpec

GENERATED_INT_HIGH = 100  # generated integer inputs (token ids, indices) are drawn from [0, 100)


@dataclass(frozen=True)
class EvalData:
    """Inputs by name (all with the same number of samples along the batch axis) and optional labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str  # where the data came from, for the report: a path, "dataset:digits/test" or "generated"
    signature: Signature

    @property
    def num_samples(self) -> int:
        """Samples along the sample axis of the first input that has one (1 when no input is batched)."""
        for spec in self.signature.inputs:
            axis = self.signature.sample_axis(spec)
            if axis is not None:
                return int(self.inputs[spec.name].shape[axis])
        return 1

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield feeds of at most ``batch_size`` samples (the last may be smaller); unbatched inputs whole."""
        # A fixed-batch model is fed exactly its batch size.
        step = batch_size if self.signature.has_dynamic_batch else self.signature.fixed_batch
        for start in range(0, self.num_samples, step):
            yield self.take(range(start, min(start + step, self.num_samples)))

    def head(self, count: int) -> EvalData:
        """The first ``count`` samples as data of their own (the whole data when it has no more)."""
        if count >= self.num_samples:
            return self
        return replace(
            self, inputs=self.take(range(count)), labels=None if self.labels is None else self.labels[:count]
        )

    def take(self, indices) -> dict[str, np.ndarray]:
        """The feeds of the samples at ``indices`` (inputs without a sample axis are passed whole).

        Every feed is a fresh copy: ONNX Runtime may write an output into an input's buffer (BatchNormalization
        in training mode updates ``mean``/``var`` in place), which would change the data for the next model."""
        feeds = {}
        for spec in self.signature.inputs:
            axis, array = self.signature.sample_axis(spec), self.inputs[spec.name]
            feeds[spec.name] = array.copy() if axis is None else np.take(array, indices, axis=axis)
        return feeds


def generate_feed(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A seeded random tensor of ``shape`` for ``spec``: standard normal floats, integers in [0, 100), bools."""
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if spec.dtype.startswith(("int", "uint")):
        return rng.integers(0, GENERATED_INT_HIGH, size=shape).astype(spec.dtype)
    if spec.dtype == "bfloat16":
        raise UsageError(f"input '{spec.name}': bfloat16 inputs cannot be generated with numpy; pass --data")
    return rng.standard_normal(shape).astype(spec.dtype)


def generate_data(signature: Signature, samples: int, seed: int = 0) -> EvalData:
    """Seeded inputs for every input of ``signature``; used when no real data is given.

    A fixed-batch model gets ``samples`` rounded to whole batches, stacked along axis 0 of the inputs that
    have a sample axis (a batch-1 CNN is verified on 64 images, one call each, not on a single one)."""
    rng = np.random.default_rng(seed)
    fixed = signature.fixed_batch
    if fixed:
        samples = max(fixed, samples - samples % fixed)
    inputs = {}
    for spec in signature.inputs:
        shape = spec.concrete_shape(samples)
        if fixed and signature.sample_axis(spec) == 0:
            shape = (samples, *shape[1:])
        inputs[spec.name] = generate_feed(spec, shape, rng)
    return EvalData(inputs, None, f"generated (seed {seed})", signature)


def sized_to_data(data: EvalData) -> EvalData:
    """``data`` with its signature's unsized dynamic dims (``seq``) set to the sizes its arrays have."""
    return replace(data, signature=data.signature.sized_from(data.inputs))


def cycled_batch(data: EvalData, batch: int) -> dict[str, np.ndarray]:
    """Feeds of ``batch`` samples of real data, repeating its samples when it has fewer (a benchmark batch of
    32 from 8 real inputs); a fixed-batch model gets its own batch."""
    size = data.signature.fixed_batch or batch
    return data.take([i % data.num_samples for i in range(size)])


def generate_batch(signature: Signature, batch: int, seed: int = 0) -> EvalData:
    """Generated inputs for one call: ``batch`` samples, or the model's own batch when it is fixed."""
    return generate_data(signature, signature.fixed_batch or batch, seed)


def load_data(signature: Signature, data_path: str | Path, labels_path: str | Path | None = None) -> EvalData:
    """Load validation inputs by input name from ``data_path`` and check them against ``signature``."""
    arrays = load_arrays(data_path, "data")
    if set(arrays) == {""} and len(signature.inputs) == 1:
        arrays = {signature.inputs[0].name: arrays[""]}
    missing = [name for name in signature.names if name not in arrays]
    if missing:
        raise file_error(
            data_path,
            f"has no array for input(s) {missing} (found {sorted(arrays)})",
            f"save the arrays under the model's input names: numpy.savez(file, {missing[0]}=...)",
        )
    inputs = {name: arrays[name] for name in signature.names}
    _check_arrays(signature, inputs, data_path)
    labels = arrays.get("labels")
    if labels_path is not None:
        label_arrays = load_arrays(labels_path, "labels")
        labels = label_arrays.get("labels", label_arrays.get("", None))
        if labels is None:
            raise file_error(labels_path, "has no 'labels' array", "save it as numpy.savez(file, labels=...)")
    data = EvalData(inputs, None, str(data_path), signature)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != data.num_samples or not np.issubdtype(labels.dtype, np.integer):
            raise file_error(
                labels_path or data_path,
                f"labels must be {data.num_samples} integers (got shape {labels.shape}, {labels.dtype})",
                "save one integer class index per sample",
            )
    return EvalData(inputs, labels, str(data_path), signature)


def _check_arrays(signature: Signature, inputs: dict[str, np.ndarray], origin: str | Path) -> None:
    counts = set()
    for spec in signature.inputs:
        array = inputs[spec.name]
        if str(array.dtype) != spec.dtype:
            raise file_error(
                origin,
                f"input '{spec.name}' has dtype {array.dtype} but the model expects {spec.dtype}",
                f"convert it with array.astype(numpy.{spec.dtype})",
            )
        if not spec.accepts(array.shape):
            raise file_error(
                origin,
                f"input '{spec.name}' has shape {list(array.shape)} but the model expects {list(spec.shape)}",
                "reshape the data to the model's input signature",
            )
        axis = signature.sample_axis(spec)
        if axis is not None:
            counts.add(array.shape[axis])
    if len(counts) > 1:
        raise file_error(
            origin,
            f"inputs have different sample counts {sorted(counts)}",
            "give every input the same number of samples",
        )


def dataset_data(signature: Signature, dataset: str, split: str = "test", seed: int = 0) -> EvalData:
    """Real data and labels from a registered dataset (see ``models/``) or a user's .npz / image folder."""
    from deployopt import models

    if is_dataset_path(dataset):
        inputs, labels = load_user_split(dataset, signature, split, seed)
        return EvalData({signature.names[0]: inputs}, labels, f"{dataset} ({split})", signature)
    entry = models.get_dataset(dataset)
    if entry is None:
        raise UsageError(f"unknown dataset '{dataset}'; registered: {', '.join(models.dataset_names())}")
    inputs, labels = entry.load(split, seed)
    try:
        _check_arrays(signature, inputs, f"dataset:{dataset}/{split}")
    except InputFileError as exc:
        raise UsageError(f"dataset '{dataset}' does not match the model's inputs: {exc}") from exc
    return EvalData(inputs, labels, f"dataset:{dataset}/{split}", signature)


def data_fingerprint(data: EvalData) -> str:
    """Content hash of the inputs and labels, so cached verification results follow the data."""
    digest = hashlib.sha256(data.origin.encode())
    for name in sorted(data.inputs):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(data.inputs[name]).tobytes())
    if data.labels is not None:
        digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()
