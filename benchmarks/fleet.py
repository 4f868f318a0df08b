"""Wall time of a fleet: four demo-size models (the digits CNN, as the demo trains it, under four names) built by one
``deployopt run`` one after another, with ``--jobs 2``, and on a local two-node Ray cluster whose second node
carries the label the benchmarks run on. Every run is its own process and starts from empty run directories; the
local modes alternate over the repeats (serial, jobs, serial, jobs, …) and each is summarised by its median. The
Ray overhead per model is one model's build on the cluster minus the same build here, alternated the same way.
Goals (#26): ``--jobs 2`` ≤ 0.75× serial with the same verdicts; Ray ≤ 2 s per model over the local build.

    python benchmarks/fleet.py [--repeats 2] [--no-ray] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits-1", "digits-2", "digits-3", "digits-4")
LABEL = "cpu_target"


def fleet_file(work: Path, models: tuple[str, ...], runs: Path) -> Path:
    entries = [{"model": str(work / f"{name}.pt"), "build": {"out": str(runs / name)}} for name in models]
    path = runs / "fleet.yaml"
    runs.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"models": entries}))
    return path


def timed_run(work: Path, label: str, models: tuple[str, ...], extra: list[str]) -> dict:
    runs = work / f"{label}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "deployopt", "run", str(fleet_file(work, models, runs)), "--json", *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{label}: exit {result.returncode}\n{result.stderr[-2000:]}")
    reports = {name: json.loads((runs / name / "report.json").read_text()) for name in models}
    verdicts = {name: [(v["name"], v["passed"], v["role"]) for v in r["variants"]] for name, r in reports.items()}
    bench = sum(s["seconds"] for r in reports.values() for s in r["stages"] if s["stage"] == "bench")
    shutil.rmtree(runs)
    return {"label": label, "wall": wall, "verdicts": verdicts, "bench": bench}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.docs_table import header, publish
    from deployopt.flow.demo import train_demo_model
    from tests.ray_cluster import start_local_cluster, stop_local_cluster

    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="deployopt-fleet-") as tmp:
        work = Path(tmp)
        train_demo_model(work / "digits-1.pt", log=lambda message: None)
        for name in MODELS[1:]:
            shutil.copy(work / "digits-1.pt", work / f"{name}.pt")
        no_bench = ["--set", "build.skip_bench=true"]
        modes = [("serial", []), ("--jobs 2", ["--jobs", "2"])]
        modes += [("serial, no benchmarks", no_bench), ("--jobs 2, no benchmarks", ["--jobs", "2", *no_bench])]
        for _ in range(args.repeats):
            for label, extra in modes:
                rows.setdefault(label, []).append(timed_run(work, label, MODELS, extra))
                print(label, f"{rows[label][-1]['wall']:.1f} s", flush=True)
        if not args.no_ray:
            temp_dir = tempfile.mkdtemp(prefix="ray-bf-", dir="/tmp")
            try:
                address = start_local_cluster(temp_dir, LABEL)
                ray = ["--ray", address, "--bench-on", LABEL]
                rows["ray fleet"] = [timed_run(work, "ray fleet", MODELS, ray)]
                for _ in range(args.repeats):
                    rows.setdefault("one model here", []).append(timed_run(work, "one model here", MODELS[:1], []))
                    rows.setdefault("one model on Ray", []).append(timed_run(work, "one model on Ray", MODELS[:1], ray))
            finally:
                stop_local_cluster(temp_dir)
                shutil.rmtree(temp_dir, ignore_errors=True)
    median = {label: statistics.median(r["wall"] for r in runs) for label, runs in rows.items()}
    fleets = rows["serial"] + rows["--jobs 2"] + rows.get("ray fleet", [])  # the runs that benchmark
    same = all(r["verdicts"] == rows["serial"][0]["verdicts"] for r in fleets)
    lines = [
        *header(
            "A fleet of four models: one after another, --jobs 2, Ray",
            "models: the demo's digits CNN under four names, each a default `deployopt build` (every variant, batch "
            "sizes 1 and 32); every run a process of its own from empty run directories, the local modes alternated "
            f"{args.repeats}×, medians",
        ),
        "",
        "| run | wall (median) | runs | of which benchmarks (serial by design) | vs one after another |",
        "|---|---|---|---|---|",
    ]
    baseline = {"--jobs 2": "serial", "ray fleet": "serial", "--jobs 2, no benchmarks": "serial, no benchmarks"}
    for label, runs in rows.items():
        ratio = median[label] / median[baseline[label]] if label in baseline else None
        walls = ", ".join(f"{r['wall']:.0f} s" for r in runs)
        bench = statistics.median(r["bench"] for r in runs)
        lines.append(
            f"| {label} | {median[label]:.1f} s | {walls} | {bench:.0f} s | {f'{ratio:.2f}×' if ratio else '–'} |"
        )
    lines += ["", f"- Same verdicts in every run of the four models (each mode): {'yes' if same else 'NO'}"]
    if "one model on Ray" in median:
        overhead = median["one model on Ray"] - median["one model here"]
        lines.append(f"- Ray overhead per model (one model on the cluster minus here): {overhead:+.1f} s")
    publish("\n".join(lines) + "\n", write=not args.no_write)


if __name__ == "__main__":
    main()
