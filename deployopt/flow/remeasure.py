"""``deployopt recommend RUN_DIR``: a finished build's passing artifacts benchmarked again on the machine this runs on,
and that machine's recommendation written beside the build machine's, keyed by CPU.

A recommendation is true for the CPU it was measured on: the artifact that wins on an AVX2 CI runner is often not
the one that wins on an AMX production host. The verdicts stay the build's (the report says on which CPU they
were reached); only the timings are redone. Choices the build made for its own CPU (7-bit int8 weights on a CPU
without VNNI, a bf16 artifact made or not) are named with the option that undoes them.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

from deployopt.errors import InputFileError, UsageError
from deployopt.flow.measurement import write_reports
from deployopt.fsutil import read_json, write_json_atomic
from deployopt.measure.bench import BenchConfig, BenchVariant, bench
from deployopt.platform.cpu import lacks_vnni
from deployopt.platform.machine import cpu_key, describe_machine, this_machine
from deployopt.reports.model import NOT_KEPT, BuildReport
from deployopt.reports.recommend import Recommendation
from deployopt.reports.recommend import recommend as fastest_within_budget
from deployopt.rundir import RunDirectory
from deployopt.runners import spec_for_model
from deployopt.sources.signature import Signature
from deployopt.stages.openvino import BF16_VARIANT

RECOMMENDATIONS_FOLDER = "recommendations"  # <run dir>/recommendations/<cpu key>.json, one file per CPU
CPU_RUNTIMES = ("onnxruntime", "openvino")


def recommend(
    run_dirs: list[str | Path],
    *,
    ray_address: str | None = None,
    bench_on: str | None = None,
    repeats: int | None = None,
    progress=lambda message: None,
) -> list[dict]:
    """``deployopt recommend``: each finished build's passing artifacts benchmarked again on this machine — or, with
    ``ray_address`` and ``bench_on``, on a Ray node that advertises that resource — and that machine's
    recommendation written beside the build machine's, keyed by CPU (see the module docstring)."""
    if bench_on is not None and ray_address is None:
        raise UsageError("--bench-on names a Ray resource: give --ray ADDRESS (or DEPLOYOPT_RAY_ADDRESS) too")
    if ray_address is not None:
        from deployopt.flow.ray_fleet import connect

        with connect(ray_address, bench_on) as cluster:
            return cluster.recommend([Path(d).resolve() for d in run_dirs], repeats, progress)
    return [recommend_here(d, repeats, progress) for d in run_dirs]


def recommend_here(run_dir: str | Path, repeats: int | None = None, progress=lambda message: None) -> dict:
    """Benchmark ``run_dir``'s passing artifacts here with the build's settings (``repeats`` rounds when given),
    recommend per batch size, record it in the run directory (``recommendations/<cpu>.json`` and the reports);
    return that entry."""
    root = Path(run_dir)
    if not (root / "report.json").is_file():
        raise InputFileError(f"{root}: no report.json here; give the run directory of a finished deployopt build")
    with RunDirectory(root) as run:
        report = BuildReport.from_json(read_json(run.path("report.json")))
        signature = Signature.from_json(run.manifest["signature"])
        bench_config = BenchConfig(**run.manifest["metrics"].get("bench", {}).get("config", {}))
        bench_config = bench_config.model_copy(update={"repeats": repeats}) if repeats else bench_config
        candidates = [
            v
            for v in report.variants[1:]
            if v.passed and v.role != NOT_KEPT and v.runtime in CPU_RUNTIMES and Path(v.path).exists()
        ]
        if not candidates:
            raise UsageError(f"{root}: the build has no passing CPU artifact to benchmark")
        machine = this_machine()
        variants = [BenchVariant(v.name, spec_for_model(v.path)) for v in candidates]
        crashes: dict[str, str] = {}
        contenders = {v.name for v in candidates}
        measurements = bench(variants, signature, bench_config, progress, None, contenders, crashes)
        here = copy.deepcopy(report)
        for variant in here.variants:
            variant.latency = {}
        for m in measurements:
            here.variant(m.variant).latency[m.batch] = m.to_json() | {"measured_on": machine}
        chosen = fastest_within_budget(here, CPU_RUNTIMES)
        entry = {
            "machine": machine,
            "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "bench": bench_config.model_dump(mode="json"),
            "recommendations": [r.to_json() for r in chosen],
            "latency": {v.name: {str(b): row for b, row in v.latency.items()} for v in here.variants if v.latency},
            "notes": [f"timings only: the verdicts are the build's, reached on {describe_machine(report.verified_on)}"]
            + [f"{name} not benchmarked here: {why}" for name, why in crashes.items()]
            + baked_decisions(run.manifest, report, machine)
            + deploy_where(report, machine, chosen),
        }
        key = cpu_key(machine)
        write_json_atomic(run.path(RECOMMENDATIONS_FOLDER) / f"{key}.json", entry)
        report.elsewhere[key] = entry
        write_reports(run, report)
    return entry


def baked_decisions(manifest: dict, report: BuildReport, machine: dict) -> list[str]:
    """The build's choices that depend on its CPU, when this machine would have chosen otherwise, each with the
    option that undoes it."""
    built_on = describe_machine(report.verified_on)
    notes = []
    int8 = manifest.get("stages", {}).get("int8")
    if int8 and int8["config"].get("weight_bits") == "auto":
        seven = int8["inputs"].get("seven_bit_weights")
        if seven and not lacks_vnni(machine["isa_flags"]):
            notes.append(
                f"onnx-int8 (and the OpenVINO IR made from it) has 7-bit weights, chosen for the build CPU "
                f"({built_on}: no VNNI, whose int16 sums saturate); this CPU has VNNI: rebuild with "
                "--weight-bits 8 (or build on this machine) for full 8-bit weights"
            )
        elif seven is False and lacks_vnni(machine["isa_flags"]):
            notes.append(
                f"onnx-int8 has 8-bit weights, chosen for the build CPU ({built_on}, with VNNI); this CPU has "
                "no VNNI, where ONNX Runtime's int16 sums can saturate: its verdict was reached on the build CPU — "
                "rebuild with --weight-bits 7 (or build on this machine)"
            )
    cpu_skipped_bf16 = any(note.startswith(f"{BF16_VARIANT} not made:") for note in report.notes)
    if cpu_skipped_bf16 and not report.variant(BF16_VARIANT):
        from deployopt.runners.openvino_runner import native_precision_problem

        if native_precision_problem("bf16") is None:
            notes.append(
                f"openvino-bf16 was not made: the build CPU ({built_on}) does not compute in bf16 and this one "
                "does; build on this machine (or a node like it: deployopt run --ray … --bench-on …) to make and "
                "judge it"
            )
    return notes


def deploy_where(report: BuildReport, machine: dict, chosen: list[Recommendation]) -> list[str]:
    """Per batch size where the build machine's choice differs from this one's: which artifact to deploy where."""
    built_on = report.measured_on
    if not built_on:
        return ["the build was not benchmarked (--no-bench): this machine's recommendation is the only one"]
    chosen_here = {r.batch: r.variant for r in chosen}
    differ = [(r.batch, r.variant, chosen_here[r.batch]) for r in report.recommendations if r.batch in chosen_here]
    differ = [(batch, built, here) for batch, built, here in differ if built != here]
    if cpu_key(built_on) == cpu_key(machine):
        return [
            "the build machine's CPU model and flags: "
            + (
                "; ".join(f"at batch {b} the build chose {built}, this run {here}" for b, built, here in differ)
                + " — two measurements on the same CPU that disagree: their difference is within the noise"
                if differ
                else "the same recommendation, measured again"
            )
        ]
    return [
        f"batch {batch}: deploy {built} on {describe_machine(built_on)}, {here} on {describe_machine(machine)} (each "
        "measured on its own CPU)"
        for batch, built, here in differ
    ]
