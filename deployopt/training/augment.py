"""Training augmentation from a short spec string, built on torchvision.transforms.v2.

``"crop:1,rotate:10,jitter:0.2"`` → random crop with 1 pixel of padding, rotation within ±10°, brightness
and contrast jitter of ±20 %. ``"none"`` turns augmentation off; ``"default"`` keeps the model's
registered augmentation. Each sample in a batch draws its own parameters (a v2 transform applied to a
whole batch would move every image the same way). Randomness comes from torch's generator, so a seeded
run is repeatable and ``--resume`` restores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deployopt.errors import BackendUnavailableError, UsageError

# name → (argument meaning, default argument); the argument is optional where a default exists
AUGMENTATIONS: dict[str, tuple[str, float | None]] = {
    "crop": ("padding in pixels before a random crop back to size", 1),
    "flip": ("horizontal flip with probability 0.5", None),
    "vflip": ("vertical flip with probability 0.5", None),
    "rotate": ("maximum rotation in degrees", 10),
    "jitter": ("brightness/contrast jitter (fraction); saturation too on 3-channel images", 0.2),
    "erase": ("probability of erasing a random rectangle", 0.25),
}
Augment = Callable[[Any, np.random.Generator], Any]


def parse_spec(spec: str) -> list[tuple[str, float | None]]:
    """``"crop:2,flip"`` → ``[("crop", 2.0), ("flip", None)]``; a clear error names the bad part."""
    steps: list[tuple[str, float | None]] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, argument = part.partition(":")
        if name not in AUGMENTATIONS:
            known = ", ".join(f"{n}[:{d}]" if d is not None else n for n, (_, d) in AUGMENTATIONS.items())
            raise UsageError(f"--augment: unknown augmentation '{name}' in '{spec}'; known: {known}, or none")
        default = AUGMENTATIONS[name][1]
        if argument and default is None:
            raise UsageError(f"--augment: '{name}' takes no argument (got '{part}')")
        try:
            value = float(argument) if argument else default
        except ValueError:
            raise UsageError(f"--augment: '{part}' needs a number after ':' ({AUGMENTATIONS[name][0]})") from None
        steps.append((name, value))
    return steps


def build_augment(spec: str, image_shape: tuple[int, ...]) -> Augment | None:
    """A batch augmentation for images of ``image_shape`` (C, H, W), or ``None`` for an empty/"none" spec."""
    if spec.strip() in ("", "none"):
        return None
    steps = parse_spec(spec)
    if len(image_shape) != 3:
        raise UsageError(f"--augment works on images (channels, height, width); this model's input is {image_shape}")
    try:
        import torch
        from torchvision.transforms import v2
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--augment needs torchvision ({exc}); install it with: pip install 'deployopt[vision]'"
        ) from exc
    channels, height, width = image_shape
    transforms = []
    for name, value in steps:
        if name == "crop":
            transforms.append(v2.RandomCrop((height, width), padding=int(value)))
        elif name == "flip":
            transforms.append(v2.RandomHorizontalFlip())
        elif name == "vflip":
            transforms.append(v2.RandomVerticalFlip())
        elif name == "rotate":
            transforms.append(v2.RandomRotation(value))
        elif name == "jitter":
            saturation = value if channels == 3 else None
            transforms.append(v2.ColorJitter(brightness=value, contrast=value, saturation=saturation))
        elif name == "erase":
            transforms.append(v2.RandomErasing(p=value))
    pipeline = v2.Compose(transforms)

    def augment(batch: Any, rng: np.random.Generator) -> Any:
        return torch.stack([pipeline(sample) for sample in batch])

    augment.spec = spec  # type: ignore[attr-defined]
    return augment
