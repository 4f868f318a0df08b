"""One benchmark worker process: load one runner, time it at each batch size, write JSON, exit.

Reads a job from stdin (see ``deployopt.measure.bench._run_worker``) and writes ``{"measurements": [...]}``
or ``{"error": {"type", "message"}}`` to the job's result path. Not meant to be run by hand.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from deployopt.data.eval_data import EvalData, cycled_batch, generate_batch
from deployopt.errors import DeployoptError
from deployopt.fsutil import write_json_atomic
from deployopt.measure.verify import inference_failure
from deployopt.runners import RunnerSpec, create_runner
from deployopt.sources.signature import Signature

LONG_CALL_ITERATIONS, LONG_CALL_SECONDS = 3, 3.0


def _time_batch(runner, feeds: dict[str, np.ndarray], config: dict) -> dict:
    warm_until = time.perf_counter() + config["warmup_seconds"]
    runner.infer(feeds)  # at least one warm-up call, whatever the time budget
    while time.perf_counter() < warm_until:
        runner.infer(feeds)
    latencies: list[float] = []
    compute_ms: list[float] = []  # device time of the computation alone, from GPU runners
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.infer(feeds)
        latencies.append(time.perf_counter() - t0)
        if runner.last_compute_ms is not None:
            compute_ms.append(runner.last_compute_ms)
        elapsed = time.perf_counter() - started
        enough = len(latencies) >= config["min_iterations"] and elapsed >= config["min_seconds"]
        # Calls of a second or more vary little relative to their length: three of them are a stable median.
        long_calls = len(latencies) >= LONG_CALL_ITERATIONS and elapsed >= LONG_CALL_SECONDS
        if enough or long_calls or elapsed >= config["max_seconds"]:
            break
    ms = np.array(latencies) * 1000.0
    timing = {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "iterations": len(latencies),
    }
    if compute_ms:
        timing |= {f"gpu_p{q}_ms": float(np.percentile(compute_ms, q)) for q in (50, 90, 99)}
    return timing


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM restarts at exec; ru_maxrss would carry over the parent's
    peak (Linux keeps it across execve), which made every worker look as large as the CLI that started it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_job(job: dict) -> dict:
    spec = RunnerSpec.from_json(job["spec"])
    signature = Signature.from_json(job["signature"])
    config = job["config"]
    measurements = []
    real = None
    if job.get("data_path"):  # the user's inputs (checked by the parent): models whose values matter run on them
        with np.load(job["data_path"]) as archive:
            inputs = {name: archive[name] for name in signature.names}
            real = EvalData(inputs, None, job["data_origin"], signature)
    with create_runner(spec) as runner:
        for batch in config["batch_sizes"]:
            if real is not None:
                feeds = cycled_batch(real, batch)
            else:
                feeds = generate_batch(signature, batch, seed=config["seed"]).inputs
            try:
                runner.infer(feeds)  # one call first: a model that fails on these inputs is named, not timed
            except DeployoptError:
                raise
            except Exception as exc:  # the runtime's own error types
                origin = real.origin if real is not None else "generated"
                raise inference_failure(spec.path, origin, exc, reference=True) from exc
            timing = _time_batch(runner, feeds, config)
            # the batch that ran, which is the one the row is labelled with
            timing["batch"] = EvalData(feeds, None, "bench", signature).num_samples
            timing["peak_rss_mb"] = peak_rss_mb()
            measurements.append(timing)
    return {"measurements": measurements}


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        result = run_job(job)
    except DeployoptError as exc:
        result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    write_json_atomic(job["result_path"], result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
