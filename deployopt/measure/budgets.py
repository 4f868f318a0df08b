"""Accuracy budgets: what a user overrides, what each precision allows by default, and the one place that
combines them (:func:`resolve_budget`).

:class:`BudgetOverrides` is what the CLI options and pipeline files hold — every field optional, ``None``
meaning "keep the default". :class:`Budget` is a resolved budget an artifact is judged by; ``None`` there
means "not checked".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deployopt.measure.kinds import parse_declared
from deployopt.types import Precision

if TYPE_CHECKING:
    from deployopt.stages.prune.methods import PruneConfig


class _BudgetFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_abs_error: float | None = Field(None, ge=0, description="Max |candidate − reference| per output.")
    max_rel_error: float | None = Field(None, ge=0, description="Max |c − r| / max |r| per output.")
    min_cosine: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Mean per-sample cosine similarity, less two standard errors of that mean (its sampling error).",
    )
    min_worst_cosine: float | None = Field(
        None, ge=-1, le=1, description="Cosine similarity of the least similar sample (e.g. 0.99 for embeddings)."
    )
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="Fraction of samples with the same top-1 class (raw: near-ties count too)."
    )
    min_decisive_agreement: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Top-1 agreement on the decisive samples: those whose reference top-1 leads its runner-up by "
        "at least --decisive-margin probability.",
    )
    decisive_margin: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Probability lead of the reference's top-1 that makes a sample decisive [default: 0.1].",
    )
    max_mean_kl: float | None = Field(
        None, ge=0, description="Mean KL divergence of the candidate's class probabilities from the reference's."
    )
    min_correlation: float | None = Field(
        None, ge=-1, le=1, description="Regression outputs: correlation of the candidate's values with the reference's."
    )
    min_element_agreement: float | None = Field(
        None, ge=0, le=1, description="Multilabel outputs: share of elements on the same side of the threshold."
    )
    min_psnr: float | None = Field(None, description="Image outputs: PSNR in dB against the reference.")
    max_accuracy_drop: float | None = Field(None, ge=0, description="Task accuracy drop in points (needs labels).")
    outputs: tuple[str, ...] | None = Field(
        None,
        description="What the outputs are, KIND for all or NAME=KIND for one (repeatable): logits, embedding, "
        "regression, multilabel, image or auto; each kind gets its own checks [default: detected from the graph "
        "and the values, named in the report]",
    )

    @field_validator("outputs", mode="before")
    @classmethod
    def _one_kind_is_a_list(cls, value: Any) -> Any:
        value = (value,) if isinstance(value, str) else value
        if value is not None:
            parse_declared(tuple(value))  # a kind that does not exist is refused on one line
        return value


class BudgetOverrides(_BudgetFields):
    """The user's budget settings: each set field replaces the precision's default."""


class Budget(_BudgetFields):
    """A resolved accuracy budget of one artifact against the reference; ``None`` leaves a metric unchecked.
    ``output_kinds``: each output's kind as the build resolved it once (:mod:`.kinds`), so every judge of the build
    applies the same checks whatever artifact it judges; empty: detected from the values where judged."""

    output_kinds: dict[str, str] = Field(default_factory=dict)


DECISIVE_MARGIN = 0.1  # a sample is decisive when the reference's top-1 leads by this much probability
# A low precision's classifier budget without labels: agreement where the original model decides (near-ties,
# whose top-1 any rounding flips, do not count) plus a bound on how far the class probabilities move (KL), which
# catches damage spread over every sample. Chosen from measurements on real models (docs/benchmarks.md, "The
# judge"): OpenVINO bf16 and deployopt's kept int8 pass; NNCF's default int8 of EfficientNet-Lite0 does not.
LOW_PRECISION_CLASSIFIER = {"min_decisive_agreement": 0.98, "max_mean_kl": 0.01, "decisive_margin": DECISIVE_MARGIN}

DEFAULT_BUDGETS: dict[Precision, Budget] = {
    Precision.FP32: Budget(
        max_rel_error=1e-3,
        min_cosine=0.9999,
        min_top1_agreement=0.99,
        max_accuracy_drop=0.1,
        decisive_margin=DECISIVE_MARGIN,
        min_correlation=0.9999,
        min_element_agreement=0.999,
        min_psnr=60.0,
    ),
    Precision.FP16: Budget(
        max_rel_error=1e-2,
        min_cosine=0.999,
        max_accuracy_drop=0.5,
        min_correlation=0.999,
        min_element_agreement=0.995,
        min_psnr=45.0,
        **LOW_PRECISION_CLASSIFIER,
    ),
    # bf16 keeps fp32's range with 8 mantissa bits: no element-wise bound (a logit of 20 is off by ~0.1 after
    # one rounding), cosine between fp16's and int8's
    Precision.BF16: Budget(
        min_cosine=0.998,
        max_accuracy_drop=0.5,
        min_correlation=0.998,
        min_element_agreement=0.99,
        min_psnr=40.0,
        **LOW_PRECISION_CLASSIFIER,
    ),
    # int8: no default max_rel_error — on normalised embeddings it flags errors cosine shows are harmless. Cosine
    # 0.995 is what a user of a real pretrained model can deploy without re-validating (#14).
    Precision.INT8: Budget(
        min_cosine=0.995,
        max_accuracy_drop=0.5,
        min_correlation=0.99,
        min_element_agreement=0.98,
        min_psnr=30.0,
        **LOW_PRECISION_CLASSIFIER,
    ),
}


def resolve_budget(
    precision: Precision | str, overrides: BudgetOverrides | None = None, pruned: PruneConfig | None = None
) -> Budget:
    """The budget an artifact of ``precision`` is judged by: the precision's default, relaxed for a pruned
    model (``pruned``), then the user's overrides on top."""
    budget = DEFAULT_BUDGETS.get(precision, DEFAULT_BUDGETS[Precision.FP32])
    if pruned is not None:
        budget = _pruned(budget, pruned)
    changes = overrides.model_dump(exclude_none=True) if overrides is not None else {}
    return budget.model_copy(update=changes)


def _pruned(budget: Budget, config: PruneConfig) -> Budget:
    """Pruning changes the function on purpose: a pruned model's artifacts are judged against the unpruned
    original by task accuracy (the prune budget plus the precision's own allowance) and, where there are no
    labels, by top-1 agreement — not by element-wise closeness, nor by how close the class probabilities stay."""
    return budget.model_copy(
        update={
            "max_abs_error": None,
            "max_rel_error": None,
            "min_cosine": None,
            "min_worst_cosine": None,
            "min_decisive_agreement": None,
            "max_mean_kl": None,
            "min_correlation": None,
            "min_element_agreement": None,
            "min_psnr": None,
            "min_top1_agreement": min(budget.min_top1_agreement or 1.0, 0.9),
            "max_accuracy_drop": config.max_accuracy_drop + (budget.max_accuracy_drop or 0.0),
        }
    )
