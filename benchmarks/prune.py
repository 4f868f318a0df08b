"""Pruning benchmark: what each model keeps and gains, in one run.

1. digits CNN, 50 % channels + 10 fine-tune epochs: test accuracy and MACs against the unpruned model.
2. ResNet for 32×32 digits (models/resnet_digits.py, trained here), 30 % and 50 % channels + fine-tune:
   accuracy, MACs, and ONNX Runtime latency at batch 1 and 32 (deployopt's harness: each model in its
   own worker process, repeats interleaved, medians).
3. torchvision resnet18 and mobilenet_v2 (seeded random weights; no download here), 30 % channels:
   parameters, MACs, and ONNX Runtime latency.
4. Channel rounding: ResNet-digits and mobilenet_v2 at 30 % with ``round_to=1`` (the exact amount,
   leaving counts like 67) against the default 8 — the same MACs, very different speed.

    python benchmarks/prune.py [--repeats 3] [--markdown OUT.md]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import date
from pathlib import Path


def _onnx(model: Path, workdir: Path, options) -> Path:
    from deployopt.api import export, optimize

    raw, out = workdir / f"{model.stem}.raw.onnx", workdir / f"{model.stem}.onnx"
    export(model, raw, options)
    optimize(raw, out)
    return out


def _latency(pairs: dict[str, tuple[Path, Path]], signature_text: str, repeats: int) -> dict:
    """(original, pruned) ONNX per row → {row: {batch: (original p50, pruned p50)}}, measured in one run."""
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench
    from deployopt.runners import RunnerSpec
    from deployopt.sources.signature import Signature

    results: dict[str, dict[int, tuple[float, float]]] = {}
    for row, (original, pruned) in pairs.items():
        variants = [BenchVariant(k, RunnerSpec("onnxruntime", str(p))) for k, p in (("o", original), ("p", pruned))]
        config = BenchConfig(batch_sizes=(1, 32), repeats=repeats, min_seconds=1.0)
        rows = {(m.variant, m.batch): m.p50_ms for m in bench(variants, Signature.parse([signature_text]), config)}
        results[row] = {b: (rows[("o", b)], rows[("p", b)]) for b in (1, 32)}
    return results


def run(repeats: int) -> list[str]:
    import torch
    import torchvision

    from deployopt.api import PruneConfig, SourceOptions, TrainConfig, prune, train
    from deployopt.flow.demo import train_demo_model

    lines = []
    with tempfile.TemporaryDirectory(prefix="deployopt-prune-bench-") as tmp:
        work = Path(tmp)
        rows = []
        train_demo_model(work / "digits.pt", log=lambda m: None)
        train("resnet-digits", work / "resnet-digits.pt", TrainConfig(epochs=20), log=lambda m: None)
        cases = [
            ("digits CNN", work / "digits.pt", SourceOptions(), 0.5, 10, "input:batch,1,8,8"),
            ("ResNet-digits 32×32", work / "resnet-digits.pt", SourceOptions(), 0.3, 10, "input:batch,1,32,32"),
            ("ResNet-digits 32×32", work / "resnet-digits.pt", SourceOptions(), 0.5, 10, "input:batch,1,32,32"),
        ]
        cases = [(*case, 8) for case in cases] + [
            ("ResNet-digits 32×32", work / "resnet-digits.pt", SourceOptions(), 0.3, 10, "input:batch,1,32,32", 1)
        ]
        for name in ("resnet18", "mobilenet_v2"):
            torch.manual_seed(0)
            weights = work / f"{name}.pth"
            torch.save(torchvision.models.get_model(name).eval().state_dict(), weights)
            image = "input:batch,3,224,224"
            options = SourceOptions(arch=f"torchvision:{name}", inputs=(image,))
            cases += [(name, weights, options, 0.3, 0, image, 8)] + (
                [(name, weights, options, 0.3, 0, image, 1)] if name == "mobilenet_v2" else []
            )
        latency = {}
        for label, model, options, amount, epochs, signature, round_to in cases:
            out = work / f"{model.stem}-p{int(amount * 100)}-r{round_to}.pt"
            config = PruneConfig(amount=amount, finetune_epochs=epochs, round_to=round_to)
            o = prune(model, out, config, options, bench_config=None)
            accuracy = (
                f"{o.accuracy_before:.2f} → {o.accuracy_after:.2f} ({o.accuracy_after - o.accuracy_before:+.2f})"
                if o.accuracy_before is not None
                else "– (random weights)"
            )
            row = f"{label}, {amount:.0%} channels" + (f" + {epochs} fine-tune epochs" if epochs else "")
            row += ", exact counts (round_to 1)" if round_to == 1 else ""
            rows.append((row, o.result, accuracy))
            pair = (_onnx(model, work, options), _onnx(out, work, options))
            latency |= _latency({row: pair}, signature, repeats)
    lines += [
        "| model | params | MACs | test accuracy (%) | ORT p50 b1 (ms) | ORT p50 b32 (ms) | speed-up b32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, r, accuracy in rows:
        (o1, p1), (o32, p32) = latency[row][1], latency[row][32]
        lines.append(
            f"| {row} | {r.params_before:,} → {r.params_after:,} (−{(1 - r.params_after / r.params_before):.0%}) "
            f"| {r.macs_before:,} → {r.macs_after:,} (−{(1 - r.macs_after / r.macs_before):.0%}) | {accuracy} "
            f"| {o1:.3f} → {p1:.3f} | {o32:.2f} → {p32:.2f} | {o32 / p32:.2f}× |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = run(args.repeats)
    header = [
        f"## Pruning — {date.today().isoformat()}",
        "",
        f"`python benchmarks/prune.py --repeats {args.repeats}` on {platform.processor() or platform.machine()}, "
        "ONNX Runtime CPU, deployopt's harness (each model in its own worker, repeats interleaved, medians).",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
