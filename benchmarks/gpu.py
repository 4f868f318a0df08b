"""GPU benchmark: ResNet-50 at batch 1, 32 and 256 on every GPU path this machine has.

Variants: PyTorch eager fp32 and fp16, torch.compile (fp16), ONNX Runtime CUDA, TensorRT fp16 and int8
(Q/DQ from ``quantize --int8 --target tensorrt``). A variant whose backend is missing here is listed
with the reason instead of silently dropped. Timing uses deployopt's harness: each (variant, repeat)
in its own worker process, repeats interleaved, medians; end-to-end latency (host arrays in and out,
synchronised) and GPU compute time (CUDA events) are reported separately. Accuracy: every variant is
verified against PyTorch fp32 on the CPU (cosine and top-1 agreement on generated inputs; the weights
are seeded random, no model hub is reachable here).

    python benchmarks/gpu.py [--batches 1,32,256] [--repeats 3] [--markdown OUT.md] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

MLPERF_H100_OFFLINE_INT8 = 88_714  # samples/s, MLPerf Inference v4.0, ResNet-50 offline, one H100-SXM


def _prepare(workdir: Path):
    import torch
    import torchvision

    from deployopt.api import SourceOptions

    torch.manual_seed(0)
    weights = workdir / "resnet50.pth"
    torch.save(torchvision.models.resnet50().eval().state_dict(), weights)
    return weights, SourceOptions(arch="torchvision:resnet50", inputs=("input:batch,3,224,224",))


def _onnx_variants(weights: Path, options, workdir: Path, skipped: dict[str, str]) -> dict[str, Path]:
    """fp32 ONNX for ONNX Runtime CUDA, and engines when TensorRT is here; reasons for what is missing."""
    import numpy as np
    import onnxruntime

    from deployopt.api import EngineConfig, Fp16Config, Int8Config, QuantizeData, engine, export, optimize, quantize

    onnx_fp32 = workdir / "resnet50-fp32.onnx"
    export(weights, workdir / "resnet50.onnx", options)
    optimize(workdir / "resnet50.onnx", onnx_fp32)
    made = {}
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        made["onnxruntime-cuda"] = onnx_fp32
    else:
        skipped["onnxruntime-cuda"] = f"onnxruntime {onnxruntime.__version__} here has no CUDAExecutionProvider"
    if importlib.util.find_spec("tensorrt") is None:
        for name in ("tensorrt-fp16", "tensorrt-int8"):
            skipped[name] = "TensorRT's Python package is not installed on this machine"
        return made
    config = EngineConfig(max_batch=256, opt_batch=32)
    quantize(onnx_fp32, workdir / "resnet50-fp16.onnx", fp16=Fp16Config())
    engine(workdir / "resnet50-fp16.onnx", workdir / "resnet50-fp16.plan", config)
    made["tensorrt-fp16"] = workdir / "resnet50-fp16.plan"
    calibration = workdir / "calibration.npz"
    np.savez(calibration, input=np.random.default_rng(0).standard_normal((128, 3, 224, 224), dtype=np.float32))
    quantize(
        onnx_fp32,
        workdir / "resnet50-int8.onnx",
        int8=Int8Config(target="tensorrt", max_rounds=1),
        data=QuantizeData(calibration=calibration),
    )
    engine(workdir / "resnet50-int8.onnx", workdir / "resnet50-int8.plan", config)
    made["tensorrt-int8"] = workdir / "resnet50-int8.plan"
    return made


def run(batches: tuple[int, ...], repeats: int) -> dict:
    from deployopt.api import BenchConfig, RuntimeOptions, VerifyConfig, verify_models
    from deployopt.measure.bench import BenchVariant, bench
    from deployopt.platform.gpu import require_cuda_gpu
    from deployopt.sources.signature import Signature

    gpu = require_cuda_gpu()
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="deployopt-gpu-bench-") as tmp:
        workdir = Path(tmp)
        weights, options = _prepare(workdir)
        runtimes = {
            "pytorch-eager-fp32": (weights, RuntimeOptions(device="cuda")),
            "pytorch-eager-fp16": (weights, RuntimeOptions(device="cuda", precision="fp16")),
            "torch.compile-fp16": (weights, RuntimeOptions(device="cuda", precision="fp16", compile=True)),
        }
        for name, path in _onnx_variants(weights, options, workdir, skipped).items():
            runtimes[name] = (path, RuntimeOptions(provider="cuda", device="cuda"))
        accuracy = {}
        for name, (path, runtime) in runtimes.items():
            result = verify_models(weights, path, options, VerifyConfig(samples=64), runtime)
            (out,) = result.outputs
            accuracy[name] = {"cosine": out.cosine, "top1_agreement": out.top1_agreement, "passed": result.passed}
        variants = [BenchVariant(name, runtime.spec(path, options)) for name, (path, runtime) in runtimes.items()]
        signature = Signature.parse(list(options.inputs))
        config = BenchConfig(batch_sizes=batches, repeats=repeats, min_seconds=1.0, warmup_seconds=1.0)
        measurements = bench(variants, signature, config, progress=print)
    return {
        "date": date.today().isoformat(),
        "gpu": gpu.to_json(),
        "host": platform.node(),
        "batches": list(batches),
        "repeats": repeats,
        "accuracy": accuracy,
        "skipped": skipped,
        "measurements": [m.to_json() for m in measurements],
    }


def to_markdown(results: dict, command: str) -> str:
    gpu = results["gpu"]
    lines = [
        f"### GPU: ResNet-50 on {gpu['name']} ({results['date']})",
        "",
        f"`{command}` — {results['repeats']} worker processes per variant, medians. End-to-end = numpy in, numpy "
        "out, synchronised (includes host↔device copies); GPU = device compute time from CUDA events.",
        "",
        "| variant | batch | samples/s (end-to-end) | p50 ms | p99 ms | GPU p50 ms | samples/s (GPU compute) |"
        " cosine vs fp32 | top-1 agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    best = (0.0, "")
    for m in results["measurements"]:
        acc = results["accuracy"][m["variant"]]
        gpu_rate = m["batch"] / (m["gpu_p50_ms"] / 1000) if m.get("gpu_p50_ms") else None
        if gpu_rate and gpu_rate > best[0]:
            best = (gpu_rate, f"{m['variant']} at batch {m['batch']}")
        top1 = f"{acc['top1_agreement'] * 100:.1f} %" if acc["top1_agreement"] is not None else "–"
        lines.append(
            f"| {m['variant']} | {m['batch']} | {m['throughput']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
            f"{m['gpu_p50_ms']:.2f} | {gpu_rate:,.0f} | {acc['cosine']:.5f} | {top1} |"
            if gpu_rate
            else f"| {m['variant']} | {m['batch']} | {m['throughput']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
            f"| – | – | {acc['cosine']:.5f} | {top1} |"
        )
    lines.append("")
    for name, reason in results["skipped"].items():
        lines.append(f"- **{name}** not measured: {reason}.")
    lines.append(
        f"- MLPerf Inference v4.0 reference: {MLPERF_H100_OFFLINE_INT8:,} samples/s (ResNet-50 offline int8, one "
        f"H100-SXM, NVIDIA's tuned harness). Best device-compute rate here: {best[0]:,.0f} samples/s "
        f"({best[1]}), {best[0] / MLPERF_H100_OFFLINE_INT8 * 100:.0f} % of it."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="write the Markdown table here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    results = run(batches, args.repeats)
    command = f"python benchmarks/gpu.py --batches {args.batches} --repeats {args.repeats}"
    markdown = to_markdown(results, command)
    print(markdown)
    if args.markdown:
        args.markdown.write_text(markdown)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
