"""Fleet pipelines for the tests of ``deployopt run`` over several models (local and on Ray)."""

from __future__ import annotations

from pathlib import Path

import yaml

# A small build: no low-precision variants, ONNX Runtime only, one batch size, one round.
SMALL = {"runtime": "onnxruntime", "quantize": {"make": []}, "bench": {"batch_sizes": [1], "repeats": 1}}


def write_pipeline(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def fleet_pipeline(tmp_path: Path, models: dict[str, Path], **own_builds: dict) -> Path:
    entries = [
        {"model": str(path), "build": own_builds.get(name, {}) | {"out": str(tmp_path / name)}}
        for name, path in models.items()
    ]
    return write_pipeline(tmp_path / "fleet.yaml", {"models": entries, "build": SMALL})
