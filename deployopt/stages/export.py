"""Export stage: a PyTorch model source → a checked ONNX model with dynamic batch.

Tries the torch.export-based exporter first (it handles modern models and optimises the graph) and
falls back to the TorchScript exporter; the one that produced the model is recorded. Exporter chatter
is captured into the returned log instead of the user's terminal unless ``verbose`` is set.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deployopt.data.eval_data import generate_batch
from deployopt.errors import StageError, UsageError
from deployopt.fsutil import sha256_json
from deployopt.quiet import capture_output
from deployopt.sources.detect import ModelSource, SourceKind
from deployopt.sources.loading import load_torch_model, output_names
from deployopt.sources.signature import Signature
from deployopt.stages.base import Artifact, BuildContext
from deployopt.stages.fused_symbolics import register_fused_symbolics
from deployopt.types import StepRecord

DEFAULT_OPSET = 18  # accepted by ONNX Runtime ≥ 1.14 and TensorRT ≥ 10.0
MAX_SINGLE_FILE_BYTES = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GB limit, with headroom for the graph


class ExportConfig(BaseModel):
    """Options of the export stage (``deployopt export`` / the ``export`` section of a pipeline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int = Field(DEFAULT_OPSET, ge=13, le=23, description="ONNX opset version")
    exporter: Literal["auto", "dynamo", "torchscript"] = Field(
        "auto", description="auto: torch.export-based first, TorchScript exporter as fallback"
    )
    verbose: bool = Field(False, description="let exporter messages reach the terminal")


@dataclass
class ExportResult:
    exporter: str
    opset: int
    output_names: list[str]
    seconds: float
    log: str = ""
    fallback_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "exporter": self.exporter,
            "opset": self.opset,
            "output_names": self.output_names,
            "seconds": round(self.seconds, 3),
            "fallback_reason": self.fallback_reason,
        }


def export_onnx(
    source: ModelSource,
    signature: Signature,
    out_path: Path,
    config: ExportConfig,
    example: dict[str, np.ndarray] | None = None,
) -> ExportResult:
    """Export ``source`` to ``out_path`` (which the caller renames into place) and check the result. The model
    runs on ``example`` (one batch of real inputs) when given — token ids within the vocabulary, say — else
    on generated inputs of the signature."""
    import torch

    if not source.kind.is_torch:
        raise StageError(f"{source.path}: already a {source.kind.value} model; export is only for PyTorch sources")
    model = load_torch_model(source)
    _check_size(model, source)
    _check_arguments(model, signature, source)
    sample = example if example is not None else generate_batch(signature, 2).inputs
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[name])) for name in signature.names)
    output_names = _output_names(model, args, source)

    attempts = [config.exporter]
    if config.exporter == "auto":
        # torch.export cannot trace a ScriptModule: TorchScript archives go straight to the TorchScript exporter.
        attempts = ["torchscript"] if source.kind is SourceKind.TORCHSCRIPT else ["dynamo", "torchscript"]
    log = io.StringIO()
    errors: dict[str, BaseException] = {}
    started = time.perf_counter()
    for exporter in attempts:
        try:
            with capture_output(log, config.verbose):
                _run_exporter(exporter, source, model, args, signature, output_names, out_path, config.opset)
            break
        except Exception as exc:
            errors[exporter] = exc
            log.write(f"\n[deployopt] {exporter} exporter failed: {_ANSI.sub('', str(exc))}\n")
    else:
        raise StageError(_failure_message(source, errors)) from errors[attempts[-1]]
    seconds = time.perf_counter() - started
    _record_signature(out_path, signature)
    _check_onnx(out_path, source)
    fallback = None
    if errors:
        failed, exc = next(iter(errors.items()))
        fallback = f"{failed} exporter failed: {_first_line(exc)}"
    return ExportResult(exporter, config.opset, output_names, seconds, log.getvalue(), fallback)


def _check_size(model: Any, source: ModelSource) -> None:
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    total = sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel"))
    if total > MAX_SINGLE_FILE_BYTES:
        raise StageError(
            f"{source.path}: weights are {total / 1024**3:.1f} GB; ONNX files above 2 GB "
            "(external data) are not supported yet — prune or quantize the PyTorch model first"
        )


def _forward_parameters(model: Any) -> list[tuple[str, str]]:
    """(name, type) of each required argument of ``model.forward``: TorchScript's schema when scripted."""
    import inspect

    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is not None:
        return [(a.name, str(a.type)) for a in schema.arguments[1:] if not a.has_default_value()]
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        (p.name, getattr(p.annotation, "__name__", "Tensor") if p.annotation is not p.empty else "Tensor")
        for p in parameters
        if p.kind in positional and p.default is p.empty
    ]


def _check_arguments(model: Any, signature: Signature, source: ModelSource) -> None:
    """A forward that needs more than the signature's tensors (silero-vad's ``forward(x, sr: int)``) is named
    with the fix, instead of failing inside the model."""
    missing = _forward_parameters(model)[len(signature.inputs) :]
    if not missing:
        return
    scalars = [f"{name}: {kind}" for name, kind in missing if kind != "Tensor"]
    if scalars:
        raise StageError(
            f"{source.path}: forward also takes {', '.join(scalars)}, which deployopt cannot feed (it passes "
            "tensors only); wrap the model in a module whose forward takes tensors and fixes the rest, "
            "then script or trace that"
        )
    names = ", ".join(name for name, _ in missing)
    raise UsageError(
        f"{source.path}: forward also needs {names}; give every input in --input "
        f"(it has {len(signature.inputs)} of them)"
    )


def _output_names(model: Any, args: tuple, source: ModelSource) -> list[str]:
    """Run the model once to count its (flattened) outputs, and name them (:func:`output_names`)."""
    import torch

    try:
        with torch.inference_mode():
            outputs = model(*args)
    except Exception as exc:
        # With --input the user chose the shapes: a usage error. A saved signature that fails is the model's fault.
        error = UsageError if source.options.inputs else StageError
        raise error(
            f"{source.path}: the model fails on inputs of its signature "
            f"({_first_line(exc)}); check the --input shapes and dtypes"
        ) from exc
    return output_names(model, len(torch.utils._pytree.tree_leaves(outputs)))


def _run_exporter(
    exporter: str,
    source: ModelSource,
    model: Any,
    args: tuple,
    signature: Signature,
    output_names: list[str],
    out_path: Path,
    opset: int,
) -> None:
    import torch

    input_names = signature.names
    if exporter == "dynamo":
        dims: dict[str, Any] = {}
        dynamic_shapes = tuple(
            {
                axis: dims.setdefault(str(d), torch.export.Dim.DYNAMIC)
                for axis, d in enumerate(spec.shape)
                if isinstance(d, str)
            }
            for spec in signature.inputs
        )
        target = torch.export.load(str(source.path)) if source.kind is SourceKind.TORCH_EXPORT else model
        torch.onnx.export(
            target,
            args,
            str(out_path),
            dynamo=True,
            external_data=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=None if source.kind is SourceKind.TORCH_EXPORT else dynamic_shapes,
        )
    else:
        register_fused_symbolics(opset)
        dynamic_axes: dict[str, dict[int, str]] = {
            spec.name: {axis: str(d) for axis, d in enumerate(spec.shape) if isinstance(d, str)}
            for spec in signature.inputs
        }
        batch_name = next((str(s.shape[s.batch_axis]) for s in signature.inputs if s.batch_axis is not None), None)
        if batch_name:
            dynamic_axes.update({name: {0: batch_name} for name in output_names})
        torch.onnx.export(
            model,
            args,
            str(out_path),
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def _record_signature(path: Path, signature: Signature) -> None:
    """Name the graph's dynamic dims as the signature does (the exporter invents s0, s1, ...) and store the
    full signature, typical dim values included, in the model's metadata for later stages."""
    import json

    import onnx

    from deployopt.sources.onnxutil import SIGNATURE_METADATA

    model = onnx.load_model(str(path))
    renames: dict[str, str] = {}
    graph_inputs = {value.name: value for value in model.graph.input}
    for spec in signature.inputs:
        value = graph_inputs.get(spec.name)
        if value is None:
            continue
        for dim, wanted in zip(value.type.tensor_type.shape.dim, spec.shape, strict=False):
            if isinstance(wanted, str) and dim.dim_param and dim.dim_param != wanted:
                renames[dim.dim_param] = wanted
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
    entry = next((p for p in model.metadata_props if p.key == SIGNATURE_METADATA), None) or model.metadata_props.add()
    entry.key, entry.value = SIGNATURE_METADATA, json.dumps(signature.to_json())
    onnx.save_model(model, str(path))


def _check_onnx(path: Path, source: ModelSource) -> None:
    """Full ONNX checker plus strict shape inference; a failure here is an exporter bug worth naming."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise StageError(
            f"{source.path}: the exported ONNX model fails onnx.checker ({_first_line(exc)}); "
            "try --exporter torchscript or another --opset"
        ) from exc


_OPERATOR = re.compile(r"(aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|[A-Za-z_][\w]*::[A-Za-z_]\w*)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The most telling line of an exception: its root cause's first line, without colour codes."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = _ANSI.sub("", str(exc)).strip().split("  [Caused by", 1)[0]  # SymbolicValueError's graph dump
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def _failure_message(source: ModelSource, errors: dict[str, BaseException]) -> str:
    """One line naming the unsupported operator when any exporter's message names one."""
    operators: list[str] = []
    for exc in errors.values():
        chain = [exc]
        while chain[-1].__cause__ is not None:
            chain.append(chain[-1].__cause__)
        for match in _OPERATOR.findall(" ".join(_ANSI.sub("", str(e)) for e in chain)):
            if match not in operators and not match.startswith(("torch::", "c10::")):
                operators.append(match)
    reasons = "; ".join(f"{name}: {_first_line(exc)}" for name, exc in errors.items())
    if operators:
        return (
            f"{source.path}: ONNX export failed on unsupported operator {operators[0]} ({reasons}); "
            "replace that operation in the model or register a custom ONNX translation"
        )
    return f"{source.path}: ONNX export failed ({reasons}); rerun with --verbose for the exporter's log"


class ExportStep:
    """``build``'s export step: PyTorch → ``model.onnx``; an ONNX source is taken as it is."""

    name = "export"

    def run(self, ctx: BuildContext) -> None:
        source = ctx.export_source
        if source.kind is SourceKind.ONNX:
            ctx.exported = Artifact(source.path, source.sha256)
            reason = "the source is already ONNX (it is also the reference)"
            ctx.steps.append(StepRecord.skipped(self.name, reason))
            return
        ctx.progress("export: PyTorch → ONNX")
        config = ctx.config.export

        # Token ids must lie in the vocabulary and attention masks be 0/1: text models trace on their real text.
        example = next(ctx.data.verification.batches(2)) if source.kind is SourceKind.HUGGINGFACE else None

        def work(out: dict[str, Path]) -> dict:
            result = export_onnx(source, ctx.signature, out["model"], config, example)
            out["log"].write_text(result.log, encoding="utf-8")
            return result.to_json()

        inputs = {
            "source": source.sha256,
            "signature": sha256_json(ctx.signature.to_json()),
            "source_options": sha256_json(source.options.to_json()),
        }
        outputs = {"model": "model.onnx", "log": "logs/export.log"}
        outcome = ctx.run.run_stage(self.name, config, inputs, outputs, work)
        ctx.exported = Artifact(outcome.output("model"), outcome.record["outputs"]["model"]["sha256"])
        ctx.record(self.name, outcome, export_summary(outcome.record["details"]))


def export_summary(details: dict) -> str:
    summary = f"{details['exporter']} exporter, opset {details['opset']}, outputs {details['output_names']}"
    if details.get("fallback_reason"):
        summary += f"; fell back because the {details['fallback_reason']}"
    return summary + "; exporter log in logs/export.log"
