"""The final verification of a build: every artifact against the original, by the build's one judge.

A verdict a stage already reached on the very bytes (an OpenVINO candidate's) is reused from the run directory;
the others are judged together outside the build's process (a runtime that crashes on one fails that artifact's
verdict, not the build), and the original runs at most once per build.
"""

from __future__ import annotations

import dataclasses

from deployopt.measure.verify import VerifyResult, judge_in_own_process
from deployopt.reports.model import BuildReport, VariantReport
from deployopt.runners import spec_for_model
from deployopt.sources.detect import artifact_facts
from deployopt.stages.base import BuildContext
from deployopt.types import StepRecord


def verify_artifacts(ctx: BuildContext, report: BuildReport) -> None:
    """Verify every artifact against the original: verdicts already reached on the same bytes are reused, the rest
    judged together outside this process (:func:`~deployopt.measure.verify.judge_in_own_process`)."""
    verdicts: dict[str, VerifyResult] = {}
    pending: dict[str, tuple] = {}
    keys: dict[str, dict] = {}
    for name, artifact in ctx.artifacts.items():
        facts = artifact_facts(artifact.path)
        ctx.run.record_artifact(name, artifact.path, precision=facts["precision"])
        judge = ctx.judge(facts["precision"])
        keys[name] = ctx.verification_key(ctx.run.manifest["artifacts"][name]["sha256"], judge)
        cached = ctx.run.cached_result(f"verify:{name}", keys[name])
        if cached is not None:
            verdicts[name] = dataclasses.replace(VerifyResult.from_json(cached), cached=True)
        else:
            pending[name] = (judge, spec_for_model(str(artifact.path)))
    for name, result in judge_in_own_process(pending, ctx.progress).items():
        ctx.run.record_result(f"verify:{name}", keys[name], result.to_json())
        verdicts[name] = result
    for name, artifact in ctx.artifacts.items():
        facts, spec, result = artifact_facts(artifact.path), spec_for_model(str(artifact.path)), verdicts[name]
        variant = VariantReport(
            name,
            str(artifact.path),
            facts["precision"],
            facts["size_bytes"],
            runtime=spec.backend,
            inference_precision=spec.precision if spec.backend == "openvino" else "",
        )
        variant.verify, variant.accuracy = result, result.candidate_accuracy
        report.variants[0].accuracy = result.reference_accuracy
        report.variants.append(variant)
        report.stages.append(StepRecord(f"verify {name}", result.cached, result.seconds or 0.0, result.summary()))
        ctx.progress(f"verify {name}: {result.verdict}" + (" (reused)" if result.cached else ""))
