"""A fleet on a Ray cluster (``deployopt run --ray ADDRESS [--bench-on RESOURCE]``).

Each model's artifacts are made by a Ray task on any node; its verification and benchmark run on a node that
advertises the ``--bench-on`` resource (a Ray custom resource the target machines are started with, e.g. ``ray
start --resources '{"cpu_amx": 1}'``). Each such node advertises it once, so Ray runs one benchmark at a time per
node, and the task also takes the node's CPUs, so no build shares them while it times. Without ``--bench-on`` the
judging follows the make and the benchmarks run here, one model at a time, after every build.

Artifacts move through the file system: the models and run directories must be on a path every node mounts at the
same place (checked before anything runs), so each run directory is written by the same code as a local build. A
worker that dies is retried by Ray (``max_retries``); the run directory's stage cache makes the retry cheap and
its atomic writes leave nothing half-written.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployopt.errors import BackendUnavailableError, DeployoptError, StageError, UsageError, error_reason
from deployopt.flow.build import BuildState, complete_build, judge_artifacts, make_artifacts
from deployopt.flow.fleet import FleetReport, Member, MemberOutcome, failed, finish_here, make_and_judge, start
from deployopt.flow.pipeline import INPUT_FILES, TrainStep, rebase_path

RAY_ADDRESS_ENV = "DEPLOYOPT_RAY_ADDRESS"
RETRIES = 3  # a task whose worker dies is run again this many times
CONNECT_SECONDS = 5.0
Progress = Callable[[str], None]


def import_ray():
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(
            "--ray: the ray package is not installed; pip install 'deployopt[ray]' (or run without --ray)"
        ) from None
    return ray


def _reachable(address: str) -> None:
    """A quick TCP check: ``ray.init`` itself waits minutes for an address nobody answers on."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address}: expected HOST:PORT of a Ray head node, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise BackendUnavailableError(
            f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one with "
            "`ray start --head` or fix the address"
        ) from None


def connect(address: str, bench_on: str | None) -> Cluster:
    """Connect to the cluster at ``address`` and check that ``bench_on`` is a resource its nodes advertise once."""
    ray = import_ray()
    _reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:  # something answers there, but not a Ray head
        raise BackendUnavailableError(
            f"--ray {address}: no Ray cluster could be joined there ({error_reason(exc)}); check the address "
            "(`ray status` on the head prints it)"
        ) from None
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        labelled = [node for node in nodes if bench_on in node["Resources"]] if bench_on else []
        if bench_on and not labelled:
            have = sorted({r for node in nodes for r in node["Resources"] if _is_custom(r)})
            raise UsageError(
                f"--bench-on {bench_on}: no node of the cluster at {address} advertises it; the resources its "
                f"nodes have: {', '.join(have) or 'none besides CPU/memory'}"
            )
        for node in labelled:
            if node["Resources"][bench_on] != 1:
                raise UsageError(
                    f"--bench-on {bench_on}: node {node['NodeID'][:12]} advertises {node['Resources'][bench_on]:g} of "
                    f"it; advertise it as 1 (ray start --resources '{{\"{bench_on}\": 1}}') so that one benchmark "
                    "runs at a time per node"
                )
    except BaseException:
        ray.shutdown()
        raise
    return Cluster(ray, address, bench_on, nodes, labelled)


def _is_custom(resource: str) -> bool:
    return resource not in ("CPU", "GPU", "memory", "object_store_memory") and not resource.startswith("node:")


@dataclass
class Cluster:
    ray: Any
    address: str
    bench_on: str | None
    nodes: list[dict]
    labelled: list[dict]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ray.shutdown()

    def run(self, members: list[Member], progress: Progress) -> FleetReport:
        """Build every member on the cluster."""
        self._check_shared_paths(_paths_to_share(members))
        return self._run(members, progress)

    def recommend(self, run_dirs: list[Path], repeats: int | None, progress: Progress) -> list[dict]:
        """``deployopt recommend`` of each run directory on a node with the ``--bench-on`` label."""
        from ray.util.queue import Queue

        self._check_shared_paths([run_dir / "report.json" for run_dir in run_dirs])
        messages = Queue()
        task = self.ray.remote(max_retries=RETRIES, **self._measuring())(_recommend_task)
        refs = [task.options(name=f"recommend {d.name}").remote(d, repeats, messages) for d in run_dirs]
        results = self._gather(refs, messages, progress, [d.name for d in run_dirs])
        for result in results:
            if isinstance(result, DeployoptError):
                raise result
        return results

    def _measuring(self) -> dict:
        """A measuring task's resources: the label (once per node: one at a time) and the node's CPUs."""
        if not self.bench_on:
            return {"num_cpus": 1}
        cpus = min(node["Resources"].get("CPU", 1) for node in self.labelled)
        return {"num_cpus": cpus, "resources": {self.bench_on: 1}}

    def _gather(self, refs: list, messages, progress: Progress, labels: list[str]) -> list:
        """Every task's result (or its deployopt error), in order; progress passed on while they run."""
        results: dict[int, Any] = {}
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1, timeout=0.2)
            _drain(messages, progress)
            for ref in ready:
                number = refs.index(ref)
                results[number] = self._result(ref, labels[number])
        _drain(messages, progress)
        return [results[number] for number in range(len(refs))]

    def _check_shared_paths(self, paths: list[Path]) -> None:
        """Every node must see these files (same size and time) and folders as this machine does."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        expected = {str(p): _stat(p) for p in paths}
        probe = self.ray.remote(num_cpus=0)(_stats)
        for node in self.nodes:
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            seen = self.ray.get(probe.options(scheduling_strategy=strategy).remote(list(expected)))
            for path, stat in expected.items():
                if seen[path] != stat:
                    raise UsageError(
                        f"{path}: node {node['NodeID'][:12]} ({node['NodeManagerAddress']}) does not see this file as "
                        "this machine does; --ray needs the models and run directories on a path every node mounts "
                        "at the same place"
                    )

    def _run(self, members: list[Member], progress: Progress) -> FleetReport:
        from ray.util.queue import Queue

        ray = self.ray
        messages = Queue()
        make = ray.remote(max_retries=RETRIES, num_cpus=1)(_make_task)
        measure = ray.remote(max_retries=RETRIES, **self._measuring())(_measure_task)
        refs = []
        for member in members:
            made = make.options(name=f"make {member.label}", **make_placement(member, self.bench_on)).remote(
                member, bool(self.bench_on), messages
            )
            if self.bench_on:
                made = measure.options(name=f"measure {member.label}", num_gpus=gpus_for(member)).remote(
                    made, member.label, messages
                )
            refs.append(made)
        results = self._gather(refs, messages, progress, [m.label for m in members])
        where = f"judged and benchmarked on nodes with {self.bench_on}" if self.bench_on else "benchmarked here"
        report = FleetReport(mode=f"Ray cluster at {self.address}: {len(self.nodes)} node(s), {where}")
        for number, member in enumerate(members):
            result = results[number]
            if isinstance(result, DeployoptError):
                report.outcomes.append(failed(member, result, progress))
            elif self.bench_on:
                report.outcomes.append(MemberOutcome(member, result))
            else:  # judged on the cluster; benchmarked here, one model at a time
                report.outcomes.append(finish_here(member, result, progress))
        return report

    def _result(self, ref, label: str):
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, DeployoptError):
                return exc.cause
            raise exc.cause from None
        except ray.exceptions.RayError as exc:  # its worker or node died RETRIES + 1 times, Ray's memory monitor, …
            return StageError(f"{label}: Ray could not run it ({type(exc).__name__}: {error_reason(exc)})")


def gpus_for(member: Member) -> int:
    """A TensorRT target builds its engines on the GPU they will run on: its tasks ask Ray for one."""
    return 1 if member.config.target == "tensorrt" else 0


def make_placement(member: Member, bench_on: str | None) -> dict:
    """Where a member's make task may run: any node with a CPU; a TensorRT pipeline's on a GPU node — with a label,
    a labelled one, so its engines are built on the GPU type they are timed and served on."""
    gpus = gpus_for(member)
    return {"num_gpus": gpus} | ({"resources": {bench_on: 1}} if gpus and bench_on else {})


def _drain(messages, progress: Progress) -> None:
    while not messages.empty():
        progress(messages.get_nowait())


def _paths_to_share(members: list[Member]) -> list[Path]:
    """What every node must see as the driver does: the model files, the data files the builds read (verification,
    calibration, a teacher), and the folders the run directories go in."""
    paths = {_existing_ancestor(m.run_root) for m in members}
    for member in members:
        if isinstance(member.source, TrainStep):
            paths |= {Path(p) for p in (member.source.teacher, member.source.dataset) if p and Path(p).exists()}
        else:
            paths.add(member.source)
        for keys in INPUT_FILES:
            paths |= {value} if (value := rebase_path(member.config, keys, lambda path: path)[1]) is not None else set()
    return sorted(paths)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _stat(path: Path) -> list | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns] if path.is_file() else ["directory"]


def _stats(paths: list[str]) -> dict[str, list | None]:
    return {path: _stat(Path(path)) for path in paths}


def _sender(messages, label: str) -> Progress:
    return lambda message: messages.put(f"[{label}] {message}")


def _make_task(member: Member, only_make: bool, messages) -> BuildState:
    """Ray task: the member's artifacts (and, without --bench-on, their verdicts), on whichever node runs it."""
    from deployopt.platform.machine import describe_machine, this_machine

    progress = _sender(messages, member.label)
    state = make_artifacts(start(member, progress), progress) if only_make else make_and_judge(member, progress)
    note = f"artifacts made on {describe_machine(this_machine())} (deployopt run --ray)"
    (state.report.notes if state.report else state.notes).append(note)
    return state


def _recommend_task(run_dir: Path, repeats: int | None, messages) -> dict:
    from deployopt.flow.remeasure import recommend_here

    return recommend_here(run_dir, repeats, _sender(messages, run_dir.name))


def _measure_task(state: BuildState, label: str, messages):
    """Ray task on a labelled node: verify and benchmark the artifacts there, write the reports."""
    progress = _sender(messages, label)
    return complete_build(judge_artifacts(state, progress), progress)
