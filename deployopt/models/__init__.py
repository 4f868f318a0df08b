"""Registry of built-in models and datasets (``deployopt/models/``; the digits data ships in ``data/``).

Adding a model or dataset is one file in this folder that defines module-level ``MODELS`` and/or
``DATASETS`` lists; they are discovered on first use. Importing this package is cheap: model files
(which import torch) are only imported when the registry is queried.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelEntry:
    """A model architecture deployopt can build from a checkpoint by name (``--arch NAME``)."""

    name: str
    factory: Callable[..., Any]  # returns a torch.nn.Module
    signature: tuple[str, ...]  # --input style specs, e.g. ("input:batch,1,8,8:float32",)
    dataset: str | None = None  # registered dataset used for calibration / validation
    description: str = ""
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    train_epochs: int = 20  # `deployopt train` default for this model
    augment: Callable[[Any, np.random.Generator], Any] | None = None  # batch, rng → augmented batch


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset that needs no download. ``load(split, seed)`` returns ``(inputs by name, labels)``."""

    name: str
    load: Callable[[str, int], tuple[dict[str, np.ndarray], np.ndarray]]
    description: str = ""
    splits: tuple[str, ...] = ("train", "val", "test")


@cache
def _discover() -> tuple[dict[str, ModelEntry], dict[str, DatasetEntry]]:
    models: dict[str, ModelEntry] = {}
    datasets: dict[str, DatasetEntry] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for entry in getattr(module, "MODELS", ()):
            models[entry.name] = entry
        for entry in getattr(module, "DATASETS", ()):
            datasets[entry.name] = entry
    return models, datasets


def model_names() -> list[str]:
    return sorted(_discover()[0])


def dataset_names() -> list[str]:
    return sorted(_discover()[1])


def get_model(name: str) -> ModelEntry | None:
    return _discover()[0].get(name)


def get_dataset(name: str) -> DatasetEntry | None:
    return _discover()[1].get(name)
