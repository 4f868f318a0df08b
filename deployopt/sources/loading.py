"""Load a PyTorch module from a detected model source (see :mod:`deployopt.sources.detect`).

``--arch`` resolves a registered name, a torchvision model name (bare or ``torchvision:NAME``) or
``package.module:factory``; whole pickled modules load only with ``trust_pickle``; weights that do not fit
the architecture are refused with the mismatching keys named.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from deployopt.errors import UsageError, file_error
from deployopt.sources.detect import ModelSource, SourceKind, require_trust, torch_load


def resolve_arch(arch: str, kwargs: dict[str, Any] | None = None) -> Any:
    """Build an (untrained) module from ``--arch``: a registered name, a torchvision model name (bare, as users
    type it, or ``torchvision:NAME``), or ``pkg.mod:factory``. Registered names win over torchvision's."""
    from deployopt import models

    kwargs = dict(kwargs or {})
    entry = models.get_model(arch)
    if entry is not None:
        return entry.factory(**{**entry.default_kwargs, **kwargs})
    if arch.startswith("torchvision:") or ":" not in arch:
        return _torchvision_model(arch, kwargs)
    module_name, _, attr = arch.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # let users point at their own project's modules
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--arch {arch}: cannot import '{attr}' from '{module_name}' ({exc})") from exc
    return factory(**kwargs)


def _torchvision_model(arch: str, kwargs: dict[str, Any]) -> Any:
    """torchvision's model ``arch`` (``torchvision:`` optional); an unknown name lists the nearest ones."""
    import difflib

    from deployopt import models

    name = arch.removeprefix("torchvision:")
    prefixed = arch.startswith("torchvision:")
    try:
        import torchvision
    except ImportError as exc:
        if prefixed:
            raise UsageError(
                f"--arch {arch} needs torchvision; install it with: pip install 'deployopt[vision]'"
            ) from exc
        torchvision = None
    choices = torchvision.models.list_models() if torchvision is not None else []
    if name in choices:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    known = models.model_names() + choices
    near = [n for n in known if n.lower() == name.lower()] or difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    searched = (
        "registered models and torchvision's"
        if torchvision is not None
        else ("registered models (torchvision is not installed: pip install 'deployopt[vision]' to search its models)")
    )
    raise UsageError(
        f"--arch {arch}: unknown architecture among {searched}; {hint}"
        f"use a registered name ({', '.join(models.model_names())}), a torchvision model name or package.module:factory"
    )


def load_torch_model(source: ModelSource) -> Any:
    """Return a callable torch module in eval mode for any torch source kind."""
    import torch

    kind = source.kind
    if kind is SourceKind.TORCHSCRIPT:
        try:
            module = torch.jit.load(str(source.path), map_location="cpu")
        except RuntimeError as exc:
            raise file_error(
                source.path,
                f"cannot be loaded as TorchScript ({str(exc).splitlines()[0]})",
                "re-save it with torch.jit.save",
            ) from exc
    elif kind is SourceKind.TORCH_EXPORT:
        try:
            module = torch.export.load(str(source.path)).module()
        except Exception as exc:  # torch.export.load raises many types for a damaged archive
            raise file_error(
                source.path,
                f"cannot be loaded as a torch.export archive ({str(exc).splitlines()[0]})",
                "re-save it with torch.export.save",
            ) from exc
        return module  # an exported GraphModule has no eval()/train() switch: it is fixed at export
    elif kind is SourceKind.PICKLED_MODULE:
        require_trust(source)
        module = torch_load(source.path, weights_only=False)
        if not isinstance(module, torch.nn.Module):
            raise file_error(
                source.path,
                f"unpickles to a {type(module).__name__}, not an nn.Module",
                "save the module or its state_dict",
            )
    elif kind is SourceKind.CHECKPOINT:
        module = _module_from_checkpoint(source)
    elif kind is SourceKind.HUGGINGFACE:
        from deployopt.sources.huggingface_module import load_module

        module = load_module(source.huggingface)
    else:
        raise UsageError(f"{source.path}: an ONNX model has no PyTorch module; use the ONNX Runtime runner")
    return module.eval()


def output_names(module: Any, count: int) -> list[str]:
    """Names of a module's ``count`` (flattened) outputs: its own ``output_names`` when it declares them (Hugging
    Face tasks: ``logits``, ``sentence_embedding``), else 'output' for one and 'output_0..' for several."""
    declared = list(getattr(module, "output_names", ()) or ())
    if len(declared) == count:
        return declared
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _module_from_checkpoint(source: ModelSource) -> Any:
    from deployopt.sources.checkpoint import is_deployopt_checkpoint

    if source.arch is None:
        raise file_error(
            source.path,
            "holds only weights (a state_dict) and no architecture",
            "pass --arch NAME (registered or torchvision, e.g. --arch resnet18) or --arch package.module:factory",
        )
    obj = torch_load(source.path, weights_only=True)
    state = obj["state_dict"] if is_deployopt_checkpoint(obj) else _unwrap_state_dict(obj)
    module = resolve_arch(source.arch, source.arch_kwargs)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise file_error(
            source.path,
            f"weights do not fit --arch {source.arch} ({first})",
            "pass the architecture these weights were trained with",
        ) from exc
    return module


def _unwrap_state_dict(obj: dict) -> dict:
    """Accept the common wrappers ({"state_dict": ...}, {"model": ...}) around a plain state_dict."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj
