"""Triton model repositories: every config.pbtxt field checked against the artifact it serves, parsed with
Triton's own ModelConfig schema (tritonclient), for ONNX Runtime, OpenVINO and (through the fake) TensorRT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from deployopt.serving.triton import TRITON_TYPES, TritonConfig, model_config
from tests.hf_models import needs_transformers
from tests.stages.test_engine import fake_trt  # noqa: F401  (the fixture)

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'deployopt[triton]')")
FAST_BENCH = ("--batch-sizes", "1,4", "--min-seconds", "0.05", "--warmup-seconds", "0", "--max-seconds", "2")


def _parse(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _artifact_io(path: Path, runtime: str) -> tuple[list, list]:
    """(name, dims, numpy dtype) of every input and output, read with the artifact's own runtime."""
    if runtime == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        ports = [model.inputs, model.outputs]
        return tuple(
            [(p.get_any_name(), [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()],
              str(p.get_element_type().to_dtype())) for p in group]
            for group in ports
        )  # fmt: skip
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}
    return tuple(
        [(v.name, [d if isinstance(d, int) else -1 for d in v.shape], dtypes[v.type]) for v in group]
        for group in (session.get_inputs(), session.get_outputs())
    )


def _check_against_artifact(folder: Path, variant: dict, report: dict) -> None:
    from tritonclient.grpc import model_config_pb2 as pb2

    config = _parse(folder / "config.pbtxt")
    runtime = variant["runtime"]
    model_file = folder / "1" / ("model.xml" if runtime == "openvino" else "model.onnx")
    assert model_file.read_bytes() == Path(variant["path"]).read_bytes()
    if runtime == "openvino":
        assert config.backend == "openvino" and (folder / "1" / "model.bin").is_file()
        expected = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(report["threads"])}
        if variant["inference_precision"] == "bf16":  # judged in bf16: the backend's own key for it
            expected["HINT_BF16"] = "YES"
    else:
        assert config.platform == "onnxruntime_onnx"
        expected = {
            "intra_op_thread_count": str(report["threads"]),
            "inter_op_thread_count": "1",
            "execution_mode": "0",
        }
    assert {k: v.string_value for k, v in config.parameters.items()} == expected
    assert config.name == folder.name and config.max_batch_size == max(report["batch_sizes"])
    assert list(config.dynamic_batching.preferred_batch_size) == [b for b in report["batch_sizes"] if b > 1]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, pb2.ModelInstanceGroup.KIND_CPU)]
    inputs, outputs = _artifact_io(model_file, runtime)
    for declared, actual in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == [name for name, _, _ in actual]
        for tensor, (_, dims, dtype) in zip(declared, actual, strict=True):
            assert dims[0] == -1 and list(tensor.dims) == dims[1:]  # batched: Triton adds the batch axis itself
            assert pb2.DataType.Name(tensor.data_type) == TRITON_TYPES[dtype]


@needs_transformers
@pytest.mark.slow
def test_build_writes_the_recommended_text_model_and_triton_writes_every_variant(
    run_cli, tiny_bert_classifier, tmp_path
):
    run, repo = tmp_path / "run", tmp_path / "repo"
    code, _, err = run_cli("build", tiny_bert_classifier, "-o", run, "--no-fp16", "--triton-repo", repo, *FAST_BENCH)
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    variants = {v["name"]: v for v in report["variants"]}
    recommended = max(report["recommendations"], key=lambda r: r["batch"])["variant"]
    assert [p.name for p in repo.iterdir()] == ["tiny-bert"]
    _check_against_artifact(repo / "tiny-bert", variants[recommended], report)
    assert any(note.startswith(f"triton: {repo / 'tiny-bert'} serves {recommended}") for note in report["notes"])
    inputs = _parse(repo / "tiny-bert" / "config.pbtxt").input
    assert [(t.name, list(t.dims)) for t in inputs] == [
        (n, [-1]) for n in ("input_ids", "attention_mask", "token_type_ids")
    ]

    code, _, err = run_cli("triton", run, repo, "--all")
    assert code == 0, err
    passing = [v for v in report["variants"] if v["role"] != "reference" and v["verify"]["passed"]]
    assert {p.name for p in repo.iterdir()} == {"tiny-bert"} | {f"tiny-bert-{v['name']}" for v in passing}
    for variant in passing:
        _check_against_artifact(repo / f"tiny-bert-{variant['name']}", variant, report)
        # an IR judged in f32 may run in bf16 under Triton (its backend has no f32 key): said, not hidden
        caveat = f"note: {variant['name']} was verified in f32; Triton's OpenVINO backend has no f32 setting"
        assert (caveat in err) == (variant["runtime"] == "openvino" and variant["inference_precision"] == "fp32")

    code, _, err = run_cli("triton", run, repo, "--all")  # nothing is overwritten without --force
    assert code == 2 and "already exists; pass --force" in err
    assert run_cli("triton", run, repo, "--all", "--force", "--instances", "2")[0] == 0
    assert _parse(repo / "tiny-bert-onnx-fp32" / "config.pbtxt").instance_group[0].count == 2

    moved = tmp_path / "moved-run"  # the report's paths point into the old place: artifacts are found by name
    run.rename(moved)
    assert run_cli("triton", moved, tmp_path / "repo2")[0] == 0
    assert (tmp_path / "repo2" / "tiny-bert" / "config.pbtxt").is_file()
    (moved / "model-int8.onnx").unlink()  # not the first variant: still nothing is written
    code, _, err = run_cli("triton", moved, tmp_path / "repo3", "--all")
    assert code == 3 and "(onnx-int8) is missing from the run directory" in err and not (tmp_path / "repo3").exists()


def _fixed_batch_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], np.ones(6, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_fixed_batch_model_gets_max_batch_size_0_and_its_full_dims(tmp_path):
    message = model_config("fixed", _fixed_batch_onnx(tmp_path / "f.onnx"), "onnxruntime", 2, [1, 32], TritonConfig())
    assert message.max_batch_size == 0 and not message.HasField("dynamic_batching")
    assert [(t.name, list(t.dims)) for t in (*message.input, *message.output)] == [("x", [1, 3]), ("y", [1, 2])]


def test_a_tensorrt_engine_is_a_gpu_plan_batched_up_to_its_profile(fake_trt, digits_fp32, tmp_path):  # noqa: F811
    from tritonclient.grpc import model_config_pb2 as pb2

    from deployopt.platform.tensorrt import sidecar_path
    from deployopt.sources.signature import Signature
    from deployopt.stages.engine.build import EngineConfig, build_engine

    fake_trt("10.13.0.35")
    engine = tmp_path / "digits.plan"
    sidecar = build_engine(digits_fp32, engine, Signature.parse(["input:batch,1,8,8"]), EngineConfig(max_batch=16))
    sidecar_path(engine).write_text(sidecar.model_dump_json(), encoding="utf-8")
    message = model_config("digits", engine, "tensorrt", 2, [1, 32], TritonConfig())
    assert message.platform == "tensorrt_plan" and message.default_model_filename == "model.plan"
    assert message.max_batch_size == 16  # the engine's profile caps the measured 32
    assert [(t.name, list(t.dims), pb2.DataType.Name(t.data_type)) for t in message.input] == [
        ("input", [1, 8, 8], "TYPE_FP32")
    ]
    assert [(g.kind, list(g.gpus)) for g in message.instance_group] == [(pb2.ModelInstanceGroup.KIND_GPU, [])]
    assert not message.parameters


def test_bad_run_directories_and_a_missing_schema_are_one_line(run_cli, digits_checkpoint, tmp_path, monkeypatch):
    code, _, err = run_cli("triton", tmp_path, tmp_path / "repo")
    assert code == 3 and "has no report.json" in err
    (tmp_path / "report.json").write_text('{"model": "cut off', encoding="utf-8")
    code, _, err = run_cli("triton", tmp_path, tmp_path / "repo")
    assert code == 3 and "report.json: is damaged or not a deployopt report" in err
    run = tmp_path / "run"
    assert (
        run_cli(
            "build", digits_checkpoint, "-o", run, "--no-bench", "--no-fp16", "--no-int8", "--runtime", "onnxruntime"
        )[0]
        == 0
    )
    code, _, err = run_cli("triton", run, tmp_path / "repo")
    assert code == 3 and "recommended no artifact" in err and "--all" in err
    assert not (tmp_path / "repo").exists()
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    code, _, err = run_cli("triton", run, tmp_path / "repo", "--all")
    assert code == 5 and "pip install 'deployopt[triton]'" in err and not (tmp_path / "repo").exists()
    code, _, err = run_cli("build", digits_checkpoint, "-o", tmp_path / "run2", "--triton-repo", tmp_path / "repo")
    assert code == 5 and not (tmp_path / "run2").exists()
