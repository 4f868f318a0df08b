"""Model cost: multiply-accumulates and parameters of one forward pass (pruning and training report them)."""

from __future__ import annotations

from typing import Any


def count_macs_and_params(model: Any, example: tuple) -> tuple[int, int]:
    """MACs and parameters of one forward pass, from Torch-Pruning's counter."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)
