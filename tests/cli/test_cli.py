"""The command line as a user meets it: help without torch, documented exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployopt.errors import EXIT_CODES
from tests.conftest import DIGITS_INPUT


def _deployopt(*args, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "deployopt", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("» ")]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("deployopt: error: ")
    return lines[0]


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys; from deployopt.cli import cli; import click\n"
        "for args in (['--help'], ['build', '--help'], ['--version']):\n"
        "    try: cli.main(args=args, prog_name='deployopt', standalone_mode=False)\n"
        "    except click.exceptions.Exit: pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'tensorrt') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Usage: deployopt build" in result.stdout and "version 0.1.0" in result.stdout


def test_exit_codes_are_listed(run_cli):
    code, out, _ = run_cli("exit-codes")
    assert code == 0
    for number in EXIT_CODES:
        assert f"{number:>4}  " in out
    code, out, _ = run_cli("exit-codes", "--json")
    assert code == 0 and set(json.loads(out)) == {str(n) for n in EXIT_CODES}


@pytest.mark.parametrize("doc", ["docs/reference/exit-codes.md", "docs/ci.md"])
def test_every_exit_code_is_documented(doc):
    text = (Path(__file__).resolve().parents[2] / doc).read_text(encoding="utf-8")
    for number in EXIT_CODES:
        assert f"\n| {number} | " in text, f"{doc} does not document exit code {number}"


@pytest.mark.parametrize(
    ("make", "exit_code", "message"),
    [
        (lambda d: d / "missing.pt", 3, "model file not found"),
        (lambda d: _write(d / "empty.pt", b""), 3, "is empty"),
        (lambda d: _write(d / "random.pt", os.urandom(2048)), 3, "not a readable model"),
        (lambda d: _write(d / "pickle.pt", b"\x80\x02" + os.urandom(2048)), 3, "not a readable model"),
        (lambda d: d, 3, "is a directory"),
        (lambda d: _write(d / "model.xyz", b"plain text\n"), 3, "unrecognised model format"),
    ],
)
def test_bad_model_files_in_a_real_process(tmp_path, make, exit_code, message):
    path = make(tmp_path)
    result = _deployopt("build", path, "-o", tmp_path / "out")
    assert result.returncode == exit_code
    line = _one_error_line(result.stderr)
    assert message in line and str(path) in line


def test_debug_shows_the_traceback(tmp_path):
    result = _deployopt("--debug", "build", tmp_path / "missing.pt")
    assert result.returncode == 3 and "Traceback" in result.stderr


def test_truncated_model(digits_checkpoint, tmp_path, run_cli):
    truncated = _write(tmp_path / "cut.pt", digits_checkpoint.read_bytes()[:20000])
    code, _, err = run_cli("build", truncated, "-o", tmp_path / "out")
    assert code == 3 and "truncated or corrupt" in _one_error_line(err)


@pytest.mark.parametrize(
    ("spec", "exit_code", "message"),
    [
        ("input:batch,3,8,8", 2, "check the --input shapes"),
        ("input:batch,1,8,8:int64", 2, "check the --input shapes"),
        ("input:batch,,8", 2, "empty dimension"),
        ("input:batch,1,8,8:complex", 2, "unknown dtype"),
    ],
)
def test_wrong_input_signature(digits_checkpoint, tmp_path, run_cli, spec, exit_code, message):
    code, _, err = run_cli("build", digits_checkpoint, "--input", spec, "-o", tmp_path / "out", "--no-bench")
    assert code == exit_code
    assert message in _one_error_line(err)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 1, 8, 8), np.float64), "dtype float64 but the model expects float32"),
        (np.zeros((4, 1, 9, 9), np.float32), "shape [4, 1, 9, 9]"),
    ],
)
def test_data_file_not_matching(digits_checkpoint, tmp_path, run_cli, array, message):
    data = tmp_path / "data.npz"
    np.savez(data, input=array)
    code, _, err = run_cli("build", digits_checkpoint, "--data", data, "-o", tmp_path / "out", "--no-bench")
    assert code == 3
    line = _one_error_line(err)
    assert message in line and str(data) in line


def test_missing_data_file(digits_checkpoint, tmp_path, run_cli):
    code, _, err = run_cli("verify", digits_checkpoint, digits_checkpoint, "--data", tmp_path / "nope.npz")
    assert code == 3 and "data file not found" in _one_error_line(err)


def test_export_failure_names_the_operator(tmp_path, run_cli):
    import torch

    from tests.stages.test_export import _UsesCustomOp

    model = tmp_path / "custom.pt"
    torch.save(_UsesCustomOp(), model)
    code, _, err = run_cli("build", model, "--trust-pickle", "--input", "x:batch,4", "-o", tmp_path / "out")
    assert code == 4
    assert "unsupported operator deployopt_test::mystery" in _one_error_line(err)
    assert not list((tmp_path / "out").glob("*.onnx"))  # nothing half-written is left


def test_pickle_without_trust(digits_pickled, tmp_path, run_cli):
    code, _, err = run_cli("build", digits_pickled, "-o", tmp_path / "out")
    assert code == 3 and "--trust-pickle" in _one_error_line(err)


def test_out_of_range_option_is_a_usage_error(digits_checkpoint, tmp_path, run_cli):
    code, _, err = run_cli("build", digits_checkpoint, "--opset", "99", "-o", tmp_path / "out")
    assert code == 2 and "opset" in err and "Traceback" not in err
    code, _, err = run_cli("bench", digits_checkpoint, "--batch-sizes", "0")
    assert code == 2 and "expected positive integers" in err


def test_verify_verb_passes_and_fails(digits_checkpoint, digits_onnx, run_cli):
    code, out, err = run_cli("verify", digits_checkpoint, digits_onnx)
    assert code == 0, err
    assert "360 samples from dataset:digits/test" in out and "top-1 agreement 100.00%" in out
    code, _, err = run_cli("verify", digits_checkpoint, digits_onnx, "--max-abs-error", "0")
    assert code == 1 and "FAIL output: max_abs_error" in err


def test_verify_with_generated_inputs_and_json(digits_torchscript, digits_onnx, run_cli):
    import json

    code, out, _ = run_cli(
        "verify", digits_torchscript, digits_onnx, "--input", DIGITS_INPUT, "--samples", "20", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["passed"] and result["samples"] == 20 and result["data"].startswith("generated")


def test_export_and_optimize_verbs_write_atomically(digits_checkpoint, tmp_path, run_cli):
    exported, optimized = tmp_path / "m.onnx", tmp_path / "m-opt.onnx"
    code, out, _ = run_cli("export", digits_checkpoint, "-o", exported)
    assert code == 0 and "dynamo exporter" in out and exported.is_file()
    code, out, _ = run_cli("optimize", exported, "-o", optimized)
    assert code == 0 and "nodes" in out and optimized.is_file()
    assert not list(tmp_path.glob(".*partial"))
    code, _, err = run_cli("optimize", exported, "-o", exported)
    assert code == 2 and "overwrite the input" in err


def test_bench_verb_table_and_json(digits_checkpoint, digits_onnx, run_cli):
    import json

    code, out, _ = run_cli("bench", digits_checkpoint, digits_onnx, "--batch-sizes", "1,4", "--threads", "1", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {(r["variant"], r["batch"]) for r in rows} == {
        (digits_checkpoint.name, 1),
        (digits_checkpoint.name, 4),
        (digits_onnx.name, 1),
        (digits_onnx.name, 4),
    }


def test_demo_command_trains_builds_and_reports(tmp_path):
    """The README's main job, exactly as a new user runs it (in a fresh process, benchmarks included)."""
    result = _deployopt("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "onnx-fp32" in result.stdout and "PASS" in result.stderr
    run = tmp_path / "deployopt-out" / "digits-cnn"
    assert (run / "report.md").is_file() and (run / "manifest.json").is_file()
    again = _deployopt("demo", "--no-bench", cwd=tmp_path)  # second time: no training, cached stages
    assert again.returncode == 0 and "using the trained checkpoint" in again.stderr


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_inspect_describes_onnx_and_checkpoints(digits_onnx, digits_checkpoint, run_cli):
    code, out, _ = run_cli("inspect", digits_onnx, "--json")
    info = json.loads(out)
    assert code == 0 and info["kind"] == "onnx" and info["precision"] == "fp32"
    assert info["opset"] == 18 and info["ir_version"] >= 7 and info["external_data"] == [] and info["op_counts"]["Conv"]
    assert info["signature"][0]["name"] == "input"
    code, out, _ = run_cli("inspect", digits_checkpoint)
    assert code == 0 and "checkpoint" in out and "input      input:batch,1,8,8:float32" in out
    code, _, err = run_cli("inspect", "/nonexistent/model.onnx")
    assert code == 3 and err.count("\n") == 1


def test_input_contradicting_an_onnx_graph_is_a_usage_error(digits_onnx, run_cli, tmp_path):
    for verb in (["build", "-o", str(tmp_path / "run")], ["quantize", "--int8", "-o", str(tmp_path / "q.onnx")]):
        code, _, err = run_cli(verb[0], digits_onnx, *verb[1:], "--input", "input:batch,1,16,16")
        line = _one_error_line(err)
        assert code == 2 and "contradicts the model's input input:batch,1,8,8:float32" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "q.onnx").exists()


def _external_data_model(folder: Path, location: str) -> Path:
    """A MatMul whose weight lives in an external-data file the graph names as ``location``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    path = folder / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="ext.data", size_threshold=0)
    if location != "ext.data":
        model = onnx.load(path, load_external_data=False)
        for entry in model.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../../etc/passwd", "points to external data outside the model's folder"),
        ("missing.data", "needs external data file missing.data, which is missing"),
    ],
)
def test_bad_external_data_is_refused_before_any_stage(tmp_path, run_cli, location, message):
    model = _external_data_model(tmp_path, location)
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", "--no-bench")
    assert code == 3 and message in _one_error_line(err)
    assert "» " not in err and not (tmp_path / "run").exists()  # refused up front: no stage ran, nothing written


def test_truncated_external_data_is_refused(tmp_path, run_cli):
    model = _external_data_model(tmp_path, "ext.data")
    data = tmp_path / "ext.data"
    data.write_bytes(data.read_bytes()[:10])
    code, _, err = run_cli("build", model, "-o", tmp_path / "run", "--no-bench")
    assert code == 3 and "shorter than tensor 'w' needs" in _one_error_line(err)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "is not a readable .npz/.npy data file"),
        (lambda p: np.savez(p, other=np.zeros((2, 1, 8, 8), np.float32)), "has no array for input(s) ['input']"),
    ],
)
def test_bad_data_is_refused_before_any_stage(digits_onnx, tmp_path, run_cli, write, message):
    data = tmp_path / "data.npz"
    write(data)
    code, _, err = run_cli("build", digits_onnx, "--data", data, "-o", tmp_path / "run", "--no-bench")
    assert code == 3 and message in _one_error_line(err)
    assert "» " not in err and not (tmp_path / "run").exists()


def test_arch_on_a_model_that_carries_its_own_graph_is_refused(digits_onnx, tmp_path, run_cli):
    code, _, err = run_cli("build", digits_onnx, "--arch", "resnet", "-o", tmp_path / "run")
    assert code == 2 and "carries its own model" in _one_error_line(err)


def test_unwritable_run_directory_is_a_usage_error(digits_onnx, tmp_path, run_cli):
    blocker = _write(tmp_path / "file", b"x")
    code, _, err = run_cli("build", digits_onnx, "-o", blocker / "run", "--no-bench")
    assert code == 2 and "cannot create the run directory" in _one_error_line(err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "m.onnx", "--int8"], "deployopt quantize: Missing option '-o' / '--out'."),
        (["build", "m.onnx", "--frob"], "deployopt build: No such option '--frob'"),
        (["nosuchverb"], "No such command 'nosuchverb'"),
    ],
)
def test_click_usage_errors_are_one_line(run_cli, args, message):
    code, _, err = run_cli(*args)
    line = _one_error_line(err)
    assert code == 2 and message in line and "--help" in line


def test_bare_state_dict_asks_for_its_architecture_and_inputs(tmp_path, run_cli):
    """facenet-pytorch ships its MTCNN weights so: the refusal names both things a state_dict lacks."""
    import torch

    weights = tmp_path / "pnet.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), weights)
    code, _, err = run_cli("build", weights, "-o", tmp_path / "run")
    line = _one_error_line(err)
    assert code == 3 and "a state_dict holds weights only" in line and "--arch" in line and "--input" in line


def test_export_runs_the_model_on_real_inputs_with_data(tmp_path, run_cli):
    """An embedding of 10 tokens: generated ids (0-99) fail inside the model; --data ids export it."""
    import torch

    torch.manual_seed(0)
    model = tmp_path / "embed.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.ReLU())), model)
    args = ["export", model, "--input", "ids:batch,3:int64", "-o", tmp_path / "embed.onnx"]
    code, _, err = run_cli(*args)
    assert code == 2 and "the model fails on inputs of its signature" in _one_error_line(err)
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.array([[1, 2, 3], [4, 5, 9]], np.int64))
    code, out, err = run_cli(*args, "--data", data)
    assert code == 0, err
    assert "exported with the torchscript exporter" in out and (tmp_path / "embed.onnx").exists()
