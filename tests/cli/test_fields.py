"""Options declared once: every CLI option comes from a config field, and one name means one thing."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deployopt.cli import cli, groups, hoist_global_flags
from deployopt.cli.fields import OptionGroup
from deployopt.flow.build import BuildConfig
from deployopt.stages.int8.quantize import Int8Config

PIPELINE_REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "pipeline.md"
ALL_GROUPS = [value for value in vars(groups).values() if isinstance(value, OptionGroup)]


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and not p.hidden]


def test_every_option_of_every_verb_has_help_and_one_meaning():
    meaning: dict[str, str] = {}  # flag → the config field it sets (the group prefix keeps sections apart)
    for name, command in cli.commands.items():
        for option in _options(command):
            assert option.help, f"deployopt {name} {option.opts[0]} has no help text"
            field = option.name.removeprefix("int8_").removeprefix("fp16_").removeprefix("prune_")
            for flag in option.opts + option.secondary_opts:
                assert meaning.setdefault(flag, field) == field, (
                    f"{flag} sets {field} in `deployopt {name}` but {meaning[flag]} elsewhere"
                )


@pytest.mark.parametrize("group", ALL_GROUPS, ids=lambda g: f"{g.model.__name__}:{g.prefix or '-'}")
def test_a_group_with_no_options_given_builds_the_config_defaults(group):
    seen = {}

    @click.command()
    @group
    def probe(**kw):
        seen["values"] = group.values(kw)
        assert not kw, f"options left unread: {kw}"

    result = CliRunner().invoke(probe, [], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    defaults = group.model() if all(not f.is_required() for _, f in group.fields()) else None
    for field, value in seen["values"].items():
        expected = group.defaults.get(field, getattr(defaults, field) if defaults else value)
        assert value == expected, f"{group.flag(field)} defaults to {value!r}, the config to {expected!r}"


def test_choices_come_from_the_literal_types():
    option = next(o for o in cli.commands["build"].params if o.name == "int8_mode")
    assert list(option.type.choices) == list(typing.get_args(Int8Config.model_fields["mode"].annotation))


def test_build_options_fill_the_same_config_a_pipeline_file_does(tmp_path, monkeypatch):
    """The CLI and the pipeline share one vocabulary: a build's --save-pipeline round-trips to the same config."""
    import deployopt.api
    from deployopt.flow.pipeline import load_pipeline

    captured = {}
    monkeypatch.setattr(deployopt.api, "build", lambda model, config, progress: captured.setdefault("c", config))
    monkeypatch.setattr("deployopt.cli.console.finish_build", lambda *a: 0)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    args = ["build", str(model), "--batch-sizes", "1,8", "--int8-mode", "static", "--calibration-samples", "64"]
    args += [
        "--min-cosine",
        "0.98",
        "--prune-method",
        "magnitude",
        "--no-fp16",
        "--save-pipeline",
        str(tmp_path / "p.yaml"),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config: BuildConfig = captured["c"]
    assert config.bench.batch_sizes == (1, 8) and config.quantize.int8.mode == "static"
    assert config.quantize.int8.samples == 64 and config.verify.budget.min_cosine == 0.98
    assert config.prune.method == "magnitude" and config.quantize.make == ("int8", "bf16")
    assert config.quantize.required == ()  # none named on the command line: one this CPU lacks is a note
    _, from_file = load_pipeline(tmp_path / "p.yaml")
    assert from_file == config


def test_deprecated_spelling_works_with_one_line_on_stderr():
    seen = {}

    @click.command()
    @groups.BENCH
    def probe(**kw):
        seen["config"] = groups.BENCH.build(kw)

    result = CliRunner().invoke(probe, ["--batch", "4,16"], catch_exceptions=False)
    assert seen["config"].batch_sizes == (4, 16)
    assert "--batch is deprecated; use --batch-sizes" in result.output
    assert "--batch " not in CliRunner().invoke(probe, ["--help"]).output  # hidden from help


def test_global_flags_work_after_the_verb(run_cli, tmp_path):
    assert hoist_global_flags(["build", "m.pt", "--debug", "-q", "--", "-v"]) == [
        "--debug",
        "-q",
        "build",
        "m.pt",
        "--",
        "-v",
    ]
    code, _, err = run_cli("build", tmp_path / "missing.pt", "--debug")
    assert code == 3 and "Traceback" in err


def test_quiet_hides_progress_but_not_results(run_cli, digits_onnx):
    code, out, err = run_cli("verify", digits_onnx, digits_onnx, "-q", "--samples", "8")
    assert code == 0 and "cosine" in out and "»" not in err


def test_schema_verb_and_the_docs_pipeline_reference_match_the_configs(run_cli):
    code, out, _ = run_cli("schema")
    schema = json.loads(out)
    assert code == 0 and {"model", "train", "build"} <= set(schema["properties"])
    assert "BuildConfig" in schema["$defs"] and "Int8Config" in schema["$defs"]
    code, reference, _ = run_cli("schema", "--markdown")
    assert "| `build.quantize.int8.samples` | int | 128 | `--calibration-samples` |" in reference
    text = PIPELINE_REFERENCE.read_text(encoding="utf-8")
    start, end = "<!-- pipeline-reference:start -->\n", "<!-- pipeline-reference:end -->"
    assert start in text and end in text
    page_table = text.split(start)[1].split(end)[0]
    assert page_table == reference, "docs/reference/pipeline.md is stale: paste `deployopt schema --markdown` in"
