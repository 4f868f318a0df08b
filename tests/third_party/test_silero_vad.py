"""Real pretrained third-party models that ship inside a PyPI package (silero-vad, in the test extra): the
plainest command a new user types, and what each model needs. The full corpus is benchmarks/corpus.py."""

import importlib.resources
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

silero_vad = pytest.importorskip("silero_vad", reason="silero-vad (the test extra) is not installed")
DATA = importlib.resources.files("silero_vad").joinpath("data")


@pytest.fixture
def model(tmp_path):
    """A copy of one of the package's model files (inputs are never modified, but the package stays clean)."""

    def copy(name: str):
        target = tmp_path / name
        shutil.copyfile(str(DATA.joinpath(name)), target)
        return target

    return copy


def test_silero_vad_onnx_builds_with_the_plainest_command(model, tmp_path, run_cli):
    """LSTM inside If branches, a scalar int64 `sr`, dims declared as 0: builds, verifies, skips honestly."""
    path = model("silero_vad.onnx")
    before = path.read_bytes()
    code, _, err = run_cli("build", path, "-o", tmp_path / "run", "--no-bench")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["passed"] and {v["name"] for v in report["variants"]} >= {"onnx-original", "onnx-fp32"}
    fp32 = next(v for v in report["variants"] if v["name"] == "onnx-fp32")
    assert fp32["verify"]["samples"] > 1 and all(o["cosine"] > 0.9999 for o in fp32["verify"]["outputs"])
    notes = " ".join(report["notes"])
    assert "fp16 skipped" in notes and "int8 skipped" in notes  # each with its reason, never silently
    assert path.read_bytes() == before


def test_silero_vad_half_needs_its_sequence_length(model, tmp_path, run_cli):
    """The `half` graph (fp32 weights, despite its name) takes `input[batch, sequence]` and `state[2, batch,
    128]`; `sequence` must be 512 samples (16 kHz): generated inputs of the default 128 fail inside the model,
    the refusal asks for real inputs on one line (ORT's own log line is not printed), and naming the size for
    one input is enough."""
    path = model("silero_vad_half.onnx")
    plain = subprocess.run(  # a real process: ORT logs to file descriptor 2, which capsys does not see
        [sys.executable, "-m", "deployopt", "build", str(path), "-o", str(tmp_path / "plain"), "--no-bench"],
        capture_output=True,
        text=True,
        check=False,
    )
    refusal = [line for line in plain.stderr.splitlines() if line.strip() and not line.startswith("» ")]
    assert plain.returncode == 2 and len(refusal) == 1, plain.stderr
    assert "the model fails on generated inputs" in refusal[0] and "--data" in refusal[0]
    code, _, err = run_cli("build", path, "--input", "input:batch,sequence=512", "-o", tmp_path / "sized", "--no-bench")
    assert code == 0, err
    report = json.loads((tmp_path / "sized" / "report.json").read_text())
    assert report["passed"] and report["variants"][0]["precision"] == "fp32"
    assert not any("the default" in note for note in report["notes"])  # sequence was sized by --input


def test_silero_vad_torchscript_names_its_non_tensor_argument(model, tmp_path, run_cli):
    """`forward(x, sr: int)`: no signature is saved (exit 3, asks for --input); with one, the int argument is
    named with the workaround (exit 4), not a failure inside the model."""
    path = model("silero_vad.jit")
    code, _, err = run_cli("build", path, "-o", tmp_path / "run", "--no-bench")
    assert code == 3 and "pass --input NAME:SHAPE" in err
    code, _, err = run_cli("build", path, "--input", "x:batch,512", "-o", tmp_path / "run", "--no-bench")
    assert code == 4 and "forward also takes sr: int" in err and "wrap the model" in err


def test_silero_vad_data_file_sizes_the_dynamic_dims(model, tmp_path, run_cli):
    """Real-shaped inputs in --data fix the unnamed dims; no default size is used, so no note about one."""
    path = model("silero_vad.onnx")
    rng = np.random.default_rng(0)
    data = tmp_path / "chunks.npz"
    audio = (0.1 * rng.standard_normal((4, 512))).astype(np.float32)
    np.savez(data, input=audio, state=np.zeros((2, 4, 128), np.float32), sr=np.array(16000, np.int64))
    code, _, err = run_cli("build", path, "--data", data, "-o", tmp_path / "run", "--no-bench")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["samples"] == 4 and not any("the default" in n for n in report["notes"])
