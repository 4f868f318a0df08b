"""Shared fixtures: the digits CNN trained once per session, saved in every supported source format."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from deployopt.sources.signature import Signature

pytest_plugins = ["tests.hf_models"]  # the Hugging Face folders, shared by tests/huggingface and tests/serving

DIGITS_INPUT = "input:batch,1,8,8:float32"
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
needs_torchvision = pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision is not installed (pip install 'deployopt[vision]')"
)


def openvino_variants(*make: str, float_source: bool = True, calibrated: bool = True) -> list[str]:
    """The OpenVINO variants a build adds beside the ONNX Runtime ones (--runtime auto), in report order, as the
    build's own plan decides them on this machine — openvino-bf16 where the CPU computes in bf16, openvino-fp16
    where in fp16, NNCF's candidate where nncf is installed; never a list fixed on one CPU. ``make``: the
    build's variants (default: every one); ``float_source``: the model is not already int8."""
    if importlib.util.find_spec("openvino") is None:
        return []
    from deployopt.flow.build import VARIANT_STEPS, BuildConfig, QuantizedVariants
    from deployopt.stages.openvino import IrCandidate, openvino_candidates

    make = make or tuple(VARIANT_STEPS)
    config = BuildConfig(quantize=QuantizedVariants(make=make))
    made = {"onnx-fp32"} | ({"onnx-int8"} if "int8" in make and float_source else set())
    plan = openvino_candidates(config, made, float_source, calibrated)
    return [variant for variant, candidate in plan.items() if isinstance(candidate, IrCandidate)]


@pytest.fixture(scope="session", autouse=True)
def _small_thread_pools():
    """Tests run on 2 shared cores; keep each library's thread pool from oversubscribing them."""
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_trained(model_dir):
    """(checkpoint path, training metrics) from the demo's own recipe."""
    from deployopt.flow.demo import train_demo_model

    path = model_dir / "digits-cnn.pt"
    metrics = train_demo_model(path, log=lambda message: None)
    return path, metrics


@pytest.fixture(scope="session")
def digits_checkpoint(digits_trained) -> Path:
    return digits_trained[0]


@pytest.fixture(scope="session")
def digits_module(digits_checkpoint):
    from deployopt.sources.detect import inspect_source
    from deployopt.sources.loading import load_torch_model

    return load_torch_model(inspect_source(digits_checkpoint))


@pytest.fixture(scope="session")
def digits_state_dict(digits_module, model_dir) -> Path:
    import torch

    path = model_dir / "digits-weights.pth"
    torch.save(digits_module.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def digits_torchscript(digits_module, model_dir) -> Path:
    import torch

    path = model_dir / "digits-scripted.pt"
    torch.jit.save(torch.jit.trace(digits_module, torch.zeros(2, 1, 8, 8)), str(path))
    return path


@pytest.fixture(scope="session")
def digits_pt2(digits_module, model_dir) -> Path:
    import torch

    path = model_dir / "digits-exported.pt2"
    program = torch.export.export(
        digits_module, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="session")
def digits_pickled(digits_module, model_dir) -> Path:
    import torch

    path = model_dir / "digits-pickled.pt"
    torch.save(digits_module, path)
    return path


@pytest.fixture(scope="session")
def digits_onnx(digits_checkpoint, model_dir) -> Path:
    from deployopt.api import export

    path = model_dir / "digits.onnx"
    export(digits_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def digits_signature() -> Signature:
    return Signature.parse([DIGITS_INPUT])


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from deployopt.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out, captured.err

    return invoke


@pytest.fixture(scope="session")
def text_onnx(model_dir) -> Path:
    """The registered tiny transformer (seeded random weights), exported by deployopt."""
    import torch

    from deployopt.api import SourceOptions, export
    from deployopt.models.text import TinyTextTransformer

    torch.manual_seed(0)
    weights = model_dir / "text.pth"
    torch.save(TinyTextTransformer().eval().state_dict(), weights)
    path = model_dir / "text.onnx"
    export(weights, path, SourceOptions(arch="tiny-text-transformer"))
    return path


@pytest.fixture(scope="session")
def digits_fp32(digits_onnx, model_dir) -> Path:
    """The graph-optimised digits model, as `build` makes it."""
    from deployopt.api import optimize

    path = model_dir / "digits-fp32.onnx"
    optimize(digits_onnx, path)
    return path


@pytest.fixture
def child_patches(monkeypatch):
    """Install stand-ins from :mod:`tests.fakes.child_patches` in this process and in every process deployopt
    starts (candidates run in their own process: monkeypatch alone would not reach them). Call it with
    ``{"module.function": "tests.fakes.child_patches:stand_in"}``."""
    import importlib
    import json

    from tests.fakes import child_patches as stand_ins

    root = Path(__file__).resolve().parents[1]

    def install(patches: dict[str, str]) -> None:
        for target, replacement in patches.items():
            module_name, attribute = target.rsplit(".", 1)
            module = importlib.import_module(module_name)
            monkeypatch.setitem(stand_ins.ORIGINALS, target, getattr(module, attribute))
            replacement_module, function = replacement.split(":")
            monkeypatch.setattr(module, attribute, getattr(importlib.import_module(replacement_module), function))
        path = [str(root / "tests" / "fakes" / "child_site"), str(root), os.environ.get("PYTHONPATH", "")]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
        monkeypatch.setenv("DEPLOYOPT_TEST_CHILD_PATCHES", json.dumps(list(patches.items())))

    return install
