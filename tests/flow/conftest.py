"""Fixtures of the fleet tests (tests/flow/test_fleet.py, test_ray_fleet.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, digits_checkpoint, digits_onnx) -> dict[str, Path]:
    """The digits CNN twice: as a PyTorch checkpoint and as an ONNX export (their own names, so their own runs)."""
    folder = tmp_path_factory.mktemp("fleet-models")
    checkpoint, onnx = folder / "digits-a.pt", folder / "digits-b.onnx"
    checkpoint.write_bytes(digits_checkpoint.read_bytes())
    onnx.write_bytes(digits_onnx.read_bytes())
    return {"digits-a": checkpoint, "digits-b": onnx}
