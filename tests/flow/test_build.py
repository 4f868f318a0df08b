"""`deployopt build` end to end through the CLI, for every model source, plus caching and reports."""

import json

import numpy as np
import pytest

from deployopt.fsutil import sha256_file
from tests.conftest import DIGITS_INPUT, needs_torchvision, openvino_variants

NO_BENCH = ("--no-bench",)
# builds that check what a benchmark records, not how well it ranks: a short measurement (the ranking's own rules
# are tested on synthetic timings in tests/reports/test_recommend.py)
BRIEF_BENCH = ("--batch-sizes", "1,8", "--threads", "1", "--min-seconds", "0.2", "--warmup-seconds", "0.05")


def _report(run_dir):
    return json.loads((run_dir / "report.json").read_text())


@pytest.mark.parametrize(
    ("fixture", "extra"),
    [
        ("digits_checkpoint", ()),
        ("digits_state_dict", ("--arch", "digits-cnn")),
        ("digits_torchscript", ("--input", DIGITS_INPUT)),
        ("digits_pt2", ()),
        ("digits_pickled", ("--trust-pickle", "--input", DIGITS_INPUT)),
        ("digits_onnx", ()),
    ],
)
def test_every_source_kind_builds_and_verifies(fixture, extra, request, run_cli, tmp_path):
    model = request.getfixturevalue(fixture)
    before = sha256_file(model)
    code, out, err = run_cli("build", model, "-o", tmp_path / "run", *extra, *NO_BENCH)
    assert code == 0, err
    assert "onnx-fp32" in out and "pass" in out
    report = _report(tmp_path / "run")
    assert report["passed"] is True
    fp32 = next(v for v in report["variants"] if v["name"] == "onnx-fp32")
    assert fp32["verify"]["outputs"][0]["max_rel_error"] < 1e-4
    assert (tmp_path / "run" / "model-fp32.onnx").is_file()
    assert sha256_file(model) == before  # the input model is never modified


def test_registered_dataset_gives_real_accuracy_and_manifest_lineage(digits_checkpoint, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, *BRIEF_BENCH)
    assert code == 0, err
    report = _report(run)
    assert report["data"] == "dataset:digits/test" and report["samples"] == 360
    variants = {v["name"]: v for v in report["variants"]}
    assert variants["pytorch"]["accuracy"] >= 98.0
    assert variants["onnx-fp32"]["accuracy"] == variants["pytorch"]["accuracy"]
    for name in ("pytorch", "onnx-fp32"):
        assert set(variants[name]["latency"]) == {"1", "8"}
        assert variants[name]["latency"]["8"]["p50_ms"] > 0

    manifest = json.loads((run / "manifest.json").read_text())
    export, graph = manifest["stages"]["export"], manifest["stages"]["graph"]
    assert export["inputs"]["source"] == sha256_file(digits_checkpoint)
    assert graph["inputs"]["model"] == export["outputs"]["model"]["sha256"]  # lineage: graph consumed export's output
    assert graph["outputs"]["model"]["sha256"] == sha256_file(run / "model-fp32.onnx")
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["tools"])
    assert manifest["result"]["passed"] is True
    markdown = (run / "report.md").read_text()
    assert "| onnx-fp32" in markdown and "**export**" in markdown and "**graph**" in markdown
    assert (run / "logs" / "export.log").read_text()


def test_rerun_reuses_stages_and_force_redoes_them(digits_checkpoint, run_cli, tmp_path):
    run = tmp_path / "run"
    assert run_cli("build", digits_checkpoint, "-o", run, *NO_BENCH)[0] == 0
    first = json.loads((run / "manifest.json").read_text())
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, *NO_BENCH)
    assert code == 0
    stages = {s["stage"]: s for s in _report(run)["stages"]}
    assert stages["export"]["cached"] and stages["graph"]["cached"] and stages["verify onnx-fp32"]["cached"]
    assert "» graph: reused from the run directory" in err and "verify onnx-fp32: pass (reused)" in err
    second = json.loads((run / "manifest.json").read_text())
    assert second["stages"]["export"]["started"] == first["stages"]["export"]["started"]
    assert run_cli("build", digits_checkpoint, "-o", run, "--force", *NO_BENCH)[0] == 0
    stages = {s["stage"]: s for s in _report(run)["stages"]}
    assert not stages["export"]["cached"] and not stages["graph"]["cached"]


def test_missed_budget_fails_the_build_naming_the_metric(digits_checkpoint, run_cli, tmp_path):
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--max-abs-error", "0", *NO_BENCH)
    assert code == 1
    assert "FAIL onnx-fp32: output: max_abs_error" in err and "above budget 0" in err
    assert _report(tmp_path / "run")["passed"] is False


def test_user_validation_data_and_labels(digits_checkpoint, run_cli, tmp_path):
    from deployopt.models.digits import load_digits_split

    inputs, labels = load_digits_split("val")
    data = tmp_path / "val.npz"
    np.savez(data, input=inputs["input"], labels=labels)
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--data", data, *NO_BENCH)
    assert code == 0, err
    report = _report(tmp_path / "run")
    assert report["data"] == str(data) and report["samples"] == len(labels)
    assert report["variants"][0]["accuracy"] >= 95.0


def test_missing_signature_asks_for_input(digits_torchscript, run_cli, tmp_path):
    code, _, err = run_cli("build", digits_torchscript, "-o", tmp_path / "run")
    assert code == 3 and "pass --input NAME:SHAPE" in err


@needs_torchvision
def test_torchvision_resnet18_builds(run_cli, tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    code, _, err = run_cli(
        "build",
        weights,
        "--arch",
        "torchvision:resnet18",
        "--input",
        "input:batch,3,224,224",
        "--samples",
        "16",
        "-o",
        tmp_path / "run",
        *NO_BENCH,
    )
    assert code == 0, err
    report = _report(tmp_path / "run")
    graph = next(s for s in report["stages"] if s["stage"] == "graph")
    assert "nodes" in graph["summary"]
    assert report["variants"][1]["verify"]["outputs"][0]["top1_agreement"] == 1.0


def test_build_makes_fp16_and_int8_variants_by_default(digits_checkpoint, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, *BRIEF_BENCH)
    assert code == 0, err
    report = _report(run)
    variants = {v["name"]: v for v in report["variants"]}
    assert set(variants) == {"pytorch", "onnx-fp32", "onnx-fp16", "onnx-int8", *openvino_variants()}
    assert variants["onnx-fp16"]["precision"] == "fp16" and variants["onnx-int8"]["precision"] == "int8"
    assert variants["pytorch"]["accuracy"] - variants["onnx-int8"]["accuracy"] <= 0.5
    assert variants["onnx-int8"]["size_bytes"] < variants["onnx-fp32"]["size_bytes"] / 2
    for name in ("onnx-fp16", "onnx-int8"):
        assert set(variants[name]["latency"]) == {"1", "8"}
    steps = {s["stage"]: s["summary"] for s in report["stages"]}
    assert "static quantization" in steps["int8"] and "Conv 4/4" in steps["int8"]
    manifest = json.loads((run / "manifest.json").read_text())
    graph_out = manifest["stages"]["graph"]["outputs"]["model"]["sha256"]
    assert manifest["stages"]["int8"]["inputs"]["model"] == graph_out  # lineage: int8 made from the fp32 graph
    assert manifest["stages"]["fp16"]["inputs"]["model"] == graph_out


def test_int8_without_calibration_data_is_skipped_with_a_reason(digits_torchscript, run_cli, tmp_path):
    code, _, err = run_cli("build", digits_torchscript, "--input", DIGITS_INPUT, "-o", tmp_path / "run", *NO_BENCH)
    assert code == 0, err
    assert "int8 skipped: static int8 needs calibration data" in err
    report = _report(tmp_path / "run")
    assert "onnx-int8" not in {v["name"] for v in report["variants"]}
    assert any("int8 skipped" in note for note in report["notes"])


def test_calibration_file_enables_int8_for_any_model(digits_torchscript, run_cli, tmp_path):
    from deployopt.models.digits import load_digits_split

    inputs, _ = load_digits_split("val")
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=inputs["input"])
    code, _, err = run_cli(
        "build",
        digits_torchscript,
        "--input",
        DIGITS_INPUT,
        "--calibration",
        calib,
        "--no-fp16",
        "-o",
        tmp_path / "run",
        *NO_BENCH,
    )
    assert code == 0, err
    names = {v["name"] for v in _report(tmp_path / "run")["variants"]}
    assert names == {"pytorch", "onnx-fp32", "onnx-int8", *openvino_variants("int8", "bf16")}


def test_killed_build_resumes_from_finished_stages(digits_checkpoint, run_cli, tmp_path):
    """SIGKILL after the graph stage: the next run reuses export and graph, finishes, and matches a clean run."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "killed"
    command = [sys.executable, "-m", "deployopt", "build", str(digits_checkpoint), "-o", str(run), *NO_BENCH]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        manifest = run / "manifest.json"
        if manifest.exists() and "graph" in json.loads(manifest.read_text() or "{}").get("stages", {}):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the build finished before it could be killed"

    code, _, err = run_cli("build", digits_checkpoint, "-o", run, *NO_BENCH)
    assert code == 0, err
    stages = {s["stage"]: s for s in _report(run)["stages"]}
    assert stages["export"]["cached"] and stages["graph"]["cached"]
    assert not list(run.rglob("*.partial"))
    clean = tmp_path / "clean"
    assert run_cli("build", digits_checkpoint, "-o", clean, *NO_BENCH)[0] == 0
    for artifact in ("model.onnx", "model-fp32.onnx", "model-fp16.onnx"):
        assert sha256_file(run / artifact) == sha256_file(clean / artifact), artifact


def test_same_inputs_give_byte_identical_artifacts_and_manifest_hashes(digits_checkpoint, run_cli, tmp_path):
    """Two builds from scratch: every ONNX and OpenVINO artifact identical byte for byte, the manifest's hashes
    equal."""
    runs = [tmp_path / "first", tmp_path / "second"]
    for run in runs:
        code, _, err = run_cli("build", digits_checkpoint, "-o", run, "--int8-format", "qdq", *NO_BENCH)
        assert code == 0, err
    artifacts = sorted(p.name for suffix in ("onnx", "xml", "bin") for p in runs[0].glob(f"*.{suffix}"))
    onnx = ["model-fp16.onnx", "model-fp32.onnx", "model-int8-qdq.onnx", "model-int8.onnx", "model.onnx"]
    ir = [f"model-{variant}.{suffix}" for variant in openvino_variants() for suffix in ("xml", "bin")]
    assert artifacts == sorted(onnx + ir)
    for name in artifacts:
        assert sha256_file(runs[0] / name) == sha256_file(runs[1] / name), name
    first, second = (json.loads((run / "manifest.json").read_text()) for run in runs)
    assert {n: a["sha256"] for n, a in first["artifacts"].items()} == {
        n: a["sha256"] for n, a in second["artifacts"].items()
    }
    assert {n: s["key"] for n, s in first["stages"].items()} == {n: s["key"] for n, s in second["stages"].items()}


def test_data_files_size_the_dynamic_dims_they_fix(tmp_path, run_cli):
    """A graph with a dynamic sequence dim needs no seq=N in --input when --data / --calibration fix it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"], axis=-1)],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [weight],
    )
    model = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), model)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((16, 5, 8)).astype(np.float32))
    code, _, err = run_cli("build", model, "--data", data, "-o", tmp_path / "run", "--batch-sizes", "1,4",
                           "--min-seconds", "0.05")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(sorted(v["latency"]) == ["1", "4"] for v in report["variants"])
    code, _, err = run_cli("quantize", model, "--int8", "--calibration", data, "-o", tmp_path / "q.onnx")
    assert code in (0, 1) and "no typical value" not in err, err
    assert (tmp_path / "q.onnx").is_file()


def _save_graph(path, nodes, inputs, output, initializers=()):
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, [output], list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    return path


@pytest.mark.parametrize("case", ["batchnorm-inputs", "fixed-gemm-with-c"])
def test_inputs_without_a_shared_batch_axis_build_verify_and_bench(tmp_path, run_cli, case):
    """A BatchNorm whose scale/mean/var are inputs of shape [C] beside x [N, C, H, W], and a fixed-shape Gemm
    whose C input is [4] beside A [1, 8]: the unbatched inputs are fed whole to every call (was exit 70)."""
    from onnx import TensorProto, helper, numpy_helper

    value = helper.make_tensor_value_info
    if case == "batchnorm-inputs":
        names = ["scale", "bias", "mean", "var"]
        node = helper.make_node("BatchNormalization", ["x", *names], ["y"])
        inputs = [value("x", TensorProto.FLOAT, ["N", 3, 4, 4])] + [value(n, TensorProto.FLOAT, [3]) for n in names]
        model = _save_graph(tmp_path / "bn.onnx", [node], inputs, value("y", TensorProto.FLOAT, ["N", 3, 4, 4]))
    else:
        weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "b")
        node = helper.make_node("Gemm", ["a", "b", "c"], ["y"])
        inputs = [value("a", TensorProto.FLOAT, [1, 8]), value("c", TensorProto.FLOAT, [4])]
        model = _save_graph(tmp_path / "gemm.onnx", [node], inputs, value("y", TensorProto.FLOAT, [1, 4]), [weight])
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", "--batch-sizes", "1,4", "--min-seconds", "0.05",
                           "--no-int8", "--no-fp16")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["samples"] >= 1 and all(v["latency"] for v in report["variants"])
    assert "internal error" not in err
