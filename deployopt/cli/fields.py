"""Click options generated from pydantic config fields, so each option is declared exactly once.

A field's type gives the option's type (``Literal`` → a choice, ``bool`` → an on/off flag, a bounded number →
a range, ``Path`` → a path, ``tuple[str, ...]`` → a repeatable option, ``tuple[int, ...]`` → a comma list),
its default the default and its description the help. An :class:`OptionGroup` names which fields of one
config a verb offers and the one rule that turns a field into a flag: ``--<prefix><field-name>`` — the
pipeline file's key with dashes — with the few exceptions it lists. Groups are declared once
(:mod:`deployopt.cli.groups`) and shared by every verb that takes the same settings, so the verbs and the
pipeline files share one vocabulary.

Old spellings stay as hidden aliases for one release: using one prints a deprecation line and still works.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import annotated_types
import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

_ALIAS = "alias__"
_DEFAULT = click.core.ParameterSource.DEFAULT


def unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds["min"], bounds["min_open"] = item.gt, True
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
        elif isinstance(item, annotated_types.Lt):
            bounds["max"], bounds["max_open"] = item.lt, True
    return bounds


def comma_ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """``1,8,32`` → (1, 8, 32): one list option in the shape the pipeline file writes as a YAML list."""
    if value is None:
        return None
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers, e.g. 1,32") from None
    if not numbers or any(n < 1 for n in numbers):
        raise click.BadParameter(f"'{value}': expected positive integers, e.g. 1,32")
    return numbers


def _click_type(annotation: Any, info: FieldInfo) -> dict[str, Any]:
    """The click keyword arguments that express ``annotation``."""
    annotation = unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"type": click.Choice([str(v) for v in typing.get_args(annotation)])}
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        if item is int:
            return {"type": str, "callback": comma_ints, "metavar": "N[,N...]"}
        return {"multiple": True, "type": _click_type(item, FieldInfo())["type"]}
    if annotation in (int, float):
        bounds = _bounds(info)
        if not bounds:
            return {"type": annotation}
        return {"type": (click.IntRange if annotation is int else click.FloatRange)(**bounds)}
    if annotation is Path:
        return {"type": click.Path(path_type=Path)}
    if annotation is str:
        return {"type": str}
    raise TypeError(f"no command-line form for {annotation!r}; exclude the field or give it a parser")


@dataclass(frozen=True)
class OptionGroup:
    """The fields of ``model`` one set of verbs offers, and how they are spelled on the command line.

    ``names`` overrides the flag for a field (for a bool, ``"--on/--off"`` or a single ``"--flag"``);
    ``aliases`` gives a field's deprecated spelling; ``parsers`` turn a string into the field's value
    (for fields whose type has a text form, e.g. ``--preprocess resize=256``); ``metavars`` and ``helps``
    refine the help text where the field's description is not enough for a terminal user.
    """

    model: type[BaseModel]
    prefix: str = ""
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    parsers: dict[str, Callable[[str], Any]] = field(default_factory=dict)
    metavars: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # a verb's own default, when it differs

    def fields(self) -> list[tuple[str, FieldInfo]]:
        chosen = self.only if self.only is not None else tuple(self.model.model_fields)
        return [(name, self.model.model_fields[name]) for name in chosen if name not in self.exclude]

    def flag(self, name: str) -> str:
        """The option's spelling: ``--on/--off`` for bools, space-separated names (``-o --out``) otherwise."""
        return self.names.get(name, f"--{self.prefix}{name.replace('_', '-')}")

    def display_flag(self, name: str) -> str:
        """The flag as ``--help`` shows it (both sides of an on/off flag)."""
        flag = self.flag(name)
        is_bool = unwrap_optional(self.model.model_fields[name].annotation) is bool
        if is_bool and "/" not in flag and name not in self.names:
            return f"{flag}/--no-{flag.removeprefix('--')}"
        return flag.replace(" ", ", ")

    def dest(self, name: str) -> str:
        return f"{self.prefix.replace('-', '_')}{name}"

    def options(self, func: Callable) -> Callable:
        """Decorate a click command with this group's options (in field order)."""
        for name, info in reversed(self.fields()):
            func = self._option(name, info)(func)
            if name in self.aliases:
                func = self._option(name, info, self.aliases[name])(func)
        return func

    __call__ = options

    def _option(self, name: str, info: FieldInfo, alias: str | None = None) -> Callable:
        default = self.defaults.get(name, None if info.is_required() else info.default)
        help_text = self.helps.get(name, info.description or "")
        common: dict[str, Any] = {"help": help_text[:1].upper() + help_text[1:], "hidden": alias is not None}
        dest = self.dest(name) if alias is None else f"{_ALIAS}{self.dest(name)}"
        if alias is not None:
            default = None  # an alias only counts when it is given
        if unwrap_optional(info.annotation) is bool:
            flag = alias or self.flag(name)
            if "/" in flag:
                return click.option(flag, dest, default=default, show_default=alias is None, **common)
            if alias is None and name not in self.names:
                flag = f"{flag}/--no-{flag.removeprefix('--')}"
                return click.option(flag, dest, default=default, show_default=True, **common)
            return click.option(*flag.split(), dest, is_flag=True, flag_value=True, default=default, **common)
        kwargs = {"type": str} if name in self.parsers else _click_type(info.annotation, info)
        if name in self.metavars:
            kwargs["metavar"] = self.metavars[name]
        if not kwargs.get("multiple"):
            kwargs["default"] = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kwargs["show_default"] = default is not None
        return click.option(*(alias or self.flag(name)).split(), dest, **common, **kwargs)

    def values(self, kw: dict[str, Any], given_only: bool = False) -> dict[str, Any]:
        """Pop this group's options from a command's keyword arguments: {field: value} for the config.

        Unset optional fields and empty repeatable options are left out, so the config keeps its default;
        with ``given_only`` so is every option left at its default (to tell whether a section was asked for).
        """
        values: dict[str, Any] = {}
        ctx = click.get_current_context(silent=True)
        for name, _ in self.fields():
            value = kw.pop(self.dest(name))
            if given_only and ctx is not None and ctx.get_parameter_source(self.dest(name)) is _DEFAULT:
                value = None
            old = kw.pop(f"{_ALIAS}{self.dest(name)}", None)
            if old not in (None, ()):
                current = self.flag(name).split("/")[0].split()[-1]
                click.echo(f"deployopt: {self.aliases[name]} is deprecated; use {current}", err=True)
                value = old
            if value is None or value == ():
                continue
            values[name] = self.parsers[name](value) if name in self.parsers else value
        return values

    def build(self, kw: dict[str, Any], **extra: Any) -> BaseModel:
        """The config made from this group's options (plus ``extra`` fields the verb sets itself)."""
        return self.model(**self.values(kw), **extra)
