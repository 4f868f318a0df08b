"""A user's own labelled data as a dataset: an ``.npz`` of arrays or a folder of images by class.

``--dataset data.npz`` reads ``inputs`` (or an array named like the model's input) and ``labels``;
``--dataset photos/`` reads ``photos/<class>/*.png|jpg|…`` (class names sorted → label 0, 1, …), or
``photos/train/<class>/…`` plus ``val/`` and ``test/`` when the split is already made. Without a given
split the samples are split 60/20/20, stratified and seeded, as the built-in datasets are. Images are
converted to the model's channels (grayscale or RGB), resized to its height × width and scaled to
[0, 1]; that preprocessing is recorded in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from deployopt.data.arrays import load_arrays
from deployopt.data.split import stratified_split
from deployopt.errors import UsageError, file_error
from deployopt.sources.signature import Signature

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class UserDataset:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    preprocessing: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(max(labels.max() for _, labels in self.splits.values())) + 1


def is_dataset_path(name: str) -> bool:
    """A --dataset value that names a file or folder rather than a registered dataset."""
    return name.endswith(".npz") or "/" in name or Path(name).is_dir()


def load_user_split(path: str | Path, signature: Signature, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return load_user_dataset(str(Path(path).resolve()), signature, seed).splits[split]


@cache
def load_user_dataset(path: str, signature: Signature, seed: int = 0) -> UserDataset:
    """Read and check ``path`` against the model's single input; cached, as training asks for three splits."""
    if len(signature.inputs) != 1:
        raise UsageError(f"{path}: a dataset file feeds one input; the model has {len(signature.inputs)}")
    spec = signature.inputs[0]
    sample_shape = tuple(spec.concrete_shape(1))[1:]
    source = Path(path)
    if not source.exists():
        raise file_error(source, "dataset not found", "pass a registered dataset name, an .npz file or an image folder")
    dataset = _image_folder(source, sample_shape, seed) if source.is_dir() else _npz(source, spec.name, seed)
    for split, (inputs, _) in dataset.splits.items():
        if inputs.shape[1:] != sample_shape:
            raise file_error(
                source,
                f"{split} samples have shape {list(inputs.shape[1:])} but the model's input '{spec.name}' takes "
                f"{list(sample_shape)}",
                f"reshape them (inputs.reshape(-1, {', '.join(map(str, sample_shape))})) or train a model with "
                "that input shape",
            )
        if inputs.dtype.kind != np.dtype(spec.dtype).kind:
            raise file_error(
                source, f"inputs are {inputs.dtype} but the model takes {spec.dtype}", f"save them as {spec.dtype}"
            )
    splits = {name: (x.astype(spec.dtype, copy=False), y) for name, (x, y) in dataset.splits.items()}
    return UserDataset(splits, dataset.preprocessing)


def _npz(path: Path, input_name: str, seed: int) -> UserDataset:
    arrays = load_arrays(path, "dataset")
    inputs = arrays.get(input_name, arrays.get("inputs"))
    labels = arrays.get("labels")
    if inputs is None or labels is None:
        raise file_error(
            path,
            f"needs arrays 'inputs' (or '{input_name}') and 'labels' (found {sorted(arrays)})",
            "save it with numpy.savez(file, inputs=..., labels=...)",
        )
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(inputs) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise file_error(
            path,
            f"labels must be {len(inputs)} non-negative integers (got {labels.shape[0]} of {labels.dtype})",
            "save one integer class index per sample",
        )
    return UserDataset(_split(inputs, labels.astype(np.int64), seed), {"source": "npz"})


def _image_folder(root: Path, sample_shape: tuple[int, ...], seed: int) -> UserDataset:
    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise file_error(
            root,
            f"is an image folder but the model's input takes {list(sample_shape)}",
            "train a model whose input is (1 or 3 channels, height, width)",
        )
    channels, height, width = sample_shape
    mode = "L" if channels == 1 else "RGB"
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    presplit = {"train", "val"} <= set(subdirs) and set(subdirs) <= set(SPLITS)
    if presplit and "test" not in subdirs:
        raise file_error(
            root,
            "has train/ and val/ but no test/",
            "add a test/ folder: test accuracy must come from images that did not pick the best epoch",
        )
    class_root = root / "train" if presplit else root
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise file_error(root, f"has {len(classes)} class folder(s)", "put each class's images in its own subfolder")

    def read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((folder / name).glob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(_read_image(file, mode, (width, height)))
                    labels.append(label)
        if not images:
            raise file_error(folder, "has no images in its class folders", f"add {'/'.join(IMAGE_SUFFIXES)} files")
        return np.stack(images), np.asarray(labels, dtype=np.int64)

    splits = {split: read(root / split) for split in SPLITS} if presplit else _split(*read(root), seed)
    preprocessing = {"source": "image-folder", "mode": mode, "resize": [height, width], "scale": "1/255"}
    return UserDataset(splits, {**preprocessing, "classes": classes})


def _read_image(file: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert(mode).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise file_error(file, f"is not a readable image ({exc})", "remove it or re-save it as PNG") from exc
    pixels = pixels / 255.0
    return pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)


def _split(inputs: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """60/20/20, stratified when every class has at least five samples (as the built-in datasets)."""
    counts = np.bincount(labels)
    parts = stratified_split(labels, seed, stratify=counts[counts > 0].min() >= 5)
    return {name: (inputs[indices], labels[indices]) for name, indices in parts.items()}
