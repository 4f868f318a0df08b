"""The benchmark harness: sane statistics, one worker process per variant, errors carried back."""

import html
import json
import os

import numpy as np
import pytest

from deployopt.errors import BackendUnavailableError
from deployopt.measure.bench import BenchConfig, BenchVariant, bench
from deployopt.runners import RunnerSpec

FAST = BenchConfig(batch_sizes=(1, 4), threads=1, warmup_seconds=0.0, min_iterations=5, min_seconds=0.05)


def test_measurements_are_consistent(digits_onnx, digits_signature):
    rows = bench([BenchVariant("onnx", RunnerSpec("onnxruntime", str(digits_onnx)))], digits_signature, FAST)
    assert [r.batch for r in rows] == [1, 4]
    for r in rows:
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.iterations >= 5 and r.throughput > 0 and r.peak_rss_mb > 10
        # throughput and latency describe the same calls: samples/s × mean latency is the batch that ran
        assert r.throughput * r.mean_ms / 1000 == pytest.approx(r.batch, rel=1e-9)


def test_each_variant_runs_in_its_own_process(digits_onnx, digits_checkpoint, digits_signature, monkeypatch):
    import deployopt.measure.bench as bench_module

    pids = []
    original = bench_module.subprocess.run

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        pids.append(args[0])
        return result

    monkeypatch.setattr(bench_module.subprocess, "run", spy)
    variants = [
        BenchVariant("torch", RunnerSpec("torch", str(digits_checkpoint))),
        BenchVariant("onnx", RunnerSpec("onnxruntime", str(digits_onnx))),
    ]
    rows = bench(variants, digits_signature, FAST.model_copy(update={"repeats": 2, "batch_sizes": (2,)}))
    assert len(pids) == 4  # 2 variants × 2 repeats, each a fresh worker
    assert {r.variant for r in rows} == {"torch", "onnx"} and all(r.repeats == 2 for r in rows)
    peak = {r.variant: r.peak_rss_mb for r in rows}
    assert peak["onnx"] < peak["torch"]  # each worker's own memory: the ONNX Runtime worker never loads torch
    assert os.getpid() not in pids


def test_worker_errors_keep_their_class(digits_onnx, digits_signature):
    spec = RunnerSpec("onnxruntime", str(digits_onnx), providers=("CUDAExecutionProvider",))
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        bench([BenchVariant("gpu", spec)], digits_signature, FAST)


def test_workers_import_the_installed_package_not_the_working_directory(
    digits_onnx, digits_signature, tmp_path, monkeypatch
):
    """Running inside a folder that has its own `deployopt/` (a source checkout, say) must not change the code."""
    shadow = tmp_path / "deployopt"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the shadow package was imported')\n")
    monkeypatch.chdir(tmp_path)
    rows = bench(
        [BenchVariant("onnx", RunnerSpec("onnxruntime", str(digits_onnx)))],
        digits_signature,
        FAST.model_copy(update={"batch_sizes": (1,)}),
    )
    assert rows[0].p50_ms > 0


def test_a_fixed_batch_model_is_measured_only_at_its_batch(tmp_path, run_cli):
    """A graph whose input is [1, 8] runs one sample per call: no row may claim batch 32."""
    import json

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), model)
    code, out, err = run_cli("bench", model, "--batch-sizes", "1,32", "--min-seconds", "0.05", "--json")
    assert code == 0, err
    assert [row["batch"] for row in json.loads(out)] == [1]
    assert "batch 32 not measured: the model's inputs have a fixed batch of 1" in err
    code, out, err = run_cli("build", model, "-o", tmp_path / "run", "--batch-sizes", "1,32", "--min-seconds", "0.05")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(set(v["latency"]) == {"1"} for v in report["variants"]), [
        v["latency"].keys() for v in report["variants"]
    ]
    for variant in report["variants"]:
        row = variant["latency"]["1"]
        assert row["batch"] == 1 and row["throughput"] * row["mean_ms"] / 1000 == pytest.approx(1, rel=1e-9)
    assert report["batches_not_measured"] == {"32": "the model's inputs have a fixed batch of 1"}
    reason = "n/a at batch 32: not measured, the model's inputs have a fixed batch of 1"
    for name, line in (("report.md", reason), ("report.html", html.escape(reason))):
        text = (tmp_path / "run" / name).read_text()
        assert line in text and "n/a" in text.split(line)[0], name  # the b32 cells say n/a, then why
    assert reason in out


def _lookup_table_model(path):
    """An embedding lookup of a 10-row table: only indices 0-9 are valid, so generated ids (0-99) fail."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    return path


def test_models_whose_input_values_matter_are_benchmarked_on_the_real_data(tmp_path, run_cli):
    model = _lookup_table_model(tmp_path / "lookup.onnx")
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.array([[1, 2, 3], [4, 5, 9]], np.int64))  # 2 real samples, cycled to batch 4
    fast = ["--batch-sizes", "1,4", "--min-seconds", "0.05"]
    code, _, err = run_cli("bench", model, *fast)
    assert code == 2 and "lookup.onnx: the model fails on generated inputs" in err and "--data" in err
    code, out, err = run_cli("bench", model, *fast, "--data", data, "--json")
    assert code == 0, err
    assert [row["batch"] for row in json.loads(out)] == [1, 4]
    code, _, err = run_cli("build", model, "--data", data, "-o", tmp_path / "run", *fast)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(set(v["latency"]) == {"1", "4"} for v in report["variants"])
    bench_step = next(s for s in report["stages"] if s["stage"] == "bench")
    assert f"on the inputs of {data}, cycled to each batch" in bench_step["summary"]
