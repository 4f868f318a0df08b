"""``deployopt prune``: prune a PyTorch model, optionally fine-tune it, measure what changed, save it.

The result is a TorchScript archive carrying deployopt's metadata (signature, dataset, what was pruned),
so it reloads without the original model code and exports, quantizes and verifies like any other source.
Reported against the unpruned model: parameters, MACs, file size (and compressed size — the only gain of
unstructured sparsity), latency, accuracy on the held-out split, and per-layer kept/removed counts.
"""

from __future__ import annotations

import copy
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deployopt.data.eval_data import EvalData, dataset_data, generate_batch, load_data
from deployopt.errors import InputFileError, UsageError
from deployopt.fsutil import atomic_path
from deployopt.measure.bench import BenchConfig, BenchVariant, bench
from deployopt.runners import RunnerSpec
from deployopt.sources.detect import METADATA_FILE, ModelSource, SourceKind
from deployopt.sources.loading import load_torch_model
from deployopt.sources.signature import Signature
from deployopt.stages.prune.methods import PruneConfig, PruneResult, prune_module
from deployopt.training.log import TrainLog
from deployopt.training.loop import TrainRecipe, evaluate, train_classifier


@dataclass
class PruneOutcome:
    result: PruneResult
    size_before: int
    size_after: int
    compressed_before: int  # zlib level 9 of the saved file: what sparsity buys on disk or over the wire
    compressed_after: int
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    finetune: dict | None = None
    latency: list[dict] = field(default_factory=list)  # Measurement.to_json() rows, variants "original"/"pruned"
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return asdict(self) | {"passed": self.passed}


def _labelled(source: ModelSource, signature: Signature, config: PruneConfig) -> dict[str, EvalData]:
    """train / val / test splits: --train-data (also used as val and test), else the registered dataset."""
    if config.train_data is not None:
        data = load_data(signature, config.train_data)
        if data.labels is None:
            raise InputFileError(f"{config.train_data}: has no 'labels' array; fine-tuning needs labels")
        return {"train": data, "val": data, "test": data}
    if source.dataset is not None:
        return {split: dataset_data(signature, source.dataset, split) for split in ("train", "val", "test")}
    return {}


def _single_input(signature: Signature, data: EvalData) -> tuple[Any, Any]:
    if len(signature.inputs) != 1:
        raise UsageError("fine-tuning supports single-input models; prune without --prune-finetune-epochs")
    return data.inputs[signature.names[0]], data.labels


def save_torchscript(model: Any, path: Path, example: tuple, metadata: dict) -> None:
    """Trace in eval mode and write atomically, deployopt's metadata inside the archive."""
    import torch

    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})


def _compressed(path: Path) -> int:
    return len(zlib.compress(path.read_bytes(), 9))


def prune(
    source: ModelSource,
    out: Path,
    config: PruneConfig,
    bench_config: BenchConfig | None = BenchConfig(),
    log=lambda message: None,
) -> PruneOutcome:
    """Prune ``source`` into ``out``; see the module docstring. ``passed`` is False past the accuracy budget."""
    import torch

    if not source.kind.is_torch or source.kind in (SourceKind.TORCHSCRIPT, SourceKind.TORCH_EXPORT):
        raise InputFileError(
            f"{source.path}: prune needs the PyTorch module itself (a checkpoint, or a state_dict with --arch), "
            f"not a {source.kind.value} file"
        )
    if source.signature is None:
        raise InputFileError(f"{source.path}: no input signature is saved with this model; pass --input NAME:SHAPE")
    signature = source.signature
    torch.manual_seed(config.seed)
    model = load_torch_model(source)
    example = tuple(torch.from_numpy(a) for a in generate_batch(signature, 2, seed=config.seed).inputs.values())
    splits = _labelled(source, signature, config)
    if config.finetune_epochs and not splits:
        raise UsageError(
            "fine-tuning needs labelled data: the model has no registered dataset; pass --prune-train-data"
        )
    teacher = copy.deepcopy(model).eval() if config.distill else None
    if config.distill and not config.finetune_epochs:
        raise UsageError("--prune-distill trains the pruned model against the original: add --prune-finetune-epochs N")
    accuracy_before = evaluate(model, *_single_input(signature, splits["test"])) if splits else None

    def loss_batch(module):
        x, y = _single_input(signature, splits["train"])
        return torch.nn.functional.cross_entropy(module(torch.from_numpy(x[:256])), torch.from_numpy(y[:256]))

    result, masks = prune_module(model, example, config, loss_batch if splits else None)
    log(f"prune: {config.method}, MACs {result.macs_before:,} → {result.macs_after:,}")
    finetune = None
    if config.finetune_epochs:
        recipe = TrainRecipe(
            epochs=config.finetune_epochs, lr=config.finetune_lr, seed=config.seed, warmup_fraction=0.1
        )
        finetune = train_classifier(
            model,
            _single_input(signature, splits["train"]),
            _single_input(signature, splits["val"]),
            recipe,
            teacher=teacher,
            masks=masks,
            log=TrainLog(message=log),
        )
        finetune["distilled"] = config.distill
    accuracy_after = evaluate(model, *_single_input(signature, splits["test"])) if splits else None
    metadata = {"signature": signature.to_json(), "dataset": source.dataset, "pruned": result.to_json()}
    save_torchscript(model, out, example, metadata)
    outcome = PruneOutcome(
        result, source.path.stat().st_size, out.stat().st_size, _compressed(source.path), _compressed(out),
        accuracy_before, accuracy_after, finetune,
    )  # fmt: skip
    if accuracy_before is not None and accuracy_before - accuracy_after > config.max_accuracy_drop:
        outcome.failures.append(
            f"accuracy drop {accuracy_before - accuracy_after:.2f} points > budget {config.max_accuracy_drop:g} "
            f"({accuracy_after:.2f}% vs {accuracy_before:.2f}%); fine-tune longer or prune less"
        )
    if bench_config is not None:
        variants = [
            BenchVariant("original", RunnerSpec("torch", str(source.path), source_options=source.options.to_json())),
            BenchVariant("pruned", RunnerSpec("torch", str(out))),
        ]
        outcome.latency = [m.to_json() for m in bench(variants, signature, bench_config)]
    return outcome
