"""Pruning on real models: the digits CNN (each method), torchvision resnet18 and mobilenet_v2, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from deployopt.api import PruneConfig, export, prune
from deployopt.stages.prune.methods import check_2to4
from tests.conftest import needs_torchvision


def _ort_logits(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_channels_with_finetune_keeps_accuracy_and_cuts_macs(digits_checkpoint, tmp_path):
    from deployopt.sources.detect import SourceKind, inspect_source

    out = tmp_path / "pruned.pt"
    outcome = prune(digits_checkpoint, out, PruneConfig(amount=0.5, finetune_epochs=10), bench_config=None)
    r = outcome.result
    assert outcome.passed and outcome.accuracy_before - outcome.accuracy_after <= 1.0
    assert r.macs_after <= 0.6 * r.macs_before and r.params_after < r.params_before
    assert outcome.size_after < outcome.size_before
    convs = [layer for layer in r.layers if layer.kind == "Conv2d"]
    assert [(c.before, c.after) for c in convs] == [(32, 16), (32, 16), (64, 32), (64, 32)]
    assert [layer.note for layer in r.layers if layer.kind == "Linear"] == ["output layer"]
    source = inspect_source(out)  # reloads without the model code, signature and dataset inside
    assert source.kind is SourceKind.TORCHSCRIPT and source.dataset == "digits"
    assert source.signature.to_text() == ["input:batch,1,8,8:float32"]
    export(out, tmp_path / "pruned.onnx")
    assert _ort_logits(tmp_path / "pruned.onnx", np.zeros((3, 1, 8, 8), np.float32)).shape == (3, 10)


def test_two_four_pattern_survives_export_and_the_checker_names_dense_tensors(digits_checkpoint, tmp_path):
    outcome = prune(digits_checkpoint, tmp_path / "sparse.pt", PruneConfig(method="2:4"), bench_config=None)
    assert outcome.result.params_after == outcome.result.params_before  # nothing removed, only zeroed
    assert any("not a multiple of 4" in reason for reason in outcome.result.skipped)  # the 1-channel first conv
    export(tmp_path / "sparse.pt", tmp_path / "sparse.onnx")
    check = check_2to4(tmp_path / "sparse.onnx")
    assert check.passed and len(check.tensors) == 4
    export(digits_checkpoint, tmp_path / "dense.onnx")
    dense = check_2to4(tmp_path / "dense.onnx")
    assert not dense.passed and len(dense.offending) == 4


def test_magnitude_is_honest_sparsity_and_compressed_size(digits_checkpoint, tmp_path):
    outcome = prune(
        digits_checkpoint, tmp_path / "m.pt", PruneConfig(method="magnitude", amount=0.6), bench_config=None
    )
    assert outcome.result.sparsity == pytest.approx(0.6, abs=0.02)
    assert outcome.result.macs_after == outcome.result.macs_before  # a dense counter: no MACs saved
    assert outcome.compressed_after < 0.75 * outcome.compressed_before


@pytest.mark.slow
@needs_torchvision
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_prune_export_and_run(name, tmp_path):
    import torch
    import torchvision

    from deployopt.api import SourceOptions

    torch.manual_seed(0)
    weights = tmp_path / f"{name}.pth"
    torch.save(torchvision.models.get_model(name).eval().state_dict(), weights)
    options = SourceOptions(arch=f"torchvision:{name}", inputs=("input:batch,3,224,224",))
    outcome = prune(weights, tmp_path / "p.pt", PruneConfig(amount=0.3), options, bench_config=None)
    r = outcome.result
    assert r.macs_after <= 0.75 * r.macs_before and r.params_after <= 0.75 * r.params_before
    export(tmp_path / "p.pt", tmp_path / "p.onnx")
    assert _ort_logits(tmp_path / "p.onnx", np.zeros((2, 3, 224, 224), np.float32)).shape == (2, 1000)
    if name == "resnet18":
        prune(weights, tmp_path / "s.pt", PruneConfig(method="2:4"), options, bench_config=None)
        export(tmp_path / "s.pt", tmp_path / "s.onnx")
        assert check_2to4(tmp_path / "s.onnx").passed


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--prune-amount", "1.5"], 2, "amount"),
        (["--prune-amount", "0"], 2, "amount"),
        (["--prune-method", "2:4", "--prune-amount", "0.3"], 2, "2:4 sparsity always removes half"),
        (["--prune-exclude", "backbone.conv9"], 2, "no layer named ['backbone.conv9']"),
        ([a for layer in ("0", "3", "7", "10") for a in ("--prune-exclude", layer)], 2, "nothing to prune"),
        (["--prune-distill"], 2, "--prune-distill trains the pruned model"),
    ],
)
def test_bad_prune_input_is_one_clear_line(run_cli, digits_checkpoint, tmp_path, args, code, message):
    out = tmp_path / "p.pt"
    got, _, err = run_cli("prune", digits_checkpoint, "-o", out, "--no-bench", *args)
    assert got == code, err
    assert message in err and "Traceback" not in err and not out.exists()


def test_prune_refuses_onnx_input(run_cli, digits_onnx, tmp_path):
    code, _, err = run_cli("prune", digits_onnx, "-o", tmp_path / "p.pt", "--no-bench")
    assert code == 3 and "prune needs the PyTorch module itself" in err


@pytest.mark.parametrize("importance", ["l1", "bn", "taylor"])
def test_every_importance_criterion_prunes_and_recovers(digits_checkpoint, tmp_path, importance):
    config = PruneConfig(amount=0.25, importance=importance, finetune_epochs=3)
    outcome = prune(digits_checkpoint, tmp_path / "p.pt", config, bench_config=None)
    assert outcome.result.macs_after < 0.8 * outcome.result.macs_before
    assert outcome.accuracy_after > 95.0, outcome.accuracy_after
