"""OpenVINO beside ONNX Runtime: the runner, IR as a model source, the build's OpenVINO variants, the
recommendation, ``--runtime``, the path without openvino, and bad IR files."""

import json
import os
import shutil
import sys

import numpy as np
import pytest

from deployopt.data.eval_data import generate_data
from deployopt.errors import BackendUnavailableError
from deployopt.runners import RunnerSpec, create_runner, spec_for_model

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'deployopt[openvino]')")

BRIEF_BENCH = ["--batch-sizes", "1,8", "--min-seconds", "0.2", "--warmup-seconds", "0.05"]
QUICK = ["--no-fp16", *BRIEF_BENCH]


@pytest.fixture(scope="module")
def digits_build(digits_checkpoint, tmp_path_factory, run_cli_module):
    """One build of the digits CNN with every runtime: ORT fp32/int8 and their OpenVINO twins, benchmarked."""
    out = tmp_path_factory.mktemp("ov") / "run"
    code, stdout, err = run_cli_module("build", digits_checkpoint, "-o", out, *QUICK)
    assert code == 0, err
    return out, json.loads((out / "report.json").read_text()), stdout


@pytest.fixture(scope="module")
def run_cli_module():
    """run_cli for module-scoped fixtures (capsys is per test): the CLI in-process, output captured by files."""
    import contextlib
    import io

    from deployopt.cli import main

    def invoke(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        return done.value.code, out.getvalue(), err.getvalue()

    return invoke


def test_openvino_runs_the_same_onnx_as_onnx_runtime(digits_onnx, digits_signature):
    feeds = generate_data(digits_signature, 5).inputs
    results = {}
    for runtime in ("onnxruntime", "openvino"):
        spec = spec_for_model(str(digits_onnx), threads=1, runtime=runtime)
        assert spec.backend == runtime
        with create_runner(spec) as runner:
            results[runtime] = runner.infer(feeds)
    assert list(results["openvino"]) == list(results["onnxruntime"]) == ["output"]
    np.testing.assert_allclose(results["openvino"]["output"], results["onnxruntime"]["output"], atol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_low_precision_runs_where_the_cpu_computes_in_it_and_is_refused_elsewhere(
    digits_onnx, digits_signature, precision
):
    """Through the build's own capability function: present, the model is compiled and runs in that precision;
    absent, the runner refuses in one line naming the CPU's flags instead of letting the plugin run another."""
    from deployopt.runners.openvino_runner import native_precision_problem

    problem = native_precision_problem(precision)
    spec = RunnerSpec("openvino", str(digits_onnx), precision=precision)
    if problem is None:
        feeds = generate_data(digits_signature, 4).inputs
        with create_runner(spec) as runner:
            assert runner.infer(feeds)["output"].shape == (4, 10)
            assert runner._compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == precision.replace("p", "")
    else:
        with pytest.raises(BackendUnavailableError, match=f"not {precision} as asked") as refused, create_runner(spec):
            pass
        assert problem in str(refused.value) and "flags:" in str(refused.value)


def test_build_makes_verifies_and_benchmarks_openvino_variants(digits_build):
    out, report, _ = digits_build
    variants = {v["name"]: v for v in report["variants"]}
    for name, precision in (("openvino-fp32", "fp32"), ("openvino-int8", "int8")):
        variant = variants[name]
        assert variant["runtime"] == "openvino" and variant["precision"] == precision and variant["passed"]
        assert variant["path"].endswith(f"model-{name}.xml") and (out / f"model-{name}.bin").is_file()
        assert set(variant["latency"]) == {"1", "8"}
        # the int8 IR is the search's own Q/DQ graph, so its numbers track the ORT int8 artifact's
        assert variant["verify"]["outputs"][0]["top1_agreement"] >= 0.98
    assert variants["onnx-fp32"]["runtime"] == "onnxruntime"
    steps = {s["stage"]: s["summary"] for s in report["stages"]}
    assert "FakeQuantize" in steps["openvino-int8"] and "FakeQuantize" not in steps["openvino-fp32"]


def test_ir_round_trip_keeps_the_signature_and_runs_as_a_model_source(digits_build, digits_checkpoint, run_cli):
    out, _, _ = digits_build
    ir = out / "model-openvino-fp32.xml"
    code, stdout, _ = run_cli("inspect", ir, "--json")
    described = json.loads(stdout)
    assert code == 0 and described["kind"] == "openvino-ir" and described["precision"] == "fp32"
    assert described["signature"] == json.loads((out / "manifest.json").read_text())["signature"]
    code, _, err = run_cli("verify", digits_checkpoint, ir)
    assert code == 0, err
    code, stdout, _ = run_cli("bench", out / "model-fp32.onnx", ir, "--batch-sizes", "2", "--min-seconds", "0.1")
    assert code == 0 and "model-openvino-fp32.xml" in stdout


def test_recommendation_is_the_fastest_passing_artifact_per_batch(digits_build):
    out, report, stdout = digits_build
    recommendations = {r["batch"]: r for r in report["recommendations"]}
    assert set(recommendations) == {1, 8}
    for batch, chosen in recommendations.items():
        measured = {
            v["name"]: v["latency"][str(batch)]["p50_ms"]
            for v in report["variants"]
            if v["role"] != "reference" and v["passed"]
        }
        fastest = min(measured, key=measured.get)
        # the fastest, or — when others are as fast within the noise of their rounds — the simplest of that tie
        assert chosen["variant"] == fastest or fastest in chosen["tied"]
        precisions = {v["name"]: v["precision"] for v in report["variants"]}
        order = ("fp32", "bf16", "fp16", "int8")
        assert all(order.index(precisions[chosen["variant"]]) <= order.index(precisions[t]) for t in chosen["tied"])
        assert chosen["p50_ms"] == measured[chosen["variant"]] and chosen["rounds"] >= 2
        p50 = measured[chosen["variant"]]
        assert chosen["speedups"]["onnx-fp32"] == pytest.approx(measured["onnx-fp32"] / p50, rel=1e-3)
        assert chosen["speedups"]["openvino-fp32"] == pytest.approx(measured["openvino-fp32"] / p50, rel=1e-3)
        assert chosen["path"] in chosen["load_code"]
    assert "recommended (fastest within budget, measured in this run):" in stdout
    lines = [f"batch {r['batch']}: {r['variant']} on " for r in report["recommendations"]]
    for document in ("report.md", "report.html"):
        assert all(line in (out / document).read_text() for line in lines), document
    assert stdout.rstrip().endswith(tuple(r["load_code"].splitlines()[-1] for r in report["recommendations"]))


def test_runtime_onnxruntime_builds_no_openvino_variant(digits_checkpoint, tmp_path, run_cli):
    code, _, err = run_cli(
        "build", digits_checkpoint, "-o", tmp_path / "run", "--no-int8", "--runtime", "onnxruntime", *QUICK
    )
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    assert not any(v["name"].startswith("openvino") for v in report["variants"])
    assert "openvino skipped: --runtime onnxruntime" in report["notes"]
    assert {r["runtime"] for r in report["recommendations"]} == {"onnxruntime"}


def test_tiny_transformer_runs_on_openvino(text_onnx, tmp_path, run_cli):
    """Token ids (int64), an attention mask and a dynamic sequence: the OpenVINO variants verify on real
    generated token batches, and --runtime openvino recommends only OpenVINO artifacts. fp16 is asked for: where
    OpenVINO's CPU plugin has no fp16 arithmetic the report says why there is no openvino-fp16."""
    from deployopt.runners.openvino_runner import cpu_capabilities

    code, _, err = run_cli(
        "build", text_onnx, "-o", tmp_path / "run", "--no-int8", "--runtime", "openvino", *BRIEF_BENCH
    )  # fmt: skip
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    assert report["variants"][0]["runtime"] == "onnxruntime"  # the ONNX original, the reference
    ov = next(v for v in report["variants"] if v["name"] == "openvino-fp32")
    assert ov["passed"] and ov["verify"]["outputs"][0]["cosine"] > 0.9999
    assert {r["runtime"] for r in report["recommendations"]} == {"openvino"}
    if "FP16" not in cpu_capabilities():
        assert any(n.startswith("openvino-fp16 not made: OpenVINO's CPU plugin") for n in report["notes"])


def test_without_openvino_the_build_says_what_it_skipped(
    digits_checkpoint, digits_onnx, tmp_path, run_cli, monkeypatch
):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--no-int8", "--no-bench", "--no-fp16")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    assert not any(v["name"].startswith("openvino") for v in report["variants"])
    assert any(n.startswith("openvino skipped: openvino is not installed") for n in report["notes"])
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "r2", "--runtime", "openvino", "--no-bench")
    assert code == 5 and err.count("\n") == 1 and "pip install 'deployopt[openvino]'" in err
    code, _, err = run_cli("verify", digits_checkpoint, digits_onnx, "--runtime", "openvino")
    assert code == 5 and "openvino is not installed" in err


def test_bad_ir_files_are_one_line_each(digits_build, digits_checkpoint, tmp_path, run_cli):
    out, _, _ = digits_build
    xml, weights = out / "model-openvino-fp32.xml", out / "model-openvino-fp32.bin"

    def copy(name, xml_bytes=None, bin_bytes=None, link_bin=None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "m.xml").write_bytes(xml.read_bytes() if xml_bytes is None else xml_bytes)
        if link_bin is not None:
            os.symlink(link_bin, folder / "m.bin")
        elif bin_bytes is not False:
            (folder / "m.bin").write_bytes(weights.read_bytes() if bin_bytes is None else bin_bytes)
        return folder / "m.xml"

    outside = tmp_path / "elsewhere.bin"
    shutil.copyfile(weights, outside)
    cases = {
        "truncated xml": (copy("a", xml_bytes=xml.read_bytes()[:700]), "truncated or corrupt XML"),
        "truncated bin": (copy("b", bin_bytes=weights.read_bytes()[:100]), "(truncated); copy the .bin again"),
        "missing bin": (copy("c", bin_bytes=False), "its weights file m.bin is missing"),
        "bin outside": (copy("d", link_bin=outside), "points outside the model's folder"),
    }
    for case, (path, message) in cases.items():
        before = {p: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
        code, _, err = run_cli("verify", digits_checkpoint, path)
        assert code == 3 and message in err and err.count("\n") == 1 and str(path) in err, case
        assert before == {p: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}, case
    code, _, err = run_cli("build", xml, "-o", tmp_path / "run")
    assert code == 3 and "an OpenVINO IR is already a deployable artifact" in err


def test_doctor_lists_openvino_and_the_cpu(run_cli):
    """Content, not order (OpenVINO lists BF16 first on AMX); the bf16/fp16 lines say what the build decides on
    this CPU, through the build's own capability function — present or absent, each side has its line."""
    from deployopt.platform.cpu import isa_flags
    from deployopt.runners.openvino_runner import NATIVE_PRECISIONS, cpu_capabilities, native_precision_problem

    code, out, _ = run_cli("doctor")
    assert code == 0
    lines = {line[4:].split()[0]: line for line in out.splitlines()}
    listed = lines["openvino"].split("CPU runs: ", 1)[1].split(", ")
    assert lines["openvino"].startswith("ok") and "FP32" in listed and sorted(listed) == sorted(cpu_capabilities())
    assert lines["cpu"].startswith("ok") and all(flag in lines["cpu"] for flag in isa_flags())
    for precision in NATIVE_PRECISIONS:
        line, problem = lines[f"openvino-{precision}"], native_precision_problem(precision)
        if problem is None:
            assert line.startswith("ok") and f"build makes openvino-{precision}" in line
        else:
            assert line.startswith("no") and "flags:" in line and problem in line


def test_a_graph_openvino_cannot_convert_is_a_note_not_a_failed_build(tmp_path, run_cli):
    """OpenVINO is an optional second runtime: an operator its ONNX frontend lacks (Det) leaves the ONNX
    Runtime artifacts and the exit code alone, and the report names the operator."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"])],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    model = tmp_path / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), model)
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", "--no-int8", "--no-fp16", "--no-bench")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    assert [v["name"] for v in report["variants"]] == ["onnx-original", "onnx-fp32"]
    (note,) = [n for n in report["notes"] if n.startswith("openvino-fp32 not made")]
    assert "OpenVINO cannot convert this graph (No conversion rule found for operations: Det-17)" in note


def test_nncf_candidate_is_judged_and_kept_when_it_passes(digits_build):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'deployopt[nncf]')")
    _, report, stdout = digits_build
    assert "Statistics collection" not in stdout  # NNCF's progress bars would corrupt --json on stdout
    nncf = next(v for v in report["variants"] if v["name"] == "openvino-int8-nncf")
    assert nncf["precision"] == "int8" and nncf["passed"] and nncf["runtime"] == "openvino"
    summary = next(s["summary"] for s in report["stages"] if s["stage"] == "openvino-int8-nncf")
    # NNCF's default int8, or — where that misses on this CPU — its accuracy control judged by the build's judge
    assert "int8 of model-fp32.onnx" in summary and "NNCF" in summary and "FakeQuantize" in summary


DAMAGED_IR = "tests.fakes.child_patches:damaged_ir"


def test_nncf_accuracy_control_restores_a_default_int8_that_misses(digits_checkpoint, tmp_path, run_cli, child_patches):
    """NNCF's default int8 misses (here: handed a damaged graph): its quantize_with_accuracy_control, validated by
    the build's judge, makes the candidate from the original graph instead; both verdicts are in the report."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'deployopt[nncf]')")
    child_patches({"deployopt.stages.openvino.nncf.nncf_quantize": DAMAGED_IR})
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--no-fp16", "--no-bench")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    kept = next(v for v in report["variants"] if v["name"] == "openvino-int8-nncf")
    assert kept["passed"] and kept["verify"]["outputs"][0]["cosine"] >= 0.995
    details = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["openvino-int8-nncf"]["details"]
    assert details["method"] == "nncf accuracy control" and details["fake_quantize"] > 0
    assert not details["nncf_default"]["passed"] and details["nncf_default"]["verify"]["failures"]
    summary = next(s["summary"] for s in report["stages"] if s["stage"] == "openvino-int8-nncf")
    assert "NNCF's default int8 missed (output: cosine" in summary and "accuracy control" in summary


def test_an_openvino_candidate_that_misses_its_budget_is_not_kept(digits_checkpoint, tmp_path, run_cli, child_patches):
    """A candidate whose numbers are wrong (NNCF's default and its accuracy control both handed a damaged graph) is
    measured by the judge, reported with its failing metric and not kept: not benchmarked, never recommended,
    and the build passes; asked for by name (``--int8``) with no other int8 artifact passing, it fails the
    build; ``--strict`` fails it on any miss."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'deployopt[nncf]')")
    nncf = "deployopt.stages.openvino.nncf"
    child_patches({f"{nncf}.nncf_quantize": DAMAGED_IR, f"{nncf}.nncf_accuracy_control": DAMAGED_IR})
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--no-fp16", "--no-bench")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    nncf_variant = next(v for v in report["variants"] if v["name"] == "openvino-int8-nncf")
    assert nncf_variant["role"] == "not kept" and not nncf_variant["passed"]
    (note,) = [n for n in report["notes"] if n.startswith("openvino-int8-nncf not kept")]
    assert "misses the int8 budget" in note and "below budget" in note
    assert "PASS: every kept artifact is within its budget (not kept: openvino-int8-nncf)" in err
    junit = tmp_path / "junit.xml"
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--no-fp16", "--no-bench", "--strict")
    assert code == 1 and "FAIL openvino-int8-nncf: output: cosine" in err
    code, _, err = run_cli(
        "build", digits_checkpoint, "-o", tmp_path / "run", "--no-fp16", "--no-bench", "--junit", junit
    )
    assert code == 0 and '<skipped message="not kept: output: cosine' in junit.read_text()


def test_bench_runs_an_onnx_model_on_the_runtime_asked_for(digits_onnx, run_cli, monkeypatch):
    import deployopt.api

    seen = []
    real_bench = deployopt.api.bench

    def recording(variants, *args, **kwargs):
        seen.extend(v.spec.backend for v in variants)
        return real_bench(variants, *args, **kwargs)

    monkeypatch.setattr(deployopt.api, "bench", recording)
    for runtime in ("openvino", "onnxruntime"):
        code, out, _ = run_cli("bench", digits_onnx, "--runtime", runtime, "--batch-sizes", "2", "--min-seconds", "0.1")
        assert code == 0 and "digits.onnx" in out
    assert seen == ["openvino", "onnxruntime"]


def test_nncf_failing_on_a_graph_is_a_note(digits_checkpoint, tmp_path, run_cli, child_patches):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'deployopt[nncf]')")
    child_patches({"nncf.quantize": "tests.fakes.child_patches:nncf_refusing"})
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run", "--no-fp16", "--no-bench")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, err
    (note,) = [n for n in report["notes"] if n.startswith("openvino-int8-nncf not made")]
    assert "NNCF cannot quantize this graph (unsupported pattern)" in note
