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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from deployopt import __version__
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


def _progress(message: str) -> None:
    click.echo(f"» {message}", err=True)


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers, e.g. 1,32") from None
    if not sizes or any(s < 1 for s in sizes):
        raise click.BadParameter(f"'{value}': batch sizes must be positive integers, e.g. 1,32")
    return sizes


def _options(*decorators: Callable) -> Callable:
    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


source_options = _options(
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
data_options = _options(
    click.option(
        "--data", type=click.Path(path_type=Path), help=".npz with one array per input name (and optionally 'labels')."
    ),
    click.option("--labels", type=click.Path(path_type=Path), help=".npz/.npy with one integer label per sample."),
    click.option(
        "--samples", type=int, default=64, show_default=True, help="Generated samples when no real data is given."
    ),
)
budget_options = _options(
    click.option("--max-abs-error", type=float, help="Budget: max |candidate − reference| per output."),
    click.option("--max-rel-error", type=float, help="Budget: max |c − r| / max |r| per output."),
    click.option("--min-cosine", type=float, help="Budget: mean per-sample cosine similarity."),
    click.option("--min-top1-agreement", type=float, help="Budget: fraction of samples with the same top-1 class."),
    click.option("--max-accuracy-drop", type=float, help="Budget: task accuracy drop in points (needs labels)."),
)
bench_options = _options(
    click.option(
        "--batch",
        "batch_sizes",
        default="1,32",
        show_default=True,
        callback=_batch_sizes,
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


def _source(arch: str | None, inputs: tuple[str, ...], trust_pickle: bool):
    from deployopt.sources import SourceOptions

    return SourceOptions(arch=arch, inputs=tuple(inputs), trust_pickle=trust_pickle)


def _verify_config(kw: dict[str, Any]):
    from deployopt.verify import Budget, VerifyConfig

    budget = Budget(**{k: kw.pop(k) for k in list(Budget.model_fields) if k in kw})
    return VerifyConfig(data=kw.pop("data"), labels=kw.pop("labels"), samples=kw.pop("samples"), budget=budget)


def _variants_config(kw: dict[str, Any]):
    from deployopt.calibration import Preprocess
    from deployopt.stages.quantize import Int8Config
    from deployopt.variants import QuantizedVariants

    make = tuple(v for v, wanted in (("fp16", kw.pop("make_fp16")), ("int8", kw.pop("make_int8"))) if wanted)
    preprocess = kw.pop("preprocess")
    return QuantizedVariants(
        make=make,
        calibration=kw.pop("calibration"),
        preprocess=Preprocess.parse(preprocess) if preprocess else None,
        int8=Int8Config(mode=kw.pop("int8_mode")),
    )


def _bench_config(kw: dict[str, Any]):
    from deployopt.bench import BenchConfig

    return BenchConfig(batch_sizes=kw.pop("batch_sizes"), threads=kw.pop("threads"), repeats=kw.pop("repeats"))


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
@source_options
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
@data_options
@click.option("--fp16/--no-fp16", "make_fp16", default=True, show_default=True, help="Make the fp16 variant.")
@click.option("--int8/--no-int8", "make_int8", default=True, show_default=True, help="Make the int8 variant.")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    help="int8 calibration data: .npz/.npy or an image folder [default: the model's registered dataset].",
)
@click.option("--preprocess", help="For an image-folder --calibration, e.g. resize=256,crop=224.")
@click.option("--int8-mode", type=click.Choice(["auto", "static", "dynamic"]), default="auto", show_default=True)
@budget_options
@bench_options
@click.option("--no-bench", is_flag=True, help="Skip benchmarking.")
@click.option("--force", is_flag=True, help="Redo every stage instead of reusing cached results.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the table.")
@click.option("--save-pipeline", type=click.Path(path_type=Path), help="Also write this run as a pipeline YAML file.")
def build(model: Path, **kw: Any) -> int:
    """Export MODEL to ONNX, optimise the graph, verify and benchmark every artifact, write a report.

    Exits 1 when an artifact misses its accuracy budget.
    """
    from deployopt.api import BuildConfig
    from deployopt.api import build as run_build
    from deployopt.stages.export import ExportConfig
    from deployopt.stages.graph import GraphConfig

    as_json, save_pipeline = kw.pop("as_json"), kw.pop("save_pipeline")
    config = BuildConfig(
        arch=kw.pop("arch"),
        inputs=tuple(kw.pop("inputs")),
        trust_pickle=kw.pop("trust_pickle"),
        out=kw.pop("out"),
        export=ExportConfig(opset=kw.pop("opset"), exporter=kw.pop("exporter"), verbose=_State.verbose),
        graph=GraphConfig(onnxslim=kw.pop("onnxslim"), ort_basic=kw.pop("ort_basic")),
        verify=_verify_config(kw),
        quantize=_variants_config(kw),
        bench=_bench_config(kw),
        skip_bench=kw.pop("no_bench"),
        force=kw.pop("force"),
    )
    if save_pipeline:
        from deployopt.fsutil import write_text_atomic
        from deployopt.pipeline import to_yaml

        write_text_atomic(save_pipeline, to_yaml(model, config))
    report = run_build(model, config, progress=_progress)
    return _show_build(report, as_json)


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
def run(pipeline: Path, overrides: tuple[str, ...], as_json: bool) -> int:
    """Run a YAML PIPELINE (see pipelines/); it is validated completely before any work starts."""
    from deployopt.api import build as run_build
    from deployopt.pipeline import load_pipeline

    model, config = load_pipeline(pipeline, list(overrides))
    report = run_build(model, config, progress=_progress)
    return _show_build(report, as_json)


def _show_build(report, as_json: bool) -> int:
    from deployopt.report import variant_table

    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(variant_table(report))
        click.echo(f"\nrun directory: {report.run_dir} (report.md, report.json, manifest.json)")
        for failure in report.failures:
            click.echo(f"FAIL {failure}", err=True)
        click.echo("PASS: every artifact is within its budget" if report.passed else "FAIL: budget missed", err=True)
    return EXIT_OK if report.passed else EXIT_BUDGET


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

    report = run_demo(out, BuildConfig(skip_bench=no_bench), progress=_progress)
    return _show_build(report, as_json)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True, help="ONNX file to write.")
@source_options
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto", show_default=True)
def export(model: Path, out: Path, arch, inputs, trust_pickle, opset: int, exporter: str) -> int:
    """Export a PyTorch MODEL to ONNX (dynamic batch, checked with onnx.checker)."""
    from deployopt.api import ExportConfig
    from deployopt.api import export as run_export

    result = run_export(
        model,
        out,
        _source(arch, inputs, trust_pickle),
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
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@source_options
@data_options
@budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(reference: Path, candidate: Path, **kw: Any) -> int:
    """Compare CANDIDATE with REFERENCE on the same inputs; exit 1 when outside the budget."""
    from deployopt.api import verify_models

    as_json = kw.pop("as_json")
    options = _source(kw.pop("arch"), kw.pop("inputs"), kw.pop("trust_pickle"))
    result = verify_models(reference, candidate, options, _verify_config(kw))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(
            f"{result.samples} samples from {result.data_origin}; budget {result.budget.model_dump(exclude_none=True)}"
        )
        for o in result.outputs:
            top1 = f"  top-1 agreement {o.top1_agreement * 100:.2f}%" if o.top1_agreement is not None else ""
            click.echo(
                f"  {o.name}: max abs {o.max_abs_error:.3g}  max rel {o.max_rel_error:.3g}  cosine {o.cosine:.6f}{top1}"
            )
        if result.candidate_accuracy is not None:
            click.echo(
                f"  accuracy: reference {result.reference_accuracy:.2f}%  candidate {result.candidate_accuracy:.2f}%"
            )
        for failure in result.failures:
            click.echo(f"FAIL {failure}", err=True)
        click.echo("PASS" if result.passed else "FAIL", err=True)
    return EXIT_OK if result.passed else EXIT_BUDGET


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@source_options
@bench_options
@click.option("--json", "as_json", is_flag=True, help="Print measurements as JSON.")
def bench(models: tuple[Path, ...], **kw: Any) -> int:
    """Measure latency (p50/p90/p99), throughput and peak memory of MODELS, each in its own process."""
    from deployopt.api import bench_models

    as_json = kw.pop("as_json")
    options = _source(kw.pop("arch"), kw.pop("inputs"), kw.pop("trust_pickle"))
    measurements = bench_models(list(models), options, _bench_config(kw), progress=_progress)
    if as_json:
        click.echo(json.dumps([m.to_json() for m in measurements], indent=2))
        return EXIT_OK
    sizes = {m: Path(m).stat().st_size for m in map(str, models)}
    header = f"{'model':<28} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>10} {'peak RSS':>9}"
    click.echo(header)
    for m in measurements:
        click.echo(
            f"{m.variant:<28} {m.batch:>5} {m.p50_ms:>9.3f} {m.p90_ms:>9.3f} {m.p99_ms:>9.3f} "
            f"{m.throughput:>10.1f} {m.peak_rss_mb:>7.0f}MB"
        )
    click.echo("sizes: " + ", ".join(f"{Path(p).name} {s / 1e6:.2f} MB" for p, s in sizes.items()))
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
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True, help="fp16: keep float32 I/O.")
@click.option("--block", multiple=True, metavar="OPTYPE", help="fp16: op types kept in float32.")
@click.option("--threads", type=click.IntRange(min=1), help="Threads for verification and measurements.")
@budget_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize(model: Path, out: Path, precision: str | None, **kw: Any) -> int:
    """Quantize an ONNX MODEL to int8 or fp16, verify it against MODEL, exit 1 when outside the budget."""
    from deployopt.api import Fp16Config, Int8Config, QuantizeData
    from deployopt.api import quantize as run_quantize
    from deployopt.calibration import Preprocess
    from deployopt.errors import UsageError
    from deployopt.verify import Budget

    if precision is None:
        raise UsageError("choose --int8 or --fp16")
    as_json = kw.pop("as_json")
    budget = Budget(**{k: kw.pop(k) for k in list(Budget.model_fields)})
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
        )
    else:
        fp16 = Fp16Config(keep_io_types=kw["keep_io_types"], block=tuple(kw["block"]))
    outcome = run_quantize(
        model, out, int8=int8, fp16=fp16, data=data, budget=budget, threads=kw["threads"], progress=_progress
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
        _show_quantize(out, outcome)
    return EXIT_OK if outcome.passed else EXIT_BUDGET


def _show_quantize(out: Path, outcome) -> None:
    details, result = outcome.details, outcome.verify
    if outcome.precision == "int8":
        click.echo(f"{out}: int8 {details['mode']}, kept {details['chosen']}")
        for op, count in details["op_counts"].items():
            click.echo(f"  {op}: {count['int8']} int8, {count['float']} float")
        click.echo(f"  {'round':>5}  {'candidate':<22} {'excluded':>8}  {'cosine':>9}  {'latency p50':<22} verdict")
        for a in details["attempts"]:
            latency = ", ".join(f"b{b} {v:.2f} ms" for b, v in a["p50_ms"].items())
            cosine = f"{a['cosine']:.5f}" if a["cosine"] is not None else "–"
            click.echo(
                f"  {a['round']:>5}  {a['candidate']:<22} {len(a['excluded']):>8}  {cosine:>9}  {latency:<22} "
                f"{'pass' if a['passed'] else 'miss'}"
            )
        if details["excluded"]:
            click.echo(f"  kept in float: {', '.join(details['excluded'])}")
    else:
        kept = details["fallback_nodes"]
        click.echo(
            f"{out}: fp16, {details['fp16_nodes']} fp16 nodes, {details['fp32_nodes']} fp32 nodes"
            + (f"; kept in fp32 because ONNX Runtime refused them: {', '.join(kept)}" if kept else "")
        )
    for o in result.outputs:
        click.echo(
            f"  verify {o.name}: max rel {o.max_rel_error:.3g}, cosine {o.cosine:.6f}"
            + (f", top-1 agreement {o.top1_agreement * 100:.2f}%" if o.top1_agreement is not None else "")
        )
    if result.candidate_accuracy is not None:
        click.echo(f"  accuracy {result.candidate_accuracy:.2f}% vs {result.reference_accuracy:.2f}% (fp32)")
    for failure in result.failures:
        click.echo(f"FAIL {failure}", err=True)
    click.echo("PASS" if outcome.passed else "FAIL: budget missed", err=True)


@cli.command(name="exit-codes")
def exit_codes() -> int:
    """List deployopt's exit codes."""
    for code, meaning in EXIT_CODES.items():
        click.echo(f"{code:>4}  {meaning}")
    return EXIT_OK


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
