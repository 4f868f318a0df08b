"""CPU benchmark: PyTorch eager vs plain ONNX Runtime fp32 vs deployopt's fp32 artifact, in one run.

For the digits CNN and (when torchvision is installed) resnet18 and mobilenet_v2:
1. times the whole ``deployopt build`` (export, graph, verify, bench) in its own process;
2. exports a "plain" ONNX file with torch.onnx.export defaults (what a user gets without deployopt);
3. measures PyTorch eager, plain ORT fp32 and deployopt's ``model-fp32.onnx`` with deployopt's harness:
   every variant in its own worker process, repeats interleaved round-robin, medians reported.
Appends a dated Markdown table to docs/benchmarks.md (use --no-write to only print it).

    python benchmarks/cpu.py [--models digits,resnet18,mobilenet_v2] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from deployopt.platform.cpu import describe_cpu

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def _prepare(name: str, workdir: Path) -> tuple[Path, list[str]]:
    """Write the model's weights and return (model file, extra build arguments)."""
    import torch

    if name == "digits":
        from deployopt.flow.demo import train_demo_model

        path = workdir / "digits-cnn.pt"
        train_demo_model(path, log=lambda message: None)
        return path, []
    import torchvision

    torch.manual_seed(0)
    path = workdir / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path, ["--arch", f"torchvision:{name}", "--input", "input:batch,3,224,224"]


def _plain_export(model_path: Path, extra: list[str], out: Path) -> None:
    """torch.onnx.export with its defaults plus a dynamic batch: the baseline a user writes by hand."""
    import torch

    from deployopt.flow.build import require_signature
    from deployopt.sources.detect import SourceOptions, inspect_source
    from deployopt.sources.loading import load_torch_model

    arch = extra[extra.index("--arch") + 1] if "--arch" in extra else None
    inputs = (extra[extra.index("--input") + 1],) if "--input" in extra else ()
    source = inspect_source(model_path, SourceOptions(arch=arch, inputs=inputs))
    spec = require_signature(source).inputs[0]
    example = torch.randn(*spec.concrete_shape(2))
    torch.onnx.export(
        load_torch_model(source),
        (example,),
        str(out),
        input_names=[spec.name],
        dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
        external_data=False,
    )


def run(models: list[str], repeats: int, threads: int, batches: tuple[int, ...]) -> tuple[list[dict], list[dict]]:
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench
    from deployopt.runners import RunnerSpec
    from deployopt.sources.signature import Signature

    rows, builds = [], []
    with tempfile.TemporaryDirectory(prefix="deployopt-bench-cpu-") as tmp:
        workdir = Path(tmp)
        for name in models:
            model_path, extra = _prepare(name, workdir)
            run_dir = workdir / f"run-{name}"
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deployopt",
                    "build",
                    str(model_path),
                    "-o",
                    str(run_dir),
                    "--threads",
                    str(threads),
                    "--no-fp16",
                    "--no-int8",
                    *extra,
                ],
                capture_output=True,
                text=True,
                check=False,
                cwd=workdir,  # not the repository root: there `python -m` would import the source tree
            )
            build_seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(f"deployopt build {name} failed:\n{result.stderr}")
            report = json.loads((run_dir / "report.json").read_text())
            builds.append({"model": name, "seconds": build_seconds, "passed": report["passed"]})

            plain = workdir / f"{name}-plain.onnx"
            _plain_export(model_path, extra, plain)
            signature = Signature.from_json(json.loads((run_dir / "manifest.json").read_text())["signature"])
            options = {"arch": extra[1] if extra else None, "inputs": [], "trust_pickle": False}
            variants = [
                BenchVariant("pytorch eager", RunnerSpec("torch", str(model_path), source_options=options)),
                BenchVariant("plain ORT fp32", RunnerSpec("onnxruntime", str(plain))),
                BenchVariant("deployopt onnx-fp32", RunnerSpec("onnxruntime", str(run_dir / "model-fp32.onnx"))),
            ]
            config = BenchConfig(batch_sizes=batches, threads=threads, repeats=repeats, min_seconds=2.0)
            measured = {(m.variant, m.batch): m for m in bench(variants, signature, config)}
            for variant in variants:
                row = {"model": name, "variant": variant.label}
                for batch in batches:
                    m = measured[(variant.label, batch)]
                    row[f"p50_b{batch}"] = m.p50_ms
                    row[f"vs_eager_b{batch}"] = measured[("pytorch eager", batch)].p50_ms / m.p50_ms
                    row[f"vs_plain_b{batch}"] = measured[("plain ORT fp32", batch)].p50_ms / m.p50_ms
                rows.append(row)
    return rows, builds


def to_markdown(
    rows: list[dict], builds: list[dict], command: str, repeats: int, threads: int, batches: tuple[int, ...]
) -> str:
    import onnxruntime
    import torch

    head = ["model", "variant"] + [f"p50 b{b} (ms)" for b in batches]
    head += [f"vs eager b{b}" for b in batches] + [f"vs plain ORT b{b}" for b in batches]
    lines = [
        f"## CPU fp32 — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}, {threads} threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
        f"- Command: `{command}`",
        f"- Method: each variant in its own worker process, {repeats} repeats interleaved, medians of p50",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        cells = [r["model"], r["variant"]] + [f"{r[f'p50_b{b}']:.2f}" for b in batches]
        cells += [f"{r[f'vs_eager_b{b}']:.2f}×" for b in batches] + [f"{r[f'vs_plain_b{b}']:.2f}×" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Whole `deployopt build --no-fp16 --no-int8` (export, graph, verify, bench at batch 1 and 32), wall time:",
        "",
    ]
    lines += [f"- {b['model']}: {b['seconds']:.1f} s ({'pass' if b['passed'] else 'FAIL'})" for b in builds]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_models = "digits,resnet18,mobilenet_v2" if importlib.util.find_spec("torchvision") else "digits"
    parser.add_argument("--models", default=default_models)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--no-write", action="store_true", help="print the table without appending it to the docs")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batch.split(","))
    rows, builds = run(args.models.split(","), args.repeats, args.threads, batches)
    command = "python benchmarks/cpu.py " + " ".join(sys.argv[1:])
    table = to_markdown(rows, builds, command.strip(), args.repeats, args.threads, batches)
    print(table)
    if not args.no_write:
        existing = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
        DOCS.write_text(existing.rstrip() + "\n\n" + table)


if __name__ == "__main__":
    main()
