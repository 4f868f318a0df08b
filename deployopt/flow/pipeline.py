"""Pipelines as code: a YAML file that says what ``deployopt build`` should do, validated before any work.

    # pipelines/digits.yaml
    model: ../deployopt-out/digits-cnn.pt     # relative to this file
    build:
      bench: {batch_sizes: [1, 32], repeats: 3}
      verify: {budget: {max_accuracy_drop: 0.2}}

The ``build`` section is :class:`~deployopt.flow.build.BuildConfig`, the same typed config the CLI fills.
An unknown key, a wrong type or a missing file fails with the file, line and key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployopt.errors import InputFileError, UsageError
from deployopt.flow.build import DEFAULT_OUT_ROOT, BuildConfig, build
from deployopt.reports.model import BuildReport
from deployopt.training.command import TrainConfig, train_model


class TrainStep(TrainConfig):
    """A pipeline's ``train:`` section: which registered model to train, with ``deployopt train``'s options."""

    model: str = Field(description="registered model name, e.g. tiny-text-transformer")


class FleetEntry(BaseModel):
    """One model of a ``models:`` list: its file and the settings it changes from the shared ``build:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(description="the model file, relative to the pipeline file")
    build: dict = Field({}, description="settings of this model that differ from the shared build section")

    @model_validator(mode="before")
    @classmethod
    def _a_bare_path(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data


class Pipeline(BaseModel):
    """``model:`` (a file), ``train:`` (train one into the run directory first) or ``models:`` (several, each built
    on its own — a fleet), then ``build:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path | None = Field(None, description="the model file, relative to the pipeline file")
    train: TrainStep | None = Field(None, description="train a registered model into the run directory first")
    models: tuple[FleetEntry, ...] | None = Field(
        None,
        min_length=1,
        description="several models, each built into its own run directory (a fleet): a file, or {model: FILE, "
        "build: {the settings that differ from the shared build section}}",
    )
    build: BuildConfig = Field(BuildConfig(), description="what deployopt build does (shared by every model listed)")

    @model_validator(mode="after")
    def _one_source(self) -> Pipeline:
        if sum(source is not None for source in (self.model, self.train, self.models)) != 1:
            raise ValueError(
                "give exactly one of 'model:' (a model file), 'train:' (a registered model to train) or 'models:' "
                "(a list of model files)"
            )
        return self


def pipeline_schema() -> dict:
    """The JSON Schema of a pipeline file (``deployopt schema``; docs/reference/pipeline.md is made from it)."""
    schema = Pipeline.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deployopt pipeline"
    return schema


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def apply_overrides(document: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b.c=value`` overrides (values parsed as YAML scalars or lists)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set '{item}': expected KEY=VALUE, e.g. --set build.bench.repeats=3")
        node = document
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set '{item}': '{part}' is not a section")
        node[leaf] = _parse_value(raw)
    return document


def _line_of(root: Any, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at a pydantic error location, or of its nearest existing parent."""
    import yaml

    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> tuple[Path | TrainStep, BuildConfig]:
    """Read and validate a pipeline file of one model; return the model path (resolved) or its train step, and the
    build."""
    members = load_pipeline_models(path, overrides)
    if len(members) != 1:
        raise UsageError(f"{path}: lists {len(members)} models; `deployopt run` builds them all (a fleet)")
    return members[0]


def load_pipeline_models(
    path: str | Path, overrides: list[str] | None = None
) -> list[tuple[Path | TrainStep, BuildConfig]]:
    """Read and validate a pipeline file: one ``model:`` (or ``train:``), or a ``models:`` list whose entries share
    the ``build:`` section, each entry's own ``build:`` laid over it. Every model is checked before any runs."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: pipeline file not found; check the path")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise InputFileError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    if not isinstance(document, dict):
        raise InputFileError(f"{path}: a pipeline must be a mapping with at least 'model:'")
    document = apply_overrides(document, list(overrides or []))
    fleet = _checked(path, root, document, ())
    if fleet.models is None:
        return [_validated(path, root, document, ())]
    shared = document.get("build") or {}
    return [
        _validated(path, root, {"model": entry.model, "build": _merged(shared, entry.build)}, ("models", number))
        for number, entry in enumerate(fleet.models)
    ]


def _merged(shared: dict, own: dict) -> dict:
    """``own`` laid over ``shared``, section by section."""
    merged = dict(shared)
    for key, value in own.items():
        merged[key] = (
            _merged(shared[key], value) if isinstance(value, dict) and isinstance(shared.get(key), dict) else value
        )
    return merged


def _checked(path: Path, root: Any, document: dict, where: tuple) -> Pipeline:
    try:
        return Pipeline.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = (*where, *error["loc"])
        key = ".".join(str(p) for p in loc)
        raise InputFileError(
            f"{path}:{_line_of(root, loc)}: key '{key}': {error['msg']}; `deployopt schema` lists every key "
            "(docs/reference/pipeline.md)"
        ) from exc


def _validated(path: Path, root: Any, document: dict, where: tuple) -> tuple[Path | TrainStep, BuildConfig]:
    """One model of a pipeline (``where``: its place in a ``models:`` list), its paths relative to the file."""
    pipeline = _checked(path, root, document, where)
    base = path.parent
    if pipeline.train is not None:
        model = pipeline.train
    elif not (model := pipeline.model if pipeline.model.is_absolute() else base / pipeline.model).exists():
        line = _line_of(root, (*where, "model") if where else ("model",))
        raise InputFileError(
            f"{path}:{line}: key '{'.'.join(map(str, (*where, 'model')))}': file {model} not found; fix the path "
            "(relative to the pipeline)"
        )
    config = pipeline.build
    if pipeline.train is not None:
        model = _rebase_train(pipeline.train, base)
    for keys in INPUT_FILES + OUTPUT_FILES:
        config, value = rebase_path(config, keys, lambda p: p if p.is_absolute() else base / p)
        if keys in INPUT_FILES and value is not None and not value.exists():
            line = _line_of(root, (*where, "build", *keys)) or _line_of(root, ("build", *keys))
            name = ".".join(("build", *keys))
            raise InputFileError(f"{path}:{line}: key '{name}': file {value} not found; fix the path")
    return model, config


def _rebase_train(step: TrainStep, base: Path) -> TrainStep:
    """The train step's teacher and (user) dataset paths, relative to the pipeline file."""
    from deployopt.data.user_data import is_dataset_path

    update: dict[str, Any] = {}
    if step.teacher is not None and not step.teacher.is_absolute():
        update["teacher"] = base / step.teacher
    dataset = step.dataset
    if dataset and not Path(dataset).is_absolute() and (is_dataset_path(dataset) or (base / dataset).is_dir()):
        update["dataset"] = str(base / dataset)
    return step.model_copy(update=update)


def _train_inputs(step: TrainStep) -> dict[str, str]:
    """Content hashes of the files training reads, so editing the data or the teacher retrains."""
    from deployopt.data.user_data import is_dataset_path
    from deployopt.fsutil import content_hash

    inputs = {}
    if step.dataset and is_dataset_path(step.dataset) and Path(step.dataset).exists():
        inputs["dataset"] = content_hash(step.dataset)
    if step.teacher is not None and step.teacher.exists():
        inputs["teacher"] = content_hash(step.teacher)
    return inputs


def run_pipeline(path: str | Path, overrides: list[str] | None = None, progress=lambda message: None) -> BuildReport:
    """Load, (train when the pipeline says so,) build."""
    source, config = load_pipeline(path, overrides)
    if isinstance(source, TrainStep):
        config = (
            config if config.out is not None else config.model_copy(update={"out": DEFAULT_OUT_ROOT / source.model})
        )
        source = train_into(source, config, progress)
    return build(source, config, progress)


def train_into(step: TrainStep, config: BuildConfig, progress=lambda message: None) -> Path:
    """Train ``step`` into the run directory ``config.out``. Training is a stage of the run directory: a re-run with
    the same train options and tool versions reuses the checkpoint."""
    from deployopt.rundir import RunDirectory

    progress(f"train: {step.model}")
    with RunDirectory(config.out, force=config.force) as run:
        outcome = run.run_stage(
            "train",
            step,
            _train_inputs(step),
            {"model": f"{step.model}.pt"},
            lambda out: train_model(step.model, out["model"], step, log=progress, logs=run.root / "train"),
        )
    return outcome.output("model")


# BuildConfig fields holding paths (relative to the pipeline file): files that must exist, and outputs.
INPUT_FILES = (("verify", "data"), ("verify", "labels"), ("quantize", "calibration"), ("prune", "train_data"))
OUTPUT_FILES = (("out",), ("engine", "timing_cache"))


def rebase_path(config: BuildConfig, keys: tuple[str, ...], change) -> tuple[BuildConfig, Path | None]:
    """Apply ``change`` to the path at ``keys`` (e.g. ("verify", "data")) in the frozen config; return both."""
    *sections, field = keys
    owners = [config]
    for section in sections:
        owners.append(getattr(owners[-1], section))
        if owners[-1] is None:
            return config, None
    value = getattr(owners[-1], field)
    if value is None:
        return config, None
    value = change(Path(value))
    updated = owners[-1].model_copy(update={field: value})
    for owner, section in zip(reversed(owners[:-1]), reversed(sections), strict=True):
        updated = owner.model_copy(update={section: updated})
    return updated, value


def to_yaml(model: str | Path, config: BuildConfig) -> str:
    """The pipeline file equivalent of a build (for ``--save-pipeline``): only non-default settings."""
    import yaml

    for keys in INPUT_FILES + OUTPUT_FILES:
        config, _ = rebase_path(config, keys, Path.resolve)
    build = config.model_dump(mode="json", exclude_defaults=True)
    if "make" in build.get("quantize", {}):  # a written-out list names its variants unless `required` says otherwise
        build["quantize"]["required"] = list(config.quantize.required)
    document = {"model": str(Path(model).resolve())}
    if build:
        document["build"] = build
    return yaml.safe_dump(document, sort_keys=False)
