"""``deployopt run`` over several models (a fleet): every model's build is independent, with its own run directory,
and one summary, JUnit file and exit code cover them all.

A build is three parts (:mod:`deployopt.flow.build`): make the artifacts, judge them, benchmark them. How the parts
are spread out is the only thing that differs between the ways a fleet runs:

- one after another (the default): each model built whole, as ``deployopt build`` would;
- ``--jobs N``: up to N models are made and judged at once, each in its own process; the benchmarks then run
  one model at a time, after every model's transforms have finished, so no timing shares the CPU with a build;
- ``--ray ADDRESS`` (:mod:`deployopt.flow.ray_fleet`): makes are Ray tasks; judging and benchmarking run on a node
  that carries the ``--bench-on`` label, one at a time per node.

Every model is checked (file, signature, data, run directory) before any starts; a model that fails is named in
the summary and the others still finish.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deployopt.errors import EXIT_BUDGET, EXIT_OK, DeployoptError, UsageError
from deployopt.flow.build import (
    DEFAULT_OUT_ROOT,
    BuildConfig,
    BuildState,
    complete_build,
    judge_artifacts,
    prepare,
)
from deployopt.flow.pipeline import INPUT_FILES, OUTPUT_FILES, TrainStep, load_pipeline_models, rebase_path, train_into
from deployopt.reports.model import BuildReport

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Member:
    """One model of a fleet: where it was listed, its source (a file, or a model to train first), its build, and
    the run directory it writes (absolute)."""

    pipeline: Path
    source: Path | TrainStep
    config: BuildConfig
    run_root: Path

    @property
    def label(self) -> str:
        return self.run_root.name


@dataclass
class MemberOutcome:
    member: Member
    report: BuildReport | None = None
    error: DeployoptError | None = None

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return EXIT_OK if self.report.passed else EXIT_BUDGET


@dataclass
class FleetReport:
    """Every model's outcome, in the order the pipelines list them."""

    outcomes: list[MemberOutcome] = field(default_factory=list)
    mode: str = "one after another"

    @property
    def passed(self) -> bool:
        return all(o.exit_code == EXIT_OK for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """The first failing model's code (fleet order): 1 for a budget missed, its own code for an error."""
        return next((o.exit_code for o in self.outcomes if o.exit_code != EXIT_OK), EXIT_OK)

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "mode": self.mode,
            "models": [
                {
                    "model": o.member.label,
                    "pipeline": str(o.member.pipeline),
                    "run_dir": str(o.member.run_root),
                    "exit_code": o.exit_code,
                    "passed": o.exit_code == EXIT_OK,
                    "error": str(o.error) if o.error else None,
                    "failures": o.report.failures if o.report else [],
                    "recommendations": [r.to_json() for r in o.report.recommendations] if o.report else [],
                }
                for o in self.outcomes
            ],
        }


def _name_of(path: Path) -> str:
    from deployopt.sources.detect import SourceOptions, inspect_source, model_name

    return model_name(inspect_source(path, SourceOptions()))


def load_fleet(pipelines: list[Path], overrides: list[str] | None = None) -> list[Member]:
    """Every model of every pipeline file, validated, with absolute paths (a Ray worker does not share the
    driver's working directory); two that would write the same run directory are refused."""
    members = []
    for pipeline in pipelines:
        for source, config in load_pipeline_models(pipeline, overrides):
            for keys in INPUT_FILES + OUTPUT_FILES:
                config, _ = rebase_path(config, keys, Path.resolve)
            source = source if isinstance(source, TrainStep) else source.resolve()
            name = source.model if isinstance(source, TrainStep) else _name_of(source)
            members.append(Member(Path(pipeline), source, config, (config.out or DEFAULT_OUT_ROOT / name).resolve()))
    seen: dict[Path, Member] = {}
    for member in members:
        if (other := seen.setdefault(member.run_root, member)) is not member:
            raise UsageError(
                f"{member.pipeline}: {_described(member)} and {_described(other)} would both write the run directory "
                f"{member.run_root}; give each its own 'out:' (a models list entry can set build.out)"
            )
    return members


def _described(member: Member) -> str:
    source = member.source
    return f"training {source.model}" if isinstance(source, TrainStep) else str(source)


def checked_fleet(pipelines: list[str | Path], overrides: list[str] | None) -> list[Member]:
    """The fleet's models, each with its own checks made (model file, signature, data, what it asks for by name)
    before any model starts."""
    members = load_fleet([Path(p) for p in pipelines], overrides)
    for member in members:
        if not isinstance(member.source, TrainStep):  # a model still to be trained is checked once it exists
            prepare(member.source, _with_out(member))
    return members


def _with_out(member: Member) -> BuildConfig:
    return member.config.model_copy(update={"out": member.run_root})


def start(member: Member, progress: Progress) -> BuildState:
    """The member's build state: its model trained into its run directory first when the pipeline says so."""
    config = _with_out(member)
    source = train_into(member.source, config, progress) if isinstance(member.source, TrainStep) else member.source
    return prepare(source, config)


def make_and_judge(member: Member, progress: Progress) -> BuildState:
    return judge_artifacts(start(member, progress), progress, make=True)


def run_fleet(
    pipelines: list[str | Path],
    overrides: list[str] | None = None,
    *,
    jobs: int = 1,
    ray_address: str | None = None,
    bench_on: str | None = None,
    progress: Progress = lambda message: None,
) -> FleetReport:
    """``deployopt run`` of several models: every model the pipeline files list, each into its own run directory.
    ``jobs`` builds that many at once here (benchmarks stay one at a time); ``ray_address`` runs the builds as Ray
    tasks, verifying and benchmarking on nodes that advertise ``bench_on``. Every model is checked before any
    starts; one model's error is its outcome, not the fleet's end (see the module docstring)."""
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: give 1 or more")
    if bench_on is not None and ray_address is None:
        raise UsageError("--bench-on names a Ray resource: give --ray ADDRESS (or DEPLOYOPT_RAY_ADDRESS) too")
    if ray_address is not None:
        from deployopt.flow.ray_fleet import connect

        with connect(ray_address, bench_on) as cluster:  # first: a missing package or cluster is exit 5 at once
            return cluster.run(checked_fleet(pipelines, overrides), progress)
    members = checked_fleet(pipelines, overrides)
    if jobs == 1 or len(members) == 1:
        return FleetReport([_whole(member, progress) for member in members])
    return _in_parallel(members, jobs, progress)


def _whole(member: Member, progress: Progress) -> MemberOutcome:
    try:
        state = make_and_judge(member, _labelled(member, progress))
    except DeployoptError as exc:
        return failed(member, exc, progress)
    return finish_here(member, state, progress)


def failed(member: Member, error: DeployoptError, progress: Progress) -> MemberOutcome:
    """A model whose build stopped: its outcome (the fleet goes on), said once on the progress lines."""
    _labelled(member, progress)(f"failed: {error}")
    return MemberOutcome(member, error=error)


def finish_here(member: Member, state: BuildState, progress: Progress) -> MemberOutcome:
    """The last part of a member's build (benchmarks, reports) in this process."""
    try:
        return MemberOutcome(member, complete_build(state, _labelled(member, progress)))
    except DeployoptError as exc:
        return failed(member, exc, progress)


def _labelled(member: Member, progress: Progress) -> Progress:
    return lambda message: progress(f"[{member.label}] {message}")


def _tidy(run_root: Path) -> None:
    """A run directory whose build was stopped: what a build killed outright left there (partial files, its lock)
    removed, as opening and closing it does."""
    from deployopt.errors import RunDirectoryLockedError
    from deployopt.rundir import RunDirectory

    if run_root.is_dir():
        with contextlib.suppress(RunDirectoryLockedError), RunDirectory(run_root):
            pass


def _in_parallel(members: list[Member], jobs: int, progress: Progress) -> FleetReport:
    """``--jobs``: makes and verifications N at a time, each model in its own process; then the benchmarks, serially."""
    from deployopt.isolation import child_progress, run_isolated, stop_running_children

    def made(member: Member) -> BuildState:
        job = {"member": member, "progress": child_progress}
        return run_isolated(member.label, make_and_judge, job, _labelled(member, progress))

    states: dict[int, BuildState | DeployoptError] = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(made, member): number for number, member in enumerate(members)}
        try:
            for future in concurrent.futures.as_completed(futures):
                try:
                    states[futures[future]] = future.result()
                except DeployoptError as exc:
                    states[futures[future]] = exc
        except BaseException:  # Ctrl-C or SIGTERM: the builds still running stop too, then the pool can close
            pool.shutdown(wait=False, cancel_futures=True)
            stop_running_children()
            for member in members:
                _tidy(member.run_root)
            raise
    report = FleetReport(mode=f"{jobs} models at a time, benchmarks one model at a time after every build")
    for number, member in enumerate(members):
        state = states[number]
        if isinstance(state, DeployoptError):
            report.outcomes.append(failed(member, state, progress))
            continue
        state.report.notes.append(
            f"built beside other models ({jobs} at a time, deployopt run --jobs {jobs}); benchmarked alone, after "
            "every model's build had finished"
        )
        report.outcomes.append(finish_here(member, state, progress))
    return report
