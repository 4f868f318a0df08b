"""Pipeline files: the example runs, and schema errors name the file, line and key before any work."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from deployopt.errors import InputFileError, UsageError
from deployopt.flow.pipeline import TrainStep, load_pipeline, to_yaml
from tests.conftest import needs_torchvision, openvino_variants

EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture
def workspace(tmp_path, digits_checkpoint):
    """A copy of the repository layout the examples expect: pipelines/ beside deployopt-out/."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "deployopt-out").mkdir()
    shutil.copy(digits_checkpoint, tmp_path / "deployopt-out" / "digits-cnn.pt")
    return tmp_path


def test_digits_example_runs(workspace, run_cli):
    pipeline = workspace / "pipelines" / "digits.yaml"
    shutil.copy(EXAMPLES / "digits.yaml", pipeline)
    code, out, err = run_cli("run", pipeline, "--set", "build.skip_bench=true")
    assert code == 0, err
    assert "onnx-fp32" in out
    assert (workspace / "deployopt-out" / "digits-cnn-pipeline" / "report.json").is_file()


def _torchvision_weights(workspace, name: str) -> None:
    """Seeded random weights (no model hub here) and generated calibration images, where the examples look."""
    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(name).eval().state_dict(), workspace / "deployopt-out" / f"{name}.pth")
    images = np.random.default_rng(0).standard_normal((16, 3, 224, 224), dtype=np.float32)
    np.savez(workspace / "deployopt-out" / "calibration.npz", input=images)


def test_transformer_example_trains_then_builds_and_reuses_the_training(workspace, run_cli):
    shutil.copy(EXAMPLES / "transformer.yaml", workspace / "pipelines")
    args = ("run", workspace / "pipelines" / "transformer.yaml", "--set", "build.skip_bench=true")
    code, _, err = run_cli(*args, "--set", "train.epochs=8")
    assert code == 0, err
    run_dir = workspace / "deployopt-out" / "tiny-text-transformer-pipeline"
    report = json.loads((run_dir / "report.json").read_text())
    int8_step = next(s for s in report["stages"] if s["stage"] == "int8")
    assert int8_step["summary"].startswith("dynamic quantization")
    assert Path(report["variants"][0]["path"]).resolve() == (run_dir / "tiny-text-transformer.pt").resolve()
    trained = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]
    assert trained["details"]["epochs"] == 8 and trained["details"]["test_accuracy"] > 60
    code, _, err = run_cli(*args, "--set", "train.epochs=8")
    assert code == 0, err
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]["started"] == trained["started"]


def test_distillation_example_trains_a_student_from_the_demo_teacher(workspace, run_cli):
    shutil.copy(EXAMPLES / "digits-distill.yaml", workspace / "pipelines")
    pipeline = workspace / "pipelines" / "digits-distill.yaml"
    code, _, err = run_cli("run", pipeline, "--set", "build.skip_bench=true", "--set", "train.epochs=10")
    assert code == 0, err
    run_dir = workspace / "deployopt-out" / "digits-cnn-distilled"
    trained = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]
    assert trained["details"]["teacher_macs"] >= 3 * trained["details"]["macs"]
    assert trained["details"]["augment"] == "crop:1,rotate:8" and "teacher" in trained["inputs"]
    assert (run_dir / "train" / "metrics.csv").is_file()


def test_train_step_reads_own_data_relative_to_the_file_and_retrains_when_it_changes(workspace, run_cli):
    import numpy as np

    from deployopt.models.digits import INPUT_NAME, load_digits_split

    inputs, labels = load_digits_split("train")
    data = workspace / "pipelines" / "mine.npz"
    np.savez(data, inputs=inputs[INPUT_NAME], labels=labels)
    pipeline = _pipeline(
        workspace,
        "train:\n  model: digits-cnn\n  dataset: mine.npz\n  epochs: 2\n"
        "build:\n  out: run\n  skip_bench: true\n  quantize:\n    make: []\n",
    )
    manifest = workspace / "pipelines" / "run" / "manifest.json"
    assert run_cli("run", pipeline)[0] == 0
    first = json.loads(manifest.read_text())["stages"]["train"]
    assert first["config"]["dataset"] == str(data) and "dataset" in first["inputs"]
    np.savez(data, inputs=inputs[INPUT_NAME][:500], labels=labels[:500])
    assert run_cli("run", pipeline)[0] == 0
    second = json.loads(manifest.read_text())["stages"]["train"]
    assert second["inputs"]["dataset"] != first["inputs"]["dataset"] and second["started"] != first["started"]


def test_a_pipeline_needs_exactly_one_model_source(workspace):
    path = _pipeline(workspace, "model: ../deployopt-out/digits-cnn.pt\ntrain:\n  model: digits-cnn\n")
    with pytest.raises(InputFileError, match="exactly one of 'model:'"):
        load_pipeline(path)


@pytest.mark.slow
@needs_torchvision
def test_resnet18_pruned_int8_example_runs(workspace, run_cli):
    _torchvision_weights(workspace, "resnet18")
    shutil.copy(EXAMPLES / "resnet18.yaml", workspace / "pipelines")
    # Random weights have no meaningful classes: the test checks the pipeline's mechanics, not accuracy.
    overrides = ["--set", "build.skip_bench=true", "--set", "build.verify.budget.min_top1_agreement=0"]
    code, _, err = run_cli("run", workspace / "pipelines" / "resnet18.yaml", *overrides)
    assert code == 0, err
    report = json.loads((workspace / "deployopt-out" / "resnet18-pipeline" / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names == ["pytorch", "pytorch-pruned", "onnx-fp32", "onnx-int8", *openvino_variants("int8")]
    assert "channels 0.3" in next(s for s in report["stages"] if s["stage"] == "prune")["summary"]


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT's Python package is not installed")
@needs_torchvision
def test_resnet50_tensorrt_example_runs(workspace, run_cli):
    _torchvision_weights(workspace, "resnet50")
    shutil.copy(EXAMPLES / "resnet50-tensorrt.yaml", workspace / "pipelines")
    code, _, err = run_cli("run", workspace / "pipelines" / "resnet50-tensorrt.yaml", "--set", "build.bench.repeats=1")
    assert code == 0, err


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_pipelines_match_the_schema(workspace, example):
    """Every example parses against the current schema (the files it names exist only as placeholders here)."""
    for name in ("resnet18.pth", "resnet50.pth", "calibration.npz"):
        (workspace / "deployopt-out" / name).write_bytes(b"placeholder")
    shutil.copy(EXAMPLES / example, workspace / "pipelines")
    source, config = load_pipeline(workspace / "pipelines" / example)
    assert isinstance(source, TrainStep) or source.exists()
    assert config.out is not None


def _pipeline(workspace, text):
    path = workspace / "pipelines" / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("model: ../deployopt-out/digits-cnn.pt\nbuild:\n  bench:\n    batchsizes: [1]\n", 4, "build.bench.batchsizes"),
        ("model: ../deployopt-out/digits-cnn.pt\nbuild:\n  bench:\n    repeats: many\n", 4, "build.bench.repeats"),
        ("model: ../deployopt-out/missing.pt\n", 1, "model"),
        ("model: ../deployopt-out/digits-cnn.pt\nbuild:\n  verify:\n    data: nope.npz\n", 4, "build.verify.data"),
    ],
)
def test_schema_errors_name_file_line_and_key(workspace, text, line, key):
    path = _pipeline(workspace, text)
    with pytest.raises(InputFileError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: key '{key}'"), message


def test_invalid_yaml_names_the_line(workspace):
    path = _pipeline(workspace, "model: [unclosed\n")
    with pytest.raises(InputFileError, match=r"p\.yaml:\d+: not valid YAML"):
        load_pipeline(path)


def test_overrides_and_relative_paths(workspace):
    path = _pipeline(workspace, "model: ../deployopt-out/digits-cnn.pt\nbuild:\n  out: ../run\n")
    model, config = load_pipeline(path, ["build.bench.batch_sizes=[2, 4]", "build.force=true"])
    assert model == workspace / "pipelines" / ".." / "deployopt-out" / "digits-cnn.pt"
    assert config.bench.batch_sizes == (2, 4) and config.force is True
    assert config.out == workspace / "pipelines" / ".." / "run"
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        load_pipeline(path, ["build.force"])


def test_save_pipeline_round_trips_a_cli_run(digits_checkpoint, tmp_path, run_cli):
    saved = tmp_path / "saved.yaml"
    code, _, err = run_cli(
        "build",
        digits_checkpoint,
        "-o",
        tmp_path / "run",
        "--batch-sizes",
        "1,4",
        "--min-cosine",
        "0.99",
        "--no-bench",
        "--save-pipeline",
        saved,
    )
    assert code == 0, err
    model, config = load_pipeline(saved)
    assert model == digits_checkpoint.resolve()
    assert config.bench.batch_sizes == (1, 4) and config.verify.budget.min_cosine == 0.99 and config.skip_bench
    assert config.out == (tmp_path / "run").resolve()
    assert to_yaml(model, config) == saved.read_text()
