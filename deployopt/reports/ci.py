"""What a CI system reads from a build: JUnit XML (one test case per verification and per baseline
check) and a Markdown summary for a pull-request comment. Both written atomically."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from deployopt.fsutil import write_text_atomic
from deployopt.measure.gate import GateResult
from deployopt.reports.model import NOT_KEPT, BuildReport, variant_table

if TYPE_CHECKING:
    from deployopt.flow.fleet import FleetReport


def junit_xml(report: BuildReport, gate: GateResult | None) -> str:
    return _document([_suite(report, gate)])


def fleet_junit_xml(fleet: FleetReport) -> str:
    """One test suite per model of a fleet; a model whose build stopped with an error is one failing case."""
    suites = []
    for outcome in fleet.outcomes:
        if outcome.report is not None:
            suites.append(_suite(outcome.report, None))
            continue
        case = ET.Element("testcase", classname=f"deployopt.{outcome.member.label}", name="build")
        error = str(outcome.error)
        ET.SubElement(case, "error", message=error, type=f"exit {outcome.exit_code}").text = error
        suite = ET.Element("testsuite", name=f"deployopt {outcome.member.label}", tests="1", failures="0", errors="1")
        suite.append(case)
        suites.append(suite)
    return _document(suites)


def _suite(report: BuildReport, gate: GateResult | None) -> ET.Element:
    cases: list[ET.Element] = []
    for variant in report.variants:
        if variant.verify is None:
            continue
        case = ET.Element("testcase", classname=f"deployopt.{report.model}.verify", name=variant.name)
        if variant.role == NOT_KEPT:  # a candidate deployopt tried on its own: its miss is news, not a failure
            ET.SubElement(case, "skipped", message="not kept: " + "; ".join(variant.verify.failures))
        elif not variant.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(variant.verify.failures), type="budget")
            failure.text = "\n".join(variant.verify.failures)
        cases.append(case)
    for check in gate.checks if gate else []:
        case = ET.Element(
            "testcase", classname=f"deployopt.{report.model}.baseline", name=f"{check.variant} {check.metric}"
        )
        detail = f"{check.current} vs baseline {check.baseline}: {check.limit}"
        if not check.passed:
            ET.SubElement(case, "failure", message=detail, type="regression").text = detail
        elif check.note:
            ET.SubElement(case, "system-out").text = check.note
        cases.append(case)
    failures = sum(1 for case in cases if case.find("failure") is not None)
    skipped = sum(1 for case in cases if case.find("skipped") is not None)
    suite = ET.Element(
        "testsuite",
        name=f"deployopt {report.model}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    suite.extend(cases)
    return suite


def _document(suites: list[ET.Element]) -> str:
    count = lambda key: sum(int(s.get(key, "0")) for s in suites)  # noqa: E731
    root = ET.Element("testsuites", tests=str(count("tests")), failures=str(count("failures")))
    if count("errors"):
        root.set("errors", str(count("errors")))
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def summary_markdown(report: BuildReport, gate: GateResult | None) -> str:
    passed = report.passed and (gate is None or gate.passed)
    lines = [f"## deployopt {'✅ PASS' if passed else '❌ FAIL'}: {report.model}", "", variant_table(report), ""]
    for failure in report.failures:
        lines.append(f"- ❌ budget: {failure}")
    if gate is not None:
        failed = [c for c in gate.checks if not c.passed]
        lines.append(
            f"Against baseline `{gate.baseline_path}`: {len(gate.checks) - len(failed)}/{len(gate.checks)} checks pass."
        )
        if failed:
            lines += ["", "| variant | check | baseline | now | rule |", "|---|---|---:|---:|---|"]
            lines += [f"| {c.variant} | {c.metric} | {c.baseline} | {c.current} | {c.limit} |" for c in failed]
        lines += [f"- note: {c.variant} {c.metric}: {c.note}" for c in gate.checks if c.note][:3]
    return "\n".join(lines) + "\n"


def write_ci_outputs(report: BuildReport, gate: GateResult | None, junit: Path | None, summary: Path | None) -> None:
    if junit is not None:
        write_text_atomic(junit, junit_xml(report, gate))
    if summary is not None:
        write_text_atomic(summary, summary_markdown(report, gate))


def fleet_summary_markdown(fleet: FleetReport) -> str:
    """A pull-request comment for a fleet: one line per model, then each built model's own summary."""
    lines = [
        f"## deployopt {'✅ PASS' if fleet.passed else '❌ FAIL'}: {len(fleet.outcomes)} models ({fleet.mode})",
        "",
    ]
    for outcome in fleet.outcomes:
        mark = "✅" if outcome.exit_code == 0 else "❌"
        why = str(outcome.error) if outcome.error else "; ".join(outcome.report.failures) or "every budget met"
        lines.append(f"- {mark} **{outcome.member.label}** (exit {outcome.exit_code}): {why}")
    for outcome in fleet.outcomes:
        if outcome.report is not None:
            lines += ["", summary_markdown(outcome.report, None).replace("## deployopt", "### deployopt", 1)]
    return "\n".join(lines) + "\n"


def write_fleet_ci_outputs(fleet: FleetReport, junit: Path | None, summary: Path | None) -> None:
    if junit is not None:
        write_text_atomic(junit, fleet_junit_xml(fleet))
    if summary is not None:
        write_text_atomic(summary, fleet_summary_markdown(fleet))
