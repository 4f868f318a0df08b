"""TensorRT engines: ``build`` (the builder, profiles, sidecar) and the engine steps of ``build --target
tensorrt``.

Each engine is a run-directory stage keyed by its source graph, the engine options, the tool versions and
the GPU (an engine is only valid on the GPU model that built it), so a re-run on the same machine reuses it
and a run on another GPU rebuilds it. The sidecar lands next to the engine.
"""

from __future__ import annotations

from pathlib import Path

from deployopt.platform.gpu import require_cuda_gpu
from deployopt.platform.tensorrt import import_tensorrt
from deployopt.stages.base import BuildContext, Step
from deployopt.stages.engine.build import EngineConfig, build_engine
from deployopt.stages.int8 import Int8Step


def require_tensorrt_target(config: EngineConfig) -> None:
    """Fail before any work when TensorRT or the GPU is missing (exit 5, naming which)."""
    import_tensorrt()
    require_cuda_gpu(config.device)


class EngineStep:
    """A TensorRT engine ``model-<suffix>.plan`` (+ sidecar) from one low-precision ONNX variant; nothing when
    that variant was not made."""

    def __init__(self, name: str, source_variant: str) -> None:
        self.name, self.source_variant = name, source_variant

    def run(self, ctx: BuildContext) -> None:
        source = ctx.artifacts.get(self.source_variant)
        if source is None:
            return
        ctx.progress(f"engine {self.name}: building with TensorRT")
        config = ctx.engine
        gpu = require_cuda_gpu(config.device)
        suffix = self.name.removeprefix("trt-")

        def work(out: dict[str, Path]) -> dict:
            sidecar = build_engine(source.path, out["model"], ctx.signature, config)
            out["sidecar"].write_text(sidecar.model_dump_json(indent=2), encoding="utf-8")
            return sidecar.model_dump(mode="json")

        outcome = ctx.run.run_stage(
            f"engine-{suffix}",
            config,
            {"model": source.sha256, "gpu": f"{gpu.name} ({gpu.compute_capability})"},
            {"model": f"model-{suffix}.plan", "sidecar": f"model-{suffix}.plan.json"},
            work,
        )
        ctx.add_artifact(self.name, outcome)
        ctx.record(f"engine {self.name}", outcome, engine_summary(outcome.record["details"], source.path))


def engine_summary(d: dict, source: Path) -> str:
    profiles = "; ".join(f"{n} {low}→{opt}→{high}" for n, (low, opt, high) in d["profiles"].items())
    return (
        f"TensorRT {d['tensorrt_version']} on {d['gpu']['name']} from the {d['source_precision']} graph "
        f"{source.name}; builder flags {', '.join(d['builder_flags']) or 'none'}; profile {profiles}; "
        f"{d['engine_bytes']:,} bytes, built in {d['build_seconds']:.1f} s"
    )


def tensorrt_steps(make_int8: bool) -> list[Step]:
    """The symmetric Q/DQ int8 graph TensorRT needs (the CPU int8 variant is U8S8), then one engine per
    low-precision graph: ``trt-fp16`` from ``onnx-fp16``, ``trt-int8`` from ``onnx-int8-tensorrt``."""
    steps: list[Step] = []
    if make_int8:
        announce = "int8 for TensorRT: symmetric per-channel Q/DQ"
        steps.append(Int8Step("int8-tensorrt", "onnx-int8-tensorrt", target="tensorrt", announce=announce))
    return [*steps, EngineStep("trt-fp16", "onnx-fp16"), EngineStep("trt-int8", "onnx-int8-tensorrt")]
