"""The CI gate: compare a build's report with a baseline report and fail on regressions.

Three kinds of budget, per variant present in both reports:
- accuracy: task accuracy (with labels) may not drop by more than ``max_accuracy_regression`` points;
- size: the artifact may not grow by more than ``max_size_growth`` (a fraction);
- latency: p50 at each batch size may not grow by more than a noise-aware margin — the larger of
  ``max_latency_regression`` and ``noise_factor`` × the relative spread of the per-repeat medians seen in
  either run. With a single repeat the spread is unknown and the check says so; use ``--repeats 3``.
Variants missing from the current run fail (an artifact that disappeared is a regression); new ones pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field

from deployopt.errors import InputFileError
from deployopt.fsutil import read_json
from deployopt.measure.bench import relative_spread
from deployopt.types import REPORT_FORMAT


class RegressionBudget(BaseModel):
    """How much worse than the baseline a build may be before the gate fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_accuracy_regression: float = Field(0.5, ge=0, description="points of task accuracy vs baseline")
    max_size_growth: float = Field(0.05, ge=0, description="fraction of the baseline artifact's size")
    max_latency_regression: float = Field(0.10, ge=0, description="fraction of the baseline p50, at least")
    noise_factor: float = Field(3.0, ge=0, description="margin = this × observed relative spread, if larger")


@dataclass
class GateCheck:
    variant: str
    metric: str  # "accuracy" / "size" / "latency b32" / "present"
    baseline: float | None
    current: float | None
    limit: str  # the rule applied, in words
    passed: bool
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class GateResult:
    baseline_path: str
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [
            f"{c.variant} {c.metric}: {c.current} vs baseline {c.baseline} ({c.limit})"
            for c in self.checks
            if not c.passed
        ]

    def to_json(self) -> dict:
        return {"baseline": self.baseline_path, "passed": self.passed, "checks": [c.to_json() for c in self.checks]}


def load_baseline(path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict) or "variants" not in data:
        raise InputFileError(f"{path}: not a deployopt report.json; pass the report.json of an earlier build")
    # reports written before the format field existed have none: they are read as the first format
    if data.get("format", REPORT_FORMAT) != REPORT_FORMAT:
        raise InputFileError(
            f"{path}: report format {data['format']} is not the one this deployopt reads ({REPORT_FORMAT}); "
            "upgrade deployopt or rebuild the baseline"
        )
    return data


def _latency_checks(name: str, base: dict, current: dict, budget: RegressionBudget) -> list[GateCheck]:
    checks = []
    for batch, now in current.get("latency", {}).items():
        before = base.get("latency", {}).get(batch)
        if before is None:
            continue
        spreads = [s for m in (before, now) if (s := relative_spread(m.get("p50_per_repeat_ms") or [])) is not None]
        margin = max([budget.max_latency_regression] + [budget.noise_factor * s for s in spreads])
        note = "" if len(spreads) == 2 else "single repeat in a run: noise unknown, fixed margin used (--repeats 3)"
        ratio = now["p50_ms"] / before["p50_ms"]
        checks.append(
            GateCheck(
                name,
                f"latency b{batch}",
                round(before["p50_ms"], 4),
                round(now["p50_ms"], 4),
                f"p50 may grow ≤ {margin * 100:.0f} % (now {(ratio - 1) * 100:+.1f} %)",
                ratio <= 1 + margin,
                note,
            )
        )
    return checks


def compare_reports(current: dict, baseline: dict, budget: RegressionBudget, baseline_path: str = "") -> GateResult:
    """Every check of ``current`` (a report.json dict) against ``baseline``."""
    now_by_name = {v["name"]: v for v in current["variants"]}
    checks: list[GateCheck] = []
    for base in baseline["variants"]:
        name = base["name"]
        now = now_by_name.get(name)
        if now is None:
            checks.append(GateCheck(name, "present", 1, 0, "every baseline variant must still be produced", False))
            continue
        if base.get("accuracy") is not None and now.get("accuracy") is not None:
            drop = base["accuracy"] - now["accuracy"]
            checks.append(
                GateCheck(
                    name,
                    "accuracy",
                    base["accuracy"],
                    now["accuracy"],
                    f"may drop ≤ {budget.max_accuracy_regression} points (now {drop:+.2f})",
                    drop <= budget.max_accuracy_regression + 1e-9,
                )
            )
        growth = now["size_bytes"] / base["size_bytes"] - 1 if base["size_bytes"] else 0.0
        checks.append(
            GateCheck(
                name,
                "size",
                base["size_bytes"],
                now["size_bytes"],
                f"may grow ≤ {budget.max_size_growth * 100:.0f} % (now {growth * 100:+.1f} %)",
                growth <= budget.max_size_growth + 1e-12,
            )
        )
        checks += _latency_checks(name, base, now, budget)
    return GateResult(baseline_path, checks)
