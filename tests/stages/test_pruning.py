"""Prune inside `deployopt build`: pruned → exported → quantized, all verified against the unpruned original."""

from __future__ import annotations

import json

from tests.conftest import openvino_variants


def test_build_prunes_then_quantizes_and_verifies_against_the_original(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "run"
    args = ("build", digits_checkpoint, "--prune-method", "channels", "--prune-amount", "0.5")
    args += ("--prune-finetune-epochs", "10")
    code, _, err = run_cli(*args, "-o", out, "--no-bench")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["pytorch", "pytorch-pruned", "onnx-fp32", "onnx-fp16", "onnx-int8", *openvino_variants()]
    for variant in report["variants"][1:]:
        assert variant["verify"]["reference"] == str(digits_checkpoint)  # the unpruned original
        assert variant["accuracy"] >= report["variants"][0]["accuracy"] - 1.5
    prune_step = next(s for s in report["stages"] if s["stage"] == "prune")
    assert "channels 0.5" in prune_step["summary"] and "MACs" in prune_step["summary"]
    code, _, err = run_cli(*args, "-o", out, "--no-bench")
    assert code == 0, err
    assert next(s for s in json.loads((out / "report.json").read_text())["stages"] if s["stage"] == "prune")["cached"]


def test_two_four_build_records_the_pattern_for_tensorrt(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(
        "build",
        digits_checkpoint,
        "--prune",
        "2:4",
        "--prune-finetune-epochs",
        "5",
        "--no-int8",
        "--no-fp16",
        "-o",
        out,
        "--no-bench",
    )
    assert code == 0, err
    assert "--prune is deprecated; use --prune-method" in err  # the old spelling still works, for one release
    sparsity = json.loads((out / "manifest.json").read_text())["metrics"]["sparsity_2to4"]
    assert sparsity["passed"] and len(sparsity["tensors"]) == 4
    steps = {s["stage"]: s["summary"] for s in json.loads((out / "report.json").read_text())["stages"]}
    assert "all follow 2:4" in steps["2:4 check"]


def test_prune_options_without_a_method_are_refused(run_cli, digits_checkpoint, tmp_path):
    code, _, err = run_cli("build", digits_checkpoint, "--prune-amount", "0.4", "-o", tmp_path / "r")
    assert code == 2 and "need --prune-method METHOD" in err
