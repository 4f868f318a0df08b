"""The PyTorch module of a Hugging Face folder, wrapped to take the graph's inputs positionally and return the
task's output: token embeddings, sentence-transformers' pooled (and normalised) embedding, or logits.

Weights load through transformers from disk only: safetensors as they are, ``.bin`` files only with
``torch.load(weights_only=True)``. Attention is built as explicit operations (``attn_implementation="eager"``):
the exported graph is then plain ONNX that every runtime, quantizer and fusion pass understands.
"""

from __future__ import annotations

from typing import Any

from deployopt.errors import file_error
from deployopt.sources.huggingface import IMAGE_TASKS, HuggingFaceModel, model_class


def _pool(tokens: Any, mask: Any, mode: str) -> Any:
    """sentence-transformers' Pooling of token embeddings ``(batch, seq, dim)`` under the attention mask."""
    import torch

    weights = mask.unsqueeze(-1).to(tokens.dtype)
    if mode == "cls_token":
        return tokens[:, 0]
    if mode == "max_tokens":
        return tokens.masked_fill(weights == 0, -1e9).max(dim=1).values
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1
        return tokens[torch.arange(tokens.shape[0]), last]
    summed = (tokens * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len_tokens" else counts)


def _check_loading(model: HuggingFaceModel, class_name: str, loading: dict) -> None:
    """Weights that do not fit the config, or a task head the weights do not hold (transformers would initialise
    it at random and only warn): one line naming the tensors, instead of an artifact that computes noise."""
    mismatched = [
        str(item[0] if isinstance(item, tuple | list) else item) for item in loading.get("mismatched_keys", [])
    ]
    if mismatched:
        raise file_error(
            model.weights,
            f"weights do not fit config.json ({len(mismatched)} tensors of other shapes, e.g. {mismatched[0]})",
            "copy the config.json saved with these weights",
        )
    missing = sorted(loading.get("missing_keys", []))
    if missing:
        hint = "pass --task feature-extraction for its embeddings" if model.task != "feature-extraction" else ""
        raise file_error(
            model.weights,
            f"has no weights for {len(missing)} tensors of {class_name} (e.g. {missing[0]}): the model was not "
            f"trained for {model.task}",
            hint or "re-save the complete model with save_pretrained",
        )


def load_module(model: HuggingFaceModel) -> Any:
    """The task module in eval mode; ``output_names`` names what it returns (the exported graph's outputs)."""
    import pickle

    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bars would fill the terminal
    transformers.utils.logging.set_verbosity_error()  # its load report is replaced by the one-line check below
    class_name = model_class(model.config, model.task, model.root)
    try:
        network, loading = getattr(transformers, class_name).from_pretrained(
            str(model.model_dir),
            local_files_only=True,
            use_safetensors=model.weights.name.startswith("model.safetensors"),
            weights_only=True,
            attn_implementation="eager",
            ignore_mismatched_sizes=True,  # reported below, by name, instead of "look at the above report"
            output_loading_info=True,
        )
    except pickle.UnpicklingError as exc:
        raise file_error(
            model.weights,
            "holds pickled objects beyond tensors, which torch.load(weights_only=True) refuses (loading it would run "
            "code from the file)",
            "if you trust it, convert it to model.safetensors on a machine of yours (save_pretrained writes it)",
        ) from exc
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, AttributeError, TypeError) as exc:
        raise file_error(
            model.weights,
            f"cannot be loaded into {class_name} ({str(exc).splitlines()[0][:300]})",
            "re-save the model with save_pretrained, or export it yourself and pass the ONNX file",
        ) from exc
    _check_loading(model, class_name, loading)
    network.eval()
    task, pooling, normalize = model.task, model.pooling, model.normalize

    class TextTask(torch.nn.Module):
        output_names = (model.output_name,)

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            out = self.network(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra)
            if task != "sentence-embedding":
                return out.logits if task.endswith("classification") else out.last_hidden_state
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            pooled = _pool(out.last_hidden_state, mask, pooling or "mean_tokens")
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

    class ImageTask(torch.nn.Module):
        output_names = (model.output_name,)

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixel_values):
            return self.network(pixel_values=pixel_values, return_dict=True).logits

    return (ImageTask() if task in IMAGE_TASKS else TextTask()).eval()
