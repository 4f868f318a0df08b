"""The TensorRT variants of ``deployopt build --target tensorrt``: engines from the fp16 and Q/DQ int8 graphs.

Each engine is a run-directory stage keyed by its source graph, the engine options, the tool versions
and the GPU (an engine is only valid on the GPU model that built it), so a re-run on the same machine
reuses it and a run on another GPU rebuilds it. The sidecar lands next to the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deployopt.data.eval_data import EvalData
from deployopt.flow.variants import QuantizedVariants, VariantOutcome, make_int8, stage_entry
from deployopt.fsutil import sha256_file
from deployopt.measure.bench import BenchConfig
from deployopt.measure.verify import Budget
from deployopt.platform.gpu import require_cuda_gpu
from deployopt.platform.tensorrt import import_tensorrt
from deployopt.rundir import RunDirectory
from deployopt.sources.signature import Signature
from deployopt.stages.engine.build import EngineConfig, build_engine


def require_tensorrt_target(config: EngineConfig) -> None:
    """Fail before any work when TensorRT or the GPU is missing (exit 5, naming which)."""
    import_tensorrt()
    require_cuda_gpu(config.device)


def make_engine(
    run: RunDirectory, name: str, source: Path, source_hash: str, signature: Signature, config: EngineConfig
) -> VariantOutcome:
    gpu = require_cuda_gpu(config.device)
    suffix = name.removeprefix("trt-")

    def work(out: dict[str, Path]) -> dict:
        sidecar = build_engine(source, out["model"], signature, config)
        out["sidecar"].write_text(sidecar.model_dump_json(indent=2), encoding="utf-8")
        return sidecar.model_dump(mode="json")

    outcome = run.run_stage(
        f"engine-{suffix}",
        config,
        {"model": source_hash, "gpu": f"{gpu.name} ({gpu.compute_capability})"},
        {"model": f"model-{suffix}.plan", "sidecar": f"model-{suffix}.plan.json"},
        work,
    )
    d = outcome.record["details"]
    profiles = "; ".join(f"{n} {low}→{opt}→{high}" for n, (low, opt, high) in d["profiles"].items())
    summary = (
        f"TensorRT {d['tensorrt_version']} on {d['gpu']['name']} from the {d['source_precision']} graph "
        f"{source.name}; builder flags {', '.join(d['builder_flags']) or 'none'}; profile {profiles}; "
        f"{d['engine_bytes']:,} bytes, built in {d['build_seconds']:.1f} s"
    )
    return VariantOutcome(outcome.output("model"), stage_entry(f"engine {name}", outcome, summary))


def tensorrt_variants(
    run: RunDirectory,
    fp32: Path,
    fp32_hash: str,
    fp16: Path | None,
    signature: Signature,
    quantize: QuantizedVariants,
    dataset: str | None,
    data: EvalData,
    budget: Budget,
    bench: BenchConfig,
    engine: EngineConfig,
    progress: Callable[[str], None],
) -> list[tuple[str, VariantOutcome]]:
    """The symmetric Q/DQ int8 graph TensorRT needs (the CPU int8 variant is U8S8), then one engine per
    low-precision graph: ``trt-fp16`` from ``onnx-fp16``, ``trt-int8`` from ``onnx-int8-tensorrt``."""
    made: list[tuple[str, VariantOutcome]] = []
    sources = {"trt-fp16": fp16} if fp16 is not None else {}
    if "int8" in quantize.make:
        progress("int8 for TensorRT: symmetric per-channel Q/DQ")
        qdq = quantize.model_copy(update={"int8": quantize.int8.model_copy(update={"target": "tensorrt"})})
        outcome = make_int8(
            run,
            fp32,
            fp32_hash,
            signature,
            qdq,
            dataset,
            data,
            budget,
            bench.batch_sizes,
            bench.threads,
            progress,
            name="int8-tensorrt",
        )
        made.append(("onnx-int8-tensorrt", outcome))
        if outcome.path is not None:
            sources["trt-int8"] = outcome.path
    for name, source in sources.items():
        progress(f"engine {name}: building with TensorRT")
        made.append((name, make_engine(run, name, source, sha256_file(source), signature, engine)))
    return made
