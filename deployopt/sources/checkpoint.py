"""deployopt's checkpoint format: weights plus everything ``deployopt build`` needs to use them.

A checkpoint is a plain ``torch.save`` dict that loads with ``weights_only=True`` (tensors, strings,
numbers only), so it is safe to open from an untrusted source:

    {"format": "deployopt.checkpoint/1", "arch": "digits-cnn", "arch_kwargs": {}, "state_dict": {...},
     "signature": [...], "dataset": "digits", "metrics": {...}, "preprocessing": {...}}

``dataset`` is a registered name or the absolute path of the user's .npz / image folder it was trained on;
``preprocessing`` says how that data was turned into inputs (image mode, resize, scale, class names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployopt.fsutil import atomic_path
from deployopt.sources.signature import Signature

CHECKPOINT_FORMAT = "deployopt.checkpoint/1"


def save_checkpoint(
    path: str | Path,
    model: Any,
    *,
    arch: str,
    signature: Signature,
    arch_kwargs: dict | None = None,
    dataset: str | None = None,
    metrics: dict | None = None,
    preprocessing: dict | None = None,
) -> Path:
    """Write ``model``'s weights and metadata atomically to ``path``."""
    import torch

    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "signature": signature.to_json(),
        "dataset": dataset,
        "metrics": dict(metrics or {}),
        "preprocessing": dict(preprocessing or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def is_deployopt_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT
