"""The ``deployopt`` command line: parses options into typed configs and calls :mod:`deployopt.api`.

Options come from the config fields (:mod:`deployopt.cli.groups`), so verbs and pipeline files share one
vocabulary. Nothing that needs torch or onnxruntime is imported here, so ``deployopt --help`` works without
them. Errors become one line on stderr and the exit code of their class (:mod:`deployopt.errors`); ``--debug``
(before or after the verb) shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
import warnings

import click

from deployopt import __version__
from deployopt.cli import build as cli_build
from deployopt.cli import convert as cli_convert
from deployopt.cli import engine as cli_engine
from deployopt.cli import measure as cli_measure
from deployopt.cli import model as cli_model
from deployopt.cli import serve as cli_serve
from deployopt.cli.console import configure_logging, end_progress
from deployopt.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DeployoptError

_NOISY_MODULES = r"(torch|onnx|onnxscript|onnxslim|onnxruntime|onnx_ir|torchvision)(\.|$)"
GLOBAL_FLAGS = ("--debug", "--verbose", "-v", "--quiet", "-q")


class _State:
    debug = False
    verbose = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="deployopt")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors (also after the verb).")
@click.option("--verbose", "-v", is_flag=True, help="Show exporter and library messages (also after the verb).")
@click.option("--quiet", "-q", is_flag=True, help="Only results and errors: no progress lines (also after the verb).")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """Take a PyTorch model to a deployable, verified, faster artifact.

    \b
    Quick start:  deployopt demo
    Your model:   deployopt build model.pt --input input:batch,3,224,224
    """
    _State.debug, _State.verbose = debug, verbose
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not verbose:
        warnings.filterwarnings("ignore", module=_NOISY_MODULES)


@cli.command(name="exit-codes")
@click.option("--json", "as_json", is_flag=True, help="Print the codes as JSON.")
def exit_codes(as_json: bool) -> int:
    """List deployopt's exit codes."""
    if as_json:
        click.echo(json.dumps({str(code): meaning for code, meaning in EXIT_CODES.items()}, indent=2))
        return EXIT_OK
    for code, meaning in EXIT_CODES.items():
        click.echo(f"{code:>4}  {meaning}")
    return EXIT_OK


@cli.command()
@click.option("--markdown", is_flag=True, help="Print the reference table (key, type, default, option) instead.")
def schema(markdown: bool) -> int:
    """Print the JSON Schema of pipeline files (the same fields as the command-line options)."""
    from deployopt.api import pipeline_schema
    from deployopt.cli.groups import pipeline_reference

    click.echo(pipeline_reference() if markdown else json.dumps(pipeline_schema(), indent=2), nl=not markdown)
    return EXIT_OK


for command in (
    cli_build.build,
    cli_build.run,
    cli_build.recommend,
    cli_build.demo,
    cli_convert.export,
    cli_convert.optimize,
    cli_convert.quantize,
    cli_measure.verify,
    cli_measure.bench,
    cli_model.inspect,
    cli_model.prune,
    cli_model.train,
    cli_engine.engine,
    cli_engine.doctor,
    cli_serve.triton,
):
    cli.add_command(command)


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move --debug / -v / -q given after the verb to before it, so they work in either place."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    flags = [a for a in head if a in GLOBAL_FLAGS]
    return flags + [a for a in head if a not in GLOBAL_FLAGS] + tail


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and turn every failure into one line plus an exit code."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    _State.debug = "--debug" in args
    if threading.current_thread() is threading.main_thread():  # a killed build cleans up as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            code = cli.main(args=args, prog_name="deployopt", standalone_mode=False)
        finally:
            end_progress()  # the live progress line closes before any result or error line
    except click.exceptions.Exit as exc:  # --help / --version
        code = exc.exit_code
    except click.ClickException as exc:  # Click's own usage errors, on one line like every other refusal
        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "deployopt"
        hint = f" (see '{command} --help')" if isinstance(exc, click.UsageError) else ""
        click.echo(f"deployopt: error: {command}: {exc.format_message()}{hint}", err=True)
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
