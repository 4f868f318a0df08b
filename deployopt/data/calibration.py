"""Calibration data for static int8: arrays (.npz / .npy), a folder of images, or a registered dataset.

Data is handed to the quantizer in batches and capped at a sample count; image folders are decoded
one batch at a time, and .npy files are memory-mapped, so large calibration sets never sit in memory
whole. The protocol onnxruntime.quantization expects (``get_next()`` → feeds or None) is provided by
:func:`ort_reader`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.eval_data import EvalData, load_data
from deployopt.errors import BackendUnavailableError, UsageError, file_error
from deployopt.sources.signature import Signature, TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class BatchSource(Protocol):
    origin: str

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]: ...


class Preprocess(BaseModel):
    """How image files become an input tensor: resize the short side, centre-crop, scale, normalise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resize: int | None = Field(None, ge=1, description="resize the shorter side to this many pixels")
    crop: int | None = Field(None, ge=1, description="centre crop to crop×crop")
    scale: float = Field(1 / 255, description="multiply pixel values by this first")
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = Field("nchw", pattern="^(nchw|nhwc)$")

    @classmethod
    def parse(cls, text: str) -> Preprocess:
        """``resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw``."""
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            if not sep:
                raise UsageError(f"--preprocess '{text}': '{item}' is not KEY=VALUE (e.g. resize=256,crop=224)")
            values[key] = tuple(float(v) for v in raw.split(":")) if key in ("mean", "std") else raw
        return cls.model_validate(values)


@dataclass
class ImageFolder:
    """Images under a folder (recursively, sorted by path), decoded lazily to match one input spec."""

    root: Path
    spec: TensorSpec
    preprocess: Preprocess

    def __post_init__(self) -> None:
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise file_error(self.root, "contains no image files", f"put {', '.join(IMAGE_SUFFIXES)} files in it")
        self.origin = f"{self.root} ({len(self.files)} images)"

    def _load(self, path: Path) -> np.ndarray:
        try:
            from PIL import Image
        except ImportError as exc:
            raise BackendUnavailableError("image calibration needs Pillow: pip install pillow") from exc
        channels = self.spec.shape[1] if self.preprocess.layout == "nchw" else self.spec.shape[-1]
        try:
            image = Image.open(path).convert("L" if channels == 1 else "RGB")
        except OSError as exc:
            raise file_error(path, f"cannot be decoded as an image ({exc})", "remove or replace the file") from exc
        p = self.preprocess
        if p.resize:
            w, h = image.size
            ratio = p.resize / min(w, h)
            image = image.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.BILINEAR)
        if p.crop:
            w, h = image.size
            left, top = (w - p.crop) // 2, (h - p.crop) // 2
            image = image.crop((left, top, left + p.crop, top + p.crop))
        array = np.asarray(image, dtype=np.float32) * p.scale
        array = array[:, :, None] if array.ndim == 2 else array
        array = (array - np.array(p.mean, np.float32)) / np.array(p.std, np.float32)
        return array.transpose(2, 0, 1) if p.layout == "nchw" else array

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.files), batch_size):
            batch = np.stack([self._load(f) for f in self.files[start : start + batch_size]]).astype(self.spec.dtype)
            if not self.spec.accepts(batch.shape):
                raise file_error(
                    self.root,
                    f"images preprocess to shape {list(batch.shape)} but input '{self.spec.name}' expects "
                    f"{list(self.spec.shape)}",
                    "set --preprocess resize=/crop= to the model's input size",
                )
            yield {self.spec.name: batch}


def load_calibration(signature: Signature, path: str | Path, preprocess: Preprocess | None = None) -> BatchSource:
    """Calibration inputs from an .npz/.npy file or an image folder, checked against ``signature``."""
    path = Path(path)
    if path.is_dir():
        if len(signature.inputs) != 1:
            raise UsageError(f"{path}: image folders can only calibrate single-input models; pass an .npz")
        return ImageFolder(path, signature.inputs[0], preprocess or Preprocess())
    return load_data(signature, path)


def limited_batches(source: BatchSource, batch_size: int, limit: int) -> Iterator[dict[str, np.ndarray]]:
    """At most ``limit`` samples from ``source`` in batches of ``batch_size``."""
    seen = 0
    for feeds in source.batches(batch_size):
        if seen >= limit:
            return
        if isinstance(source, EvalData):  # knows each input's sample axis
            batch = EvalData(feeds, None, source.origin, source.signature)
            take = min(limit - seen, batch.num_samples)
            feeds = batch.take(range(take))
        else:  # an image folder: one input, samples along axis 0
            take = min(limit - seen, next(iter(feeds.values())).shape[0])
            feeds = {name: array[:take] for name, array in feeds.items()}
        seen += take
        yield feeds


def ort_reader(source: BatchSource, batch_size: int, limit: int) -> Any:
    """An onnxruntime.quantization.CalibrationDataReader over ``source`` (a fresh one per quantizer run). It knows
    its length and takes a range of batches, so ONNX Runtime can calibrate chunk by chunk (``CalibStridedMinMax``)
    instead of holding every batch's intermediate tensors at once."""
    from onnxruntime.quantization import CalibrationDataReader

    batches = list(limited_batches(source, batch_size, limit))
    # Histogram calibrators (entropy, percentile) need equal batch sizes: drop a short last batch.
    if len(batches) > 1 and next(iter(batches[-1].values())).shape[0] < batch_size:
        batches.pop()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._batches = iter(batches[start_index:end_index])

    return Reader()


def as_eval_data(source: BatchSource, signature: Signature, limit: int, batch_size: int = 32) -> EvalData:
    """Materialise up to ``limit`` samples (used when calibration data must double as verification data)."""
    if isinstance(source, EvalData) and source.num_samples <= limit:
        return source
    parts: dict[str, list[np.ndarray]] = {}
    for feeds in limited_batches(source, batch_size, limit):
        for name, array in feeds.items():
            parts.setdefault(name, []).append(array)
    inputs = {}
    for spec in signature.inputs:
        axis = signature.sample_axis(spec)
        arrays = parts[spec.name]
        inputs[spec.name] = arrays[0] if axis is None else np.concatenate(arrays, axis=axis)
    data = EvalData(inputs, None, source.origin, signature)
    labels = source.labels[: data.num_samples] if isinstance(source, EvalData) and source.labels is not None else None
    return EvalData(inputs, labels, source.origin, signature)
