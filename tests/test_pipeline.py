"""Pipeline files: the example runs, and schema errors name the file, line and key before any work."""

import shutil
from pathlib import Path

import pytest

from deployopt.errors import InputFileError, UsageError
from deployopt.pipeline import load_pipeline, to_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "pipelines"


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
        "--batch",
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
