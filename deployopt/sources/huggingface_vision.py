"""What a Hugging Face image model takes: the ``pixel_values`` input from its config, and its image processor's
settings (``preprocessor_config.json``) as deployopt's ``--preprocess``, so an image folder given for calibration is
prepared as the model was trained."""

from __future__ import annotations

from pathlib import Path

from deployopt.errors import file_error
from deployopt.sources.signature import Signature, TensorSpec


def image_signature(config: dict, folder: Path) -> Signature:
    """``pixel_values:batch,C,H,W`` from ``num_channels`` and ``image_size``."""
    size = config.get("image_size")
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    channels = config.get("num_channels", 3)
    if len(size) != 2 or not all(isinstance(d, int) for d in (*size, channels)):
        raise file_error(folder / "config.json", "names no image_size", "set image_size in config.json")
    return Signature((TensorSpec("pixel_values", ("batch", channels, *size), "float32"),))


def image_preprocess(processor: dict) -> dict | None:
    """The processor's resize, crop, rescale and normalisation as ``--preprocess`` settings. Processors that resize
    to an exact height × width are approximated by a short-side resize and a centre crop (the same for square
    photos). None when the processor names no size."""
    if not isinstance(processor, dict):
        return None
    size = processor.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else size
    resize = (size.get("shortest_edge") or size.get("height")) if isinstance(size, dict) else None
    if not isinstance(resize, int):
        return None
    crop = processor.get("crop_size") if processor.get("do_center_crop") else resize
    crop = crop.get("height") if isinstance(crop, dict) else crop
    normalize = processor.get("do_normalize", True) and "image_mean" in processor and "image_std" in processor
    return {
        "resize": resize if processor.get("do_resize", True) else None,
        "crop": crop,
        "scale": processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0,
        "mean": list(processor["image_mean"]) if normalize else [0.0],
        "std": list(processor["image_std"]) if normalize else [1.0],
    }
