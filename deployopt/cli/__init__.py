"""The ``deployopt`` command line: parses options into typed configs and calls :mod:`deployopt.api`.

Nothing heavy is imported at module level, so ``deployopt --help`` and ``--version`` work without
torch or onnxruntime. Errors become one line on stderr and the exit code of their class
(:mod:`deployopt.errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import click

from deployopt import __version__
from deployopt.cli import console, options
from deployopt.cli import engine as cli_engine
from deployopt.cli import measure as cli_measure
from deployopt.cli import model as cli_model
from deployopt.errors import (
    EXIT_BUDGET,
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DeployoptError,
)

_NOISY_MODULES = r"(torch|onnx|onnxscript|onnxslim|onnxruntime|onnx_ir|torchvision)(\.|$)"


class _State:
    debug = False
    verbose = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="deployopt")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.option("--verbose", "-v", is_flag=True, help="Show exporter and library messages.")
def cli(debug: bool, verbose: bool) -> None:
    """Take a PyTorch model to a deployable, verified, faster artifact.

    \b
    Quick start:  deployopt demo
    Your model:   deployopt build model.pt --input input:batch,3,224,224
    """
    _State.debug, _State.verbose = debug, verbose
    if not verbose:
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@options.source_options
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Run directory [default: deployopt-out/<model>].")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset for export.")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True)
@click.option("--onnxslim/--no-onnxslim", default=True, show_default=True, help="Graph simplification with onnxslim.")
@click.option(
    "--ort-basic/--no-ort-basic",
    default=True,
    show_default=True,
    help="Try ONNX Runtime's basic offline optimiser (kept only if it removes nodes).",
)
@options.data_options
@click.option("--fp16/--no-fp16", "make_fp16", default=True, show_default=True, help="Make the fp16 variant.")
@click.option("--int8/--no-int8", "make_int8", default=True, show_default=True, help="Make the int8 variant.")
@options.prune_options
@options.int8_build_options
@options.target_options
@options.budget_options
@options.bench_options
@click.option("--no-bench", is_flag=True, help="Skip benchmarking.")
@click.option("--force", is_flag=True, help="Redo every stage instead of reusing cached results.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@click.option("--save-pipeline", type=click.Path(path_type=Path), help="Also write this run as a pipeline YAML file.")
@options.gate_options
def build(model: Path, **kw: Any) -> int:
    """Export MODEL to ONNX, optimise the graph, verify and benchmark every artifact, write a report.

    Exits 1 when an artifact misses its accuracy budget.
    """
    from deployopt.api import BuildConfig
    from deployopt.api import build as run_build
    from deployopt.stages.export import ExportConfig
    from deployopt.stages.graph import GraphConfig

    as_json, save_pipeline = kw.pop("as_json"), kw.pop("save_pipeline")
    gate = (kw.pop("baseline"), options.gate_config(kw), kw.pop("junit"), kw.pop("summary"))
    config = BuildConfig(
        arch=kw.pop("arch"),
        inputs=tuple(kw.pop("inputs")),
        trust_pickle=kw.pop("trust_pickle"),
        out=kw.pop("out"),
        export=ExportConfig(opset=kw.pop("opset"), exporter=kw.pop("exporter"), verbose=_State.verbose),
        graph=GraphConfig(onnxslim=kw.pop("onnxslim"), ort_basic=kw.pop("ort_basic")),
        verify=options.verify_config(kw),
        prune=options.prune_config(kw),
        quantize=options.variants_config(kw),
        target=kw.pop("target"),
        engine=options.engine_config(kw),
        bench=options.bench_config(kw),
        skip_bench=kw.pop("no_bench"),
        force=kw.pop("force"),
    )
    if save_pipeline:
        from deployopt.flow.pipeline import to_yaml
        from deployopt.fsutil import write_text_atomic

        write_text_atomic(save_pipeline, to_yaml(model, config))
    report = run_build(model, config, progress=console.progress)
    return console.finish_build(report, as_json, *gate)


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a pipeline setting, e.g. --set build.bench.repeats=3 (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@options.gate_options
def run(pipeline: Path, overrides: tuple[str, ...], as_json: bool, **kw: Any) -> int:
    """Run a YAML PIPELINE (see pipelines/); it is validated completely before any work starts.

    With --baseline it is a CI gate: exit 1 on a budget miss or a regression against the earlier report.
    """
    from deployopt.flow.pipeline import run_pipeline

    report = run_pipeline(pipeline, list(overrides), progress=console.progress)
    return console.finish_build(report, as_json, kw["baseline"], options.gate_config(kw), kw["junit"], kw["summary"])


@cli.command()
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    default=Path("deployopt-out"),
    show_default=True,
    help="Where the checkpoint and run directory go.",
)
@click.option("--no-bench", is_flag=True, help="Skip benchmarking.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
def demo(out: Path, no_bench: bool, as_json: bool) -> int:
    """Train the digits CNN (once, ~15 s) and run `build` on it."""
    from deployopt.api import BuildConfig, run_demo

    report = run_demo(out, BuildConfig(skip_bench=no_bench), progress=console.progress)
    return console.show_build(report, as_json)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")
@options.source_options
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True)
def export(model: Path, out: Path, arch, inputs, trust_pickle, opset: int, exporter: str) -> int:
    """Export a PyTorch MODEL to ONNX (dynamic batch, checked with onnx.checker)."""
    from deployopt.api import ExportConfig
    from deployopt.api import export as run_export

    result = run_export(
        model,
        out,
        options.source(arch, inputs, trust_pickle),
        ExportConfig(opset=opset, exporter=exporter, verbose=_State.verbose),
    )
    click.echo(
        f"{out}: exported with the {result.exporter} exporter, opset {result.opset}, "
        f"outputs {result.output_names} in {result.seconds:.1f} s"
    )
    if result.fallback_reason:
        click.echo(f"note: fell back because the {result.fallback_reason}", err=True)
    return EXIT_OK


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")
@click.option("--onnxslim/--no-onnxslim", default=True, show_default=True)
@click.option("--ort-basic/--no-ort-basic", default=True, show_default=True)
def optimize(model: Path, out: Path, onnxslim: bool, ort_basic: bool) -> int:
    """Graph-optimise an ONNX MODEL: folding, dead code, Identity/Dropout removal, Conv+BN fusion."""
    from deployopt.api import GraphConfig
    from deployopt.api import optimize as run_optimize

    result = run_optimize(model, out, GraphConfig(onnxslim=onnxslim, ort_basic=ort_basic))
    click.echo(
        f"{out}: {result.nodes_before} → {result.nodes_after} nodes, "
        f"{result.size_before:,} → {result.size_after:,} bytes (passes: {', '.join(result.passes) or 'none'})"
    )
    return EXIT_OK


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")
@click.option("--int8", "precision", flag_value="int8", help="Quantize to int8 (accuracy-aware).")
@click.option("--fp16", "precision", flag_value="fp16", help="Convert to float16.")
@click.option(
    "--calibration", type=click.Path(path_type=Path), help="Calibration data: .npz/.npy or a folder of images."
)
@click.option(
    "--preprocess", help="For image folders, e.g. resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225"
)
@click.option("--dataset", help="Registered dataset: calibrate on its 'val' split, verify on 'test'.")
@click.option(
    "--data", type=click.Path(path_type=Path), help="Verification inputs (.npz); default: the calibration data."
)
@click.option("--labels", type=click.Path(path_type=Path), help="Labels for --data.")
@click.option("--samples", type=click.IntRange(min=1), default=128, show_default=True, help="Calibration samples.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--per-channel/--per-tensor", default=True, show_default=True)
@click.option("--mode", type=click.Choice(["auto", "static", "dynamic"]), default="auto", show_default=True)
@click.option(
    "--format", "quant_format", type=click.Choice(["auto", "qdq", "qoperator"]), default="auto", show_default=True
)
@click.option("--exclude", multiple=True, metavar="NODE_OR_OPTYPE", help="Keep these nodes / op types in float.")
@click.option("--target", type=click.Choice(["cpu", "tensorrt"]), default="cpu", show_default=True)
@click.option(
    "--max-rounds",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Accuracy-aware rounds that keep the most damaging nodes in float when the budget is missed.",
)
@click.option(
    "--weight-bits",
    type=click.Choice(["auto", "7", "8"]),
    default="auto",
    show_default=True,
    help="U8S8 weight range; auto picks 7 on x86 CPUs without VNNI, whose int8 kernels saturate at 8.",
)
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True, help="fp16: keep float32 I/O.")
@click.option("--block", multiple=True, metavar="OPTYPE", help="fp16: op types kept in float32.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for verification and measurements.")
@options.budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize(model: Path, out: Path, precision: str | None, **kw: Any) -> int:
    """Quantize an ONNX MODEL to int8 or fp16, verify it against MODEL, exit 1 when outside the budget."""
    from deployopt.api import Fp16Config, Int8Config, QuantizeData
    from deployopt.api import quantize as run_quantize
    from deployopt.data.calibration import Preprocess
    from deployopt.errors import UsageError
    from deployopt.measure.budgets import BudgetOverrides

    if precision is None:
        raise UsageError("choose --int8 or --fp16")
    as_json = kw.pop("as_json")
    budget = BudgetOverrides(**{k: kw.pop(k) for k in list(BudgetOverrides.model_fields)})
    data = QuantizeData(
        calibration=kw["calibration"],
        preprocess=Preprocess.parse(kw["preprocess"]) if kw["preprocess"] else None,
        dataset=kw["dataset"],
        data=kw["data"],
        labels=kw["labels"],
    )
    int8 = fp16 = None
    if precision == "int8":
        int8 = Int8Config(
            mode=kw["mode"],
            format=kw["quant_format"],
            method=kw["method"],
            per_channel=kw["per_channel"],
            samples=kw["samples"],
            exclude=tuple(kw["exclude"]),
            target=kw["target"],
            weight_bits=kw["weight_bits"],
            max_rounds=kw["max_rounds"],
        )
    else:
        fp16 = Fp16Config(keep_io_types=kw["keep_io_types"], block=tuple(kw["block"]))
    outcome = run_quantize(
        model, out, int8=int8, fp16=fp16, data=data, budget=budget, threads=kw["threads"], progress=console.progress
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "precision": outcome.precision,
                    "passed": outcome.passed,
                    "details": outcome.details,
                    "verify": outcome.verify.to_json(),
                },
                indent=2,
            )
        )
    else:
        console.show_quantize(out, outcome)
    return EXIT_OK if outcome.passed else EXIT_BUDGET


@cli.command(name="exit-codes")
def exit_codes() -> int:
    """List deployopt's exit codes."""
    for code, meaning in EXIT_CODES.items():
        click.echo(f"{code:>4}  {meaning}")
    return EXIT_OK


cli.add_command(cli_measure.verify)
cli.add_command(cli_measure.bench)
cli.add_command(cli_engine.engine)
cli.add_command(cli_engine.doctor)
cli.add_command(cli_model.prune)
cli.add_command(cli_model.train)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and turn every failure into one line plus an exit code."""
    try:
        code = cli.main(args=argv, prog_name="deployopt", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help / --version
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("deployopt: interrupted; finished artifacts are kept, unfinished ones were discarded", err=True)
        code = EXIT_INTERRUPTED
    except DeployoptError as exc:
        if _State.debug:
            traceback.print_exc()
        click.echo(f"deployopt: error: {exc}", err=True)
        code = exc.exit_code
    except Exception as exc:
        from pydantic import ValidationError

        if _State.debug:
            traceback.print_exc()
        if isinstance(exc, ValidationError):  # an option value outside its config's range
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            click.echo(f"deployopt: error: invalid value for {where}: {problem['msg']}", err=True)
            sys.exit(EXIT_USAGE)
        click.echo(
            f"deployopt: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", err=True
        )
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else EXIT_OK)
