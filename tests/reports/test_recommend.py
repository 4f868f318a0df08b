"""The recommendation: the fastest passing artifact per batch, unless its lead is within the noise of its own
rounds — then a tie, and the simplest artifact of it; the benchmark's rounds go on until the order is clear."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from deployopt.measure.bench import BenchConfig, BenchVariant, bench, relative_spread
from deployopt.reports.model import BuildReport, VariantReport
from deployopt.reports.recommend import recommend
from deployopt.runners import RunnerSpec
from deployopt.sources.signature import Signature

BOTH = ("onnxruntime", "openvino")


def _variant(name, runtime, precision, rounds, passed=True, inference=""):
    latency = {1: {"p50_ms": statistics.median(rounds), "p50_per_repeat_ms": list(rounds)}}
    v = VariantReport(name, f"/r/{name}", precision, 1, runtime=runtime, latency=latency, inference_precision=inference)
    v.verify = type("Verdict", (), {"passed": passed})()
    return v


def _report(*variants):
    report = BuildReport("m", "/r", {"signature": [{"name": "x.in"}]}, "d", 1, [1, 32], 2)
    reference = VariantReport("pytorch", "/m.pt", "fp32", 1, role="reference", runtime="torch")
    reference.latency = {1: {"p50_ms": 0.1, "p50_per_repeat_ms": [0.1, 0.1]}}  # the reference never competes
    report.variants = [reference, *variants]
    return report


def test_a_clear_lead_wins_and_failing_or_other_runtimes_never_compete():
    report = _report(
        _variant("onnx-fp32", "onnxruntime", "fp32", [9.9, 10.0, 10.1]),
        _variant("onnx-int8", "onnxruntime", "int8", [1.0, 1.0], passed=False),  # fastest, but out of budget
        _variant("openvino-fp32", "openvino", "fp32", [4.9, 5.0, 5.1]),
        _variant("openvino-int8", "openvino", "int8", [1.98, 2.0, 2.02]),
    )
    (best,) = recommend(report, BOTH)  # batch 32 was not measured: no entry
    assert (best.batch, best.variant, best.tied, best.runner_up) == (1, "openvino-int8", [], None)
    assert best.speedups == {"onnx-fp32": pytest.approx(5.0), "openvino-fp32": pytest.approx(2.5)}
    assert best.spread == pytest.approx(0.02) and best.rounds == 3 and "2% spread over 3 rounds" in best.describe()
    assert '{"x.in": x_in}' in best.load_code
    (only_ort,) = recommend(report, ("onnxruntime",))
    assert only_ort.variant == "onnx-fp32" and only_ort.tied == []


def test_a_lead_within_the_fastest_spread_is_a_tie_and_the_simplest_artifact_is_recommended():
    """int8 measured 4 % faster than fp32, their rounds 8 % and 4 % apart: fp32 is recommended (fp32 over bf16 over
    int8), and between two fp32 artifacts ONNX Runtime over OpenVINO; the tie is named with the spread."""
    report = _report(
        _variant("onnx-fp32", "onnxruntime", "fp32", [5.0, 5.1, 5.2]),
        _variant("openvino-fp32", "openvino", "fp32", [4.9, 5.0, 5.2]),
        _variant("openvino-bf16", "openvino", "bf16", [4.8, 5.0, 5.0]),
        _variant("openvino-int8", "openvino", "int8", [4.7, 4.9, 5.1]),
    )
    (best,) = recommend(report, BOTH)
    assert best.variant == "onnx-fp32" and best.tied == ["openvino-int8", "openvino-fp32", "openvino-bf16"]
    assert best.spread == pytest.approx(0.4 / 4.9) and "a tie with openvino-int8" in best.describe()
    (among_openvino,) = recommend(report, ("openvino",))
    assert among_openvino.variant == "openvino-fp32"
    for variant in report.variants[1:]:  # one round each: no spread measured, no tie
        variant.latency[1]["p50_per_repeat_ms"] = [variant.latency[1]["p50_ms"]]
    (single,) = recommend(report, BOTH)
    assert single.variant == "openvino-int8" and single.spread is None and "one round" in single.describe()


def test_a_noisy_artifact_behind_a_clearly_slower_one_is_not_in_the_tie():
    """The tie runs from the fastest while each next one is within the noise: bf16's wide rounds reach the fastest,
    but fp32, clearly slower than the fastest, stands before it — so bf16 (simpler than int8) cannot win a tie
    while being slower than fp32."""
    report = _report(
        _variant("onnx-int8", "onnxruntime", "int8", [0.215, 0.22, 0.225]),
        _variant("openvino-int8", "openvino", "int8", [0.216, 0.221, 0.226]),
        _variant("onnx-fp32", "onnxruntime", "fp32", [0.238, 0.24, 0.242]),
        _variant("openvino-bf16", "openvino", "bf16", [0.2, 0.25, 0.3]),
    )
    (best,) = recommend(report, BOTH)
    assert best.variant == "onnx-int8" and best.tied == ["openvino-int8"]  # ONNX Runtime over OpenVINO


def test_openvino_load_code_carries_the_compile_settings_the_artifact_was_judged_with():
    from deployopt.runners.openvino_runner import compile_config

    report = _report(_variant("openvino-bf16", "openvino", "bf16", [1.0, 1.0], inference="bf16"))
    (best,) = recommend(report, BOTH)
    settings = compile_config(2, "bf16")  # what the runner compiled it with when it was judged and timed
    assert settings["INFERENCE_PRECISION_HINT"] == "bf16" and settings["INFERENCE_NUM_THREADS"] == "2"
    assert f'compile_model("/r/openvino-bf16", "CPU", {json.dumps(settings)})' in best.load_code


class _NoisyMachine:
    """Stands in for the benchmark workers: each variant's true latency, timed with ±``noise`` relative jitter."""

    def __init__(self, true_ms: dict[str, float], noise: float, seed: int) -> None:
        self.true_ms, self.noise, self.rng = true_ms, noise, np.random.default_rng(seed)
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def __call__(self, variant, signature, config, data):
        self.calls.append((variant.label, config.batch_sizes))
        return [
            {"batch": b, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "iterations": 5,
             "peak_rss_mb": 1.0}
            for b in config.batch_sizes
            if (p50 := self.true_ms[variant.label] * b * (1 + self.rng.uniform(-self.noise, self.noise)))
        ]  # fmt: skip


def _measured(monkeypatch, machine, contenders):
    import deployopt.measure.bench as bench_module

    monkeypatch.setattr(bench_module, "_run_worker", machine)
    variants = [BenchVariant(name, RunnerSpec("onnxruntime", f"/r/{name}")) for name in machine.true_ms]
    config = BenchConfig(batch_sizes=(1, 8), repeats=2, max_repeats=6)
    signature = Signature.parse(["x:batch,4"])
    return bench(variants, signature, config, contenders=contenders)


def test_rounds_go_on_for_the_contenders_only_until_the_lead_clears_the_noise(monkeypatch):
    machine = _NoisyMachine({"pytorch": 9.0, "onnx-fp32": 2.0, "openvino-fp32": 1.0, "openvino-int8": 0.5}, 0.01, 0)
    _measured(monkeypatch, machine, {"onnx-fp32", "openvino-fp32", "openvino-int8"})
    # two rounds of everyone, then a third of the fastest two only: a 2× lead is called from three rounds
    assert len(machine.calls) == 8 + 2 and set(machine.calls[8:]) == {
        ("openvino-int8", (1, 8)),
        ("openvino-fp32", (1, 8)),
    }
    close = _NoisyMachine({"pytorch": 9.0, "openvino-fp32": 1.0, "openvino-int8": 0.99}, 0.05, 1)
    rows = _measured(monkeypatch, close, {"openvino-fp32", "openvino-int8"})
    extra = close.calls[6:]
    assert extra and {label for label, _ in extra} <= {"openvino-fp32", "openvino-int8"}  # never the reference
    assert len(close.calls) <= 3 * 6 and max(r.repeats for r in rows) <= 6
    assert all(r.repeats == 2 for r in rows if r.variant == "pytorch")


@pytest.mark.parametrize("int8_ms", [0.97, 1.0])
def test_two_noisy_runs_of_the_same_build_name_the_same_winner_or_a_tie(monkeypatch, int8_ms):
    """int8 truly 3 % faster than fp32, or as fast, on a machine with ±6 % jitter: over twenty builds every one
    either names the same artifact or calls the two a tie — never two confident, opposite answers."""
    answers = []
    for seed in range(20):
        machine = _NoisyMachine({"pytorch": 9.0, "openvino-fp32": 1.0, "openvino-int8": int8_ms}, 0.06, seed)
        rows = _measured(monkeypatch, machine, {"openvino-fp32", "openvino-int8"})
        report = _report(
            _variant("openvino-fp32", "openvino", "fp32", [1.0]), _variant("openvino-int8", "openvino", "int8", [1.0])
        )
        for m in rows:
            if m.variant != "pytorch" and m.batch == 1:
                report.variant(m.variant).latency[1] = m.to_json()
        (best,) = recommend(report, ("openvino",))
        answers.append((best.variant, tuple(best.tied)))
        assert relative_spread(report.variant(best.variant).latency[1]["p50_per_repeat_ms"]) is not None
    winners = {variant for variant, tied in answers if not tied}
    assert len(winners) <= 1, answers  # a confident answer is always the same one
    assert all(variant == "openvino-fp32" for variant, tied in answers if tied)  # a tie goes to the simpler
