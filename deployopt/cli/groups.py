"""Every option group of the command line, each declared once and shared by the verbs that take it.

The rule (see :mod:`deployopt.cli.fields`): an option is ``--<prefix><field>`` of the pipeline key it sets —
``build.bench.batch_sizes`` is ``--batch-sizes``, ``build.quantize.int8.mode`` is ``--int8-mode``,
``build.prune.amount`` is ``--prune-amount``. The exceptions are listed here, next to the deprecated
spellings that still work for one release.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from deployopt.api import (
    VARIANT_STEPS,
    BenchConfig,
    Bf16Config,
    BudgetOverrides,
    BuildConfig,
    EngineConfig,
    ExportConfig,
    Fp16Config,
    GraphConfig,
    Int8Config,
    Preprocess,
    PruneConfig,
    QuantizeData,
    QuantizedVariants,
    RegressionBudget,
    RuntimeOptions,
    SourceOptions,
    TrainConfig,
    TritonConfig,
    VerifyConfig,
)
from deployopt.cli.fields import OptionGroup, unwrap_optional
from deployopt.errors import UsageError

SOURCE = OptionGroup(
    BuildConfig,
    only=("arch", "inputs", "trust_pickle", "task", "max_length"),
    names={"inputs": "--input", "trust_pickle": "--trust-pickle"},
    metavars={"inputs": "NAME:SHAPE[:DTYPE]", "arch": "NAME", "max_length": "TOKENS"},
)
INPUT = OptionGroup(  # verbs that take ONNX only: the signature, refined within the graph's own inputs
    BuildConfig, only=("inputs",), names={"inputs": "--input"}, metavars={"inputs": "NAME:SHAPE[:DTYPE]"}
)
OUT = OptionGroup(BuildConfig, only=("out",), names={"out": "-o --out"})
TRITON = OptionGroup(TritonConfig, names={"all_variants": "--all", "force": "--force"})
TRITON_OUT = OptionGroup(BuildConfig, only=("triton_repo",), names={"triton_repo": "--triton-repo"})
BUILD = OptionGroup(
    BuildConfig,
    only=("target", "runtime", "transformer_fusion", "force", "strict", "memory_budget_mb"),
    names={"force": "--force"},
)
NO_BENCH = OptionGroup(BuildConfig, only=("skip_bench",), names={"skip_bench": "--no-bench"})
EXPORT = OptionGroup(ExportConfig, exclude=("verbose",))  # verbose is the global -v
GRAPH = OptionGroup(GraphConfig)
DATA = OptionGroup(
    VerifyConfig,
    exclude=("budget", "seed"),
    names={"batch_size": "--verify-batch-size"},
    helps={"samples": "generated verification samples when no real data is given"},
)
BENCH_DATA = OptionGroup(  # bench: the same --data as build and verify, to measure on real inputs
    VerifyConfig,
    only=("data",),
    helps={"data": "real inputs (.npz by input name; text for a text model) to measure on, cycled to each batch"},
)
EXPORT_DATA = OptionGroup(  # export: the same --data, to run the model on real inputs while exporting
    VerifyConfig,
    only=("data",),
    helps={"data": "real inputs (.npz by input name; text for a text model) to run the model on while exporting"},
)
BUDGET = OptionGroup(BudgetOverrides)
CALIBRATION = OptionGroup(
    QuantizedVariants,
    only=("calibration", "preprocess"),
    parsers={"preprocess": Preprocess.parse},
    metavars={"preprocess": "KEY=VALUE,..."},
)
QUANTIZE_DATA = OptionGroup(
    QuantizeData, parsers={"preprocess": Preprocess.parse}, metavars={"preprocess": "KEY=VALUE,..."}
)
_INT8_RENAMES = {
    "samples": "--calibration-samples",
    "method": "--calibration-method",
    "calibration_batch": "--calibration-batch",
}
INT8 = OptionGroup(Int8Config, prefix="int8-", exclude=("target",), names=_INT8_RENAMES)
INT8_VERB = OptionGroup(  # quantize: the same options, plus the int8 target; the old spellings as aliases
    Int8Config,
    prefix="int8-",
    names=_INT8_RENAMES | {"target": "--target"},
    aliases={
        "mode": "--mode",
        "format": "--format",
        "method": "--method",
        "exclude": "--exclude",
        "max_rounds": "--max-rounds",
        "weight_bits": "--weight-bits",
    },
)
FP16 = OptionGroup(Fp16Config, prefix="fp16-", aliases={"block": "--block"})
BF16 = OptionGroup(Bf16Config, prefix="bf16-")
PRUNE = OptionGroup(  # build: pruning happens when --prune-method is given
    PruneConfig,
    prefix="prune-",
    exclude=("seed",),
    metavars={"exclude": "LAYER"},
    aliases={"method": "--prune"},
    defaults={"method": None},
    helps={"method": "prune the PyTorch model before export (artifacts are verified against the unpruned one)"},
)
PRUNE_VERB = OptionGroup(
    PruneConfig,
    prefix="prune-",
    exclude=("seed",),
    metavars={"exclude": "LAYER"},
    aliases={
        "method": "--method",
        "amount": "--amount",
        "importance": "--importance",
        "exclude": "--exclude",
        "round_to": "--round-to",
        "finetune_epochs": "--finetune-epochs",
        "finetune_lr": "--finetune-lr",
        "distill": "--distill",
        "train_data": "--train-data",
        "max_accuracy_drop": "--max-accuracy-drop",
    },
)
ENGINE = OptionGroup(EngineConfig, metavars={"shapes": "NAME:MIN/OPT/MAX", "device": "cuda[:N]"})
BENCH = OptionGroup(BenchConfig, exclude=("seed",), aliases={"batch_sizes": "--batch"})
THREADS = OptionGroup(BenchConfig, only=("threads",))
RUNTIME = OptionGroup(RuntimeOptions, metavars={"device": "cpu|cuda[:N]"})
GATE = OptionGroup(RegressionBudget)
TRAIN = OptionGroup(TrainConfig, exclude=("arch_kwargs",))


def gate_files(func):
    """The CI gate's inputs and outputs (files, not settings): --baseline, --junit, --summary, and its budget."""
    func = GATE(func)
    func = click.option("--summary", type=click.Path(path_type=Path), help="Write a Markdown summary (PR comment).")(
        func
    )
    func = click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML for CI test reports.")(func)
    return click.option(
        "--baseline",
        type=click.Path(path_type=Path),
        help="report.json of an earlier build: fail (exit 1) on accuracy, size or latency regressions against it.",
    )(func)


def json_option(what: str):
    """``--json``: the verb's result as JSON on stdout (progress and verdicts stay on stderr)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON instead of text.")


def source_options(kw: dict[str, Any], group: OptionGroup = SOURCE) -> SourceOptions:
    return SourceOptions(**group.values(kw))


def prune_config(kw: dict[str, Any], group: OptionGroup = PRUNE) -> PruneConfig | None:
    """build: a prune section only when --prune-method is given (other --prune-* options need it)."""
    given = group.values(kw, given_only=True)
    if not given:
        return None
    if "method" not in given:
        raise UsageError(f"{', '.join(group.flag(k) for k in given)} need --prune-method METHOD")
    return PruneConfig(**given)


# Where each group's fields live in a pipeline file, for the pipeline reference (``deployopt schema --markdown``,
# docs/reference/pipeline.md).
PIPELINE_SECTIONS: dict[str, tuple[OptionGroup, ...]] = {
    "build": (SOURCE, OUT, TRITON_OUT, BUILD, NO_BENCH),
    "build.export": (EXPORT,),
    "build.graph": (GRAPH,),
    "build.verify": (DATA,),
    "build.verify.budget": (BUDGET,),
    "build.quantize": (CALIBRATION,),
    "build.quantize.int8": (INT8,),
    "build.quantize.fp16": (FP16,),
    "build.quantize.bf16": (BF16,),
    "build.prune": (PRUNE,),
    "build.bench": (BENCH,),
    "build.engine": (ENGINE,),
    "train": (TRAIN,),
}
_HAND_WRITTEN = {
    "build.quantize.make": ", ".join(f"--{v}/--no-{v}" for v in VARIANT_STEPS),
    "build.quantize.required": ", ".join(f"--{v}" for v in VARIANT_STEPS),
    "train.arch_kwargs": "--arch-arg",
}


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    text = re.sub(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*)", r"\1", text)  # deployopt.flow.pipeline.FleetEntry → FleetEntry
    return text.removeprefix("<class '").removesuffix("'>")


def _leaves(model: type[BaseModel], path: str):
    for name, info in model.model_fields.items():
        inner = unwrap_optional(info.annotation)
        key = f"{path}.{name}" if path else name
        covered = any(name in dict(grp.fields()) for grp in PIPELINE_SECTIONS.get(path, ()))
        if isinstance(inner, type) and issubclass(inner, BaseModel) and not covered:
            yield from _leaves(inner, key)
        else:
            yield key, name, info


def pipeline_reference() -> str:
    """Every pipeline key as a Markdown table: type, default, the command-line option that sets it, meaning."""
    from deployopt.flow.pipeline import Pipeline  # the schema's root model, read only to list its keys

    rows = ["| key | type | default | option | meaning |", "|---|---|---|---|---|"]
    for key, name, info in _leaves(Pipeline, ""):
        section = key.rpartition(".")[0]
        groups = [grp for grp in PIPELINE_SECTIONS.get(section, ()) if name in dict(grp.fields())]
        option = _HAND_WRITTEN.get(key) or (groups[0].display_flag(name) if groups else "–")
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(
            f"| `{key}` | {_type_name(unwrap_optional(info.annotation))} | {default} | `{option}` | {meaning} |"
        )
    return "\n".join(rows) + "\n"
