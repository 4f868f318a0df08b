"""Option groups shared by several CLI verbs, and their translation into typed configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def batch_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers, e.g. 1,32") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(f"'{value}': batch sizes must be positive integers, e.g. 1,32")
    return sizes


def option_group(*decorators: Callable) -> Callable:
    """Bundle click options so several verbs share one definition."""

    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


source_options = option_group(
    click.option(
        "--arch", help="Architecture for a state_dict: registered name, torchvision:NAME or pkg.module:factory."
    ),
    click.option(
        "--input",
        "inputs",
        multiple=True,
        metavar="NAME:SHAPE[:DTYPE]",
        help="Input signature, repeatable; symbolic dims (batch, seq=128) are dynamic.",
    ),
    click.option(
        "--trust-pickle", is_flag=True, help="Allow loading a whole pickled nn.Module (runs code from the file)."
    ),
)
data_options = option_group(
    click.option(
        "--data", type=click.Path(path_type=Path), help=".npz with one array per input name (and optionally 'labels')."
    ),
    click.option("--labels", type=click.Path(path_type=Path), help=".npz/.npy with one integer label per sample."),
    click.option(
        "--samples", type=int, default=64, show_default=True, help="Generated samples when no real data is given."
    ),
)
budget_options = option_group(
    click.option("--max-abs-error", type=float, help="Budget: max |candidate − reference| per output."),
    click.option("--max-rel-error", type=float, help="Budget: max |c − r| / max |r| per output."),
    click.option("--min-cosine", type=float, help="Budget: mean per-sample cosine similarity."),
    click.option("--min-top1-agreement", type=float, help="Budget: fraction of samples with the same top-1 class."),
    click.option("--max-accuracy-drop", type=float, help="Budget: task accuracy drop in points (needs labels)."),
    click.option(
        "--outputs",
        type=click.Choice(["auto", "logits", "embedding"]),
        help="What 2-D outputs are; top-1 checks apply to logits [default: auto, unit-norm rows = embedding].",
    ),
)
bench_options = option_group(
    click.option(
        "--batch",
        "batch_sizes",
        default="1,32",
        show_default=True,
        callback=batch_sizes,
        help="Batch sizes to measure, comma-separated.",
    ),
    click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (default: all cores)."),
    click.option(
        "--repeats",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Worker processes per model; medians over repeats are reported.",
    ),
)
runtime_options = option_group(
    click.option(
        "--provider",
        type=click.Choice(["cpu", "cuda", "tensorrt"]),
        default="cpu",
        show_default=True,
        help="ONNX Runtime execution provider for ONNX models; fails if it is not the active one.",
    ),
    click.option(
        "--device",
        default="cpu",
        show_default=True,
        metavar="cpu|cuda[:N]",
        help="Device for PyTorch models (TensorRT engines always run on CUDA).",
    ),
    click.option(
        "--torch-precision",
        type=click.Choice(["fp32", "fp16"]),
        default="fp32",
        show_default=True,
        help="Run PyTorch models in half precision (GPU baselines; needs --device cuda).",
    ),
    click.option("--torch-compile", is_flag=True, help="Wrap PyTorch models in torch.compile."),
)
int8_build_options = option_group(
    click.option(
        "--calibration",
        type=click.Path(path_type=Path),
        help="int8 calibration data: .npz/.npy or an image folder [default: the model's registered dataset].",
    ),
    click.option("--preprocess", help="For an image-folder --calibration, e.g. resize=256,crop=224."),
    click.option("--int8-mode", type=click.Choice(["auto", "static", "dynamic"]), default="auto", show_default=True),
    click.option(
        "--int8-format",
        type=click.Choice(["auto", "qdq", "qoperator"]),
        default="auto",
        show_default=True,
        help="auto tries both and keeps QDQ unless QOperator is clearly faster here; fix it for identical "
        "artifacts across machines.",
    ),
)
prune_options = option_group(
    click.option(
        "--prune",
        "prune_method",
        type=click.Choice(["channels", "2:4", "magnitude"]),
        help="Prune the PyTorch model before export; artifacts are verified against the unpruned original.",
    ),
    click.option("--prune-amount", type=float, help="Fraction pruned [channels 0.3, magnitude 0.5]."),
    click.option("--prune-finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True),
)
target_options = option_group(
    click.option(
        "--target",
        type=click.Choice(["cpu", "tensorrt"]),
        default="cpu",
        show_default=True,
        help="tensorrt: also build fp16 and int8 (Q/DQ) TensorRT engines, verify and bench them on the GPU.",
    ),
    click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="Engines' max batch."),
    click.option("--sparse-weights", is_flag=True, help="Engines: allow 2:4 sparse kernels (2:4-pruned models)."),
)
gate_options = option_group(
    click.option(
        "--baseline",
        type=click.Path(path_type=Path),
        help="report.json of an earlier build: fail (exit 1) on accuracy, size or latency regressions against it.",
    ),
    click.option("--max-accuracy-regression", type=float, default=0.5, show_default=True, help="Points vs baseline."),
    click.option("--max-size-growth", type=float, default=0.05, show_default=True, help="Fraction vs baseline."),
    click.option(
        "--max-latency-regression",
        type=float,
        default=0.10,
        show_default=True,
        help="Fraction vs baseline p50; widened to 3× the spread between repeats when that is larger.",
    ),
    click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML for CI test reports."),
    click.option("--summary", type=click.Path(path_type=Path), help="Write a Markdown summary (PR comment)."),
)


def gate_config(kw: dict[str, Any]):
    from deployopt.measure.gate import RegressionBudget

    return RegressionBudget(
        max_accuracy_drop=kw.pop("max_accuracy_regression"),
        max_size_growth=kw.pop("max_size_growth"),
        max_latency_regression=kw.pop("max_latency_regression"),
    )


def prune_config(kw: dict[str, Any]):
    from deployopt.stages.prune.methods import PruneConfig

    method, amount, epochs = kw.pop("prune_method"), kw.pop("prune_amount"), kw.pop("prune_finetune_epochs")
    if method is None:
        if amount is not None or epochs:
            raise click.UsageError("--prune-amount / --prune-finetune-epochs need --prune METHOD")
        return None
    return PruneConfig(method=method, amount=amount, finetune_epochs=epochs)


def engine_config(kw: dict[str, Any]):
    from deployopt.stages.engine.build import EngineConfig

    return EngineConfig(max_batch=kw.pop("max_batch"), sparse_weights=kw.pop("sparse_weights"))


def runtime(kw: dict[str, Any]):
    from deployopt.api import RuntimeOptions

    return RuntimeOptions(
        provider=kw.pop("provider"),
        device=kw.pop("device"),
        precision=kw.pop("torch_precision"),
        compile=kw.pop("torch_compile"),
    )


def source(arch: str | None, inputs: tuple[str, ...], trust_pickle: bool):
    from deployopt.sources.detect import SourceOptions

    return SourceOptions(arch=arch, inputs=tuple(inputs), trust_pickle=trust_pickle)


def verify_config(kw: dict[str, Any]):
    from deployopt.measure.budgets import BudgetOverrides
    from deployopt.measure.verify import VerifyConfig

    budget = BudgetOverrides(**{k: kw.pop(k) for k in list(BudgetOverrides.model_fields) if k in kw})
    return VerifyConfig(data=kw.pop("data"), labels=kw.pop("labels"), samples=kw.pop("samples"), budget=budget)


def variants_config(kw: dict[str, Any]):
    from deployopt.data.calibration import Preprocess
    from deployopt.flow.build import QuantizedVariants
    from deployopt.stages.int8.quantize import Int8Config

    make = tuple(v for v, wanted in (("fp16", kw.pop("make_fp16")), ("int8", kw.pop("make_int8"))) if wanted)
    preprocess = kw.pop("preprocess")
    return QuantizedVariants(
        make=make,
        calibration=kw.pop("calibration"),
        preprocess=Preprocess.parse(preprocess) if preprocess else None,
        int8=Int8Config(mode=kw.pop("int8_mode"), format=kw.pop("int8_format")),
    )


def bench_config(kw: dict[str, Any]):
    from deployopt.measure.bench import BenchConfig

    return BenchConfig(batch_sizes=kw.pop("batch_sizes"), threads=kw.pop("threads"), repeats=kw.pop("repeats"))
