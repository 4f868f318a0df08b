"""Every runtime candidate in its own process: a crash of OpenVINO / ONNX Runtime (a real SIGSEGV of the
candidate's process, injected by tests.fakes.child_patches) is that candidate's failure, named with the signal and
the last line the runtime printed, and the build goes on; nothing half-written stays in the run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deployopt.errors import InputFileError, RuntimeCrashError
from deployopt.isolation import run_isolated
from tests.fakes import child_patches as stand_ins

QUICK = ("--batch-sizes", "1", "--min-seconds", "0.05", "--warmup-seconds", "0", "--max-repeats", "1")


def leftovers(run_dir):
    """What an interrupted or crashed run must never leave: the lock, temporaries, scratch folders."""
    return sorted(p.name for p in run_dir.iterdir() if p.name.startswith("."))


def test_run_isolated_returns_relays_progress_and_raises_the_childs_refusal(child_patches, tmp_path):
    child_patches({})  # the tests package on the children's path
    seen = []
    value = run_isolated(
        "job", stand_ins.reports_and_returns, {"progress": _child_progress(), "value": [1, 2]}, seen.append
    )
    assert value == [1, 2] and seen == ["halfway"]
    with pytest.raises(InputFileError, match=r"not a model; pass an \.onnx file"):
        run_isolated("job", stand_ins.refuses, {"path": "x.bin"}, seen.append)


def test_a_crashed_child_is_named_with_its_signal_and_last_words_and_leaves_no_scratch(child_patches, tmp_path):
    child_patches({})
    (tmp_path / ".kept-from-before").write_text("")
    with pytest.raises(RuntimeCrashError) as crash:
        run_isolated("openvino-int8", stand_ins.crashes_leaving_scratch, {"folder": tmp_path}, print, scratch=tmp_path)
    message = str(crash.value)
    assert message.startswith("openvino-int8: the runtime crashed (SIGSEGV) in its own process")
    assert message.endswith("its last output: fake runtime: segmentation fault in the middle of writing")
    assert leftovers(tmp_path) == [".kept-from-before"]


def _child_progress():
    from deployopt.isolation import child_progress

    return child_progress


def test_openvino_crashing_on_the_int8_graph_loses_only_that_candidate(
    digits_checkpoint, tmp_path, run_cli, child_patches
):
    """OpenVINO dies converting the int8 Q/DQ graph (as 2026.4 did on a real model): the build exits 0 with every
    other candidate judged, the note names the signal and OpenVINO's last line, and the run directory is clean."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'deployopt[openvino]')")
    child_patches({"deployopt.stages.openvino.make_ir": "tests.fakes.child_patches:make_ir_crashing_on_int8"})
    run = tmp_path / "run"
    code, _, err = run_cli("build", digits_checkpoint, "-o", run, "--no-fp16", "--no-bench")
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    names = {v["name"] for v in report["variants"]}
    assert {"onnx-fp32", "onnx-int8", "openvino-fp32"} <= names and "openvino-int8" not in names
    (note,) = [n for n in report["notes"] if n.startswith("openvino-int8 not made")]
    assert "the runtime crashed (SIGSEGV) in its own process" in note
    assert "fake runtime: segmentation fault converting model-int8-qdq.onnx" in note
    assert leftovers(run) == []


def test_a_runtime_crashing_on_an_artifact_in_verification_fails_its_verdict(
    digits_onnx, tmp_path, run_cli, child_patches
):
    """ONNX Runtime dies running the fp16 artifact in the final verification: a failing verdict that names the crash
    — not kept when deployopt tried fp16 on its own, a failed build (exit 1) when --fp16 asked for it."""
    child_patches({"deployopt.runners.create_runner": "tests.fakes.child_patches:runner_crashing_on_fp16"})
    common = ("--no-int8", "--runtime", "onnxruntime", "--no-bench")
    code, _, err = run_cli("build", digits_onnx, "-o", tmp_path / "run", *common)
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fp16 = next(v for v in report["variants"] if v["name"] == "onnx-fp16")
    assert fp16["role"] == "not kept"
    assert fp16["verify"]["failures"][0].startswith("crashed: verify onnx-fp16: the runtime crashed (SIGSEGV)")
    code, _, err = run_cli("build", digits_onnx, "-o", tmp_path / "run", *common, "--fp16")
    assert code == 1 and "FAIL onnx-fp16: crashed: verify onnx-fp16: the runtime crashed (SIGSEGV)" in err


def test_a_runtime_crashing_while_timed_leaves_the_artifact_out(digits_onnx, tmp_path, run_cli, child_patches):
    """The fp16 artifact verifies, then its runtime dies in the benchmark worker: it is not kept (a runtime that
    cannot run it in service), the note says why, and the recommendation is made from the others."""
    child_patches({"deployopt.runners.create_runner": "tests.fakes.child_patches:bench_worker_crashing_on_fp16"})
    code, _, err = run_cli(
        "build", digits_onnx, "-o", tmp_path / "run", "--no-int8", "--runtime", "onnxruntime", *QUICK
    )
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    fp16 = next(v for v in report["variants"] if v["name"] == "onnx-fp16")
    assert fp16["passed"] and fp16["role"] == "not kept" and not fp16["latency"]
    (note,) = [n for n in report["notes"] if n.startswith("onnx-fp16 not benchmarked")]
    assert "the runtime crashed (SIGSEGV) in its worker process" in note and note.endswith("not kept")
    assert all(r["variant"] != "onnx-fp16" for r in report["recommendations"])


def test_a_terminated_build_leaves_no_lock_and_no_partial_files(digits_onnx, tmp_path):
    """SIGTERM (a CI job cancelled) ends the build as Ctrl-C does: exit 130, no .lock, no .partial."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "deployopt", "build", str(digits_onnx), "-o", str(run), "--no-bench"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # wait until a stage is under way
        if "» fp16" in line or "» int8" in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert leftovers(run) == []


def test_the_lock_file_goes_with_the_run(digits_onnx, tmp_path, run_cli):
    code, _, err = run_cli("build", digits_onnx, "-o", tmp_path / "run", "--no-int8", "--no-fp16", "--no-bench")
    assert code == 0, err
    assert leftovers(tmp_path / "run") == [] and os.path.exists(tmp_path / "run" / "report.json")


def test_a_crash_in_the_builds_own_process_ends_with_one_line_and_exit_4(digits_onnx, tmp_path, child_patches):
    """What runs in deployopt's own process (the exporter, the graph optimiser, the original model) can crash too:
    the command still ends with a documented exit code and one line, never a bare 139."""
    child_patches({"deployopt.flow.build.inspect_source": "tests.fakes.child_patches:segfaulting"})
    command = [sys.executable, "-m", "deployopt", "build", str(digits_onnx), "-o", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "deployopt: error: the runtime crashed (SIGSEGV) in deployopt's own process, in the step named last above; "
        "rerun with --debug and report it"
    )
