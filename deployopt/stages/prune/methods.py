"""Prune stage: a PyTorch model → a smaller one, before export. Three methods, each honest about its gain.

- ``channels``: structured pruning that physically removes output channels, through Torch-Pruning's
  dependency graph (residual adds, concatenations, depthwise and grouped convolutions stay consistent).
  Importance by L1 / L2 weight magnitude, BatchNorm scale or first-order Taylor (needs labelled data).
  Parameters, MACs, file size and latency all drop.
- ``2:4``: in every group of four consecutive weights along the input dimension two are zeroed — the
  pattern NVIDIA sparse tensor cores run at up to twice the speed (TensorRT ``--sparse-weights``). Dense
  kernels gain nothing; :func:`check_2to4` confirms the pattern survived export.
- ``magnitude``: unstructured, the smallest weights globally set to zero. Only compressed size shrinks;
  no speed-up is claimed on dense kernels.

The layer that produces the model's output is never pruned by ``channels`` (its width is the number of
classes); ``exclude`` names more layers to leave alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployopt.errors import UsageError
from deployopt.measure.macs import count_macs_and_params

Method = Literal["channels", "2:4", "magnitude"]


class PruneConfig(BaseModel):
    """Options of ``deployopt prune`` and of the prune step of ``deployopt build``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("channels", description="channels (structured), 2:4 (semi-structured) or magnitude")
    amount: float | None = Field(
        None, gt=0, lt=1, description="channels: fraction removed per layer (0.3); magnitude: of weights (0.5)"
    )
    importance: Literal["l1", "l2", "bn", "taylor"] = Field("l2", description="channels: importance criterion")
    exclude: tuple[str, ...] = Field((), description="module names to leave unpruned")
    round_to: int = Field(
        8,
        ge=1,
        description="channels: keep counts multiples of this; CPU and GPU kernels work in blocks of 8 "
        "channels, and pruning 96 → 67 can be slower than not pruning at all (1 = exact amount)",
    )
    finetune_epochs: int = Field(0, ge=0, description="short fine-tune after pruning (needs labelled data)")
    finetune_lr: float = Field(1e-3, gt=0, description="fine-tune learning rate")
    distill: bool = Field(False, description="fine-tune against the unpruned model's logits as well as labels")
    train_data: Path | None = Field(None, description=".npz with inputs and 'labels'; default: registered dataset")
    max_accuracy_drop: float = Field(1.0, ge=0, description="budget against the unpruned model, in points")
    seed: int = Field(0, description="seed of the fine-tune")

    @model_validator(mode="after")
    def _amount_fits_method(self) -> PruneConfig:
        if self.method == "2:4" and self.amount not in (None, 0.5):
            raise ValueError("2:4 sparsity always removes half the weights; drop --prune-amount")
        return self

    @property
    def resolved_amount(self) -> float:
        return self.amount if self.amount is not None else {"channels": 0.3, "magnitude": 0.5, "2:4": 0.5}[self.method]


@dataclass
class LayerChange:
    name: str
    kind: str  # Conv2d / Linear / ...
    before: int  # output channels (channels) or nonzero weights (sparse methods)
    after: int
    note: str = ""


@dataclass
class PruneResult:
    method: str
    amount: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    sparsity: float  # fraction of prunable weights that are zero after pruning
    layers: list[LayerChange] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # layers a method could not apply to, with the reason

    def to_json(self) -> dict:
        return asdict(self)


def _prunable(model: Any) -> dict[str, Any]:
    from torch import nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))}


def output_layers(model: Any, example: tuple) -> list[str]:
    """The layers whose output *is* the model's output (their width is fixed by the task)."""
    import torch

    produced: dict[int, str] = {}
    alive: list[Any] = []  # keep every output referenced, so no id is reused by a later tensor

    def remember(name: str):
        def hook(module, inputs, output) -> None:  # returning anything would replace the output
            produced[id(output)] = name
            alive.append(output)

        return hook

    hooks = [module.register_forward_hook(remember(name)) for name, module in _prunable(model).items()]
    try:
        with torch.no_grad():
            result = model(*example)
    finally:
        for hook in hooks:
            hook.remove()
    leaves = torch.utils._pytree.tree_leaves(result)
    found = [produced[id(leaf)] for leaf in leaves if id(leaf) in produced]
    if found:
        return found
    linears = [n for n, m in _prunable(model).items() if isinstance(m, torch.nn.Linear)]
    return linears[-1:]  # e.g. a reshape after the classifier: the last Linear is the best guess


def _check_exclusions(model: Any, exclude: tuple[str, ...]) -> None:
    names = dict(model.named_modules())
    unknown = [n for n in exclude if n not in names]
    if unknown:
        known = ", ".join(list(_prunable(model))[:8])
        raise UsageError(f"--prune-exclude: no layer named {unknown} in the model; prunable layers include: {known}")


def _prune_channels(model: Any, example: tuple, config: PruneConfig, keep: set[str], loss_batch) -> None:
    import torch_pruning as tp

    importance = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": tp.importance.BNScaleImportance,
        "taylor": tp.importance.GroupTaylorImportance,
    }[config.importance]()
    modules = dict(model.named_modules())
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        pruning_ratio=config.resolved_amount,
        ignored_layers=[modules[n] for n in keep],
        round_to=config.round_to if config.round_to > 1 else None,
    )
    if config.importance == "taylor":
        if loss_batch is None:
            raise UsageError(
                "--prune-importance taylor needs labelled data (a registered dataset or --prune-train-data)"
            )
        loss_batch(model).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)


def _two_four_mask(weight: Any) -> Any:
    """Keep the 2 largest of every 4 consecutive weights along the input dimension (dim 1)."""
    moved = weight.movedim(1, -1)  # [..., in]
    groups = moved.abs().reshape(-1, 4)
    keep = groups.topk(2, dim=1).indices
    mask = groups.new_zeros(groups.shape).scatter_(1, keep, 1.0)
    return mask.reshape(moved.shape).movedim(-1, 1)


def _sparse_masks(model: Any, config: PruneConfig, keep: set[str], skipped: list[str]) -> dict[str, Any]:
    import torch

    weights = {n: m.weight for n, m in _prunable(model).items() if n not in keep}
    masks: dict[str, Any] = {}
    if config.method == "2:4":
        for name, weight in weights.items():
            if weight.shape[1] % 4:
                skipped.append(f"{name}: input dimension {weight.shape[1]} is not a multiple of 4")
                continue
            masks[f"{name}.weight"] = _two_four_mask(weight.detach())
    else:
        magnitudes = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        threshold = magnitudes.kthvalue(max(1, int(config.resolved_amount * magnitudes.numel()))).values
        masks = {f"{n}.weight": (w.detach().abs() > threshold).float() for n, w in weights.items()}
    return masks


def prune_module(
    model: Any, example: tuple, config: PruneConfig, loss_batch=None
) -> tuple[PruneResult, dict[str, Any]]:
    """Prune ``model`` in place; return the result and the masks a fine-tune must keep applying."""
    import torch

    _check_exclusions(model, config.exclude)
    model.eval()
    keep = set(config.exclude)
    if config.method == "channels":
        keep |= set(output_layers(model, example))
    candidates = [n for n in _prunable(model) if n not in keep]
    if not candidates:
        raise UsageError(
            "nothing to prune: the model has no Conv/Linear layer outside the output layer and --prune-exclude"
        )
    if config.importance == "bn" and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise UsageError("--prune-importance bn needs BatchNorm layers, and this model has none; use l1 or l2")
    macs_before, params_before = count_macs_and_params(model, example)
    before = {n: _width_and_nonzero(m) for n, m in _prunable(model).items()}
    skipped: list[str] = []
    masks: dict[str, Any] = {}
    if config.method == "channels":
        _prune_channels(model, example, config, keep, loss_batch)
    else:
        masks = _sparse_masks(model, config, keep, skipped)
        from deployopt.training.loop import apply_masks

        apply_masks(model, masks)
    macs_after, params_after = count_macs_and_params(model, example)
    layers = []
    for name, module in _prunable(model).items():
        (width0, nonzero0), (width1, nonzero1) = before[name], _width_and_nonzero(module)
        b, a = (width0, width1) if config.method == "channels" else (nonzero0, nonzero1)
        note = "output layer" if name in keep and name not in config.exclude else ("excluded" if name in keep else "")
        layers.append(LayerChange(name, type(module).__name__, b, a, note))
    total = sum(m.weight.numel() for n, m in _prunable(model).items())
    zeros = sum(int((m.weight == 0).sum()) for m in _prunable(model).values())
    result = PruneResult(
        config.method, config.resolved_amount, params_before, params_after, macs_before, macs_after,
        zeros / total if total else 0.0, layers, skipped,
    )  # fmt: skip
    return result, masks


def _width_and_nonzero(module: Any) -> tuple[int, int]:
    width = module.out_channels if hasattr(module, "out_channels") else module.out_features
    return int(width), int((module.weight != 0).sum())


@dataclass
class SparsityCheck:
    """2:4 pattern of each eligible weight tensor in an ONNX graph (input dimension a multiple of 4)."""

    tensors: dict[str, bool]  # initializer → follows 2:4

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and all(self.tensors.values())

    @property
    def offending(self) -> list[str]:
        return [name for name, ok in self.tensors.items() if not ok]

    def to_json(self) -> dict:
        return {"passed": self.passed, "tensors": self.tensors}


def check_2to4(onnx_path: str | Path) -> SparsityCheck:
    """Find Conv / Gemm / MatMul weight initializers and check 2:4 along their input dimension."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    tensors: dict[str, bool] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if node.op_type == "Conv":
            along_input = np.moveaxis(weight, 1, -1)  # [K, C, kh, kw] → groups along C
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            along_input = weight  # [N, K]: K last
        else:
            along_input = weight.T if weight.ndim == 2 else weight  # MatMul / Gemm without transB: [K, N]
        if along_input.shape[-1] % 4:
            continue
        nonzero_per_group = (along_input.reshape(-1, 4) != 0).sum(axis=1)
        tensors[node.input[1]] = bool((nonzero_per_group <= 2).all())
    return SparsityCheck(tensors)
