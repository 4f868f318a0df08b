"""Hugging Face model folders as a model source: transformers (``config.json`` + weights) and sentence-transformers
(``modules.json`` with Transformer, Pooling and Normalize modules). Local folders only — this tool never downloads.

What the folder holds is read here: the task (from the config's architecture, or ``--task``), the inputs the
exported graph takes (the tokenizer's ``input_ids``/``attention_mask``/``token_type_ids`` that the model's forward
accepts, or ``pixel_values`` for vision), the tokenizer and the sequence length text is encoded to. Every refusal —
no weights, no config, a tokenizer of another model, an unknown task, an unsupported architecture — is one line
naming the folder and the fix, raised before anything is written. Building the PyTorch module is
:mod:`deployopt.sources.huggingface_module`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployopt.errors import BackendUnavailableError, UsageError, file_error
from deployopt.sources.huggingface_vision import image_preprocess, image_signature
from deployopt.sources.signature import Signature, TensorSpec

TEXT_TASKS = ("feature-extraction", "sentence-embedding", "text-classification", "token-classification")
IMAGE_TASKS = ("image-classification",)
TASKS = TEXT_TASKS + IMAGE_TASKS
# The auto-model mapping of transformers that builds each task's model, and what the exported graph returns.
TASK_MAPPINGS = {
    "feature-extraction": "MODEL_MAPPING_NAMES",
    "sentence-embedding": "MODEL_MAPPING_NAMES",
    "text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
}
TASK_OUTPUTS = {
    "feature-extraction": "last_hidden_state",
    "sentence-embedding": "sentence_embedding",
    "text-classification": "logits",
    "token-classification": "logits",
    "image-classification": "logits",
}
# the kind of output each task's graph returns, for the judge (feature extraction's hidden states are detected)
TASK_KINDS = {
    "sentence-embedding": "embedding",
    "text-classification": "logits",
    "token-classification": "logits",
    "image-classification": "logits",
}
_ARCHITECTURE_TASKS = {  # the class-name suffix of config.architectures[0] → the task it was trained for
    "ForSequenceClassification": "text-classification",
    "ForTokenClassification": "token-classification",
    "ForImageClassification": "image-classification",
    "Model": "feature-extraction",
}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the graph's input order
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MAX_LENGTH_CAP = 256  # default sequence limit: sentences fit, and activations stay small for calibration
POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken")


@dataclass(frozen=True)
class TextEncoding:
    """How text becomes the graph's inputs: the folder's tokenizer, truncated at ``max_length``."""

    tokenizer: Path
    max_length: int
    input_names: tuple[str, ...]
    task: str  # labels in a .jsonl are classes of a text-classification model only
    labels: tuple[str, ...] = ()  # class names by index (config.id2label), for .jsonl labels given by name

    def to_json(self) -> dict:
        return {"tokenizer": str(self.tokenizer), "max_length": self.max_length, "inputs": list(self.input_names)}


@dataclass(frozen=True)
class HuggingFaceModel:
    """What a Hugging Face folder holds, as far as export needs it."""

    root: Path
    model_dir: Path  # the transformers model: the root, or a sentence-transformers Transformer module's folder
    config: dict
    task: str
    architecture: str
    weights: Path
    pooling: str | None = None  # sentence-transformers pooling mode
    normalize: bool = False  # sentence-transformers Normalize module
    text: TextEncoding | None = None
    image_preprocess: dict | None = None  # image models: --preprocess settings from preprocessor_config.json

    @property
    def output_name(self) -> str:
        return TASK_OUTPUTS[self.task]

    @property
    def output_kind(self) -> tuple[str, str] | None:
        """What the task's output is for the judge (measure.kinds), and why; None: detect it."""
        kind = TASK_KINDS.get(self.task)
        return (kind, f"the Hugging Face task {self.task}") if kind else None

    def support_files(self) -> list[Path]:
        """The tokenizer / processor / sentence-transformers files a deployment needs beside the graph."""
        names = (*TOKENIZER_FILES, "preprocessor_config.json", *SENTENCE_TRANSFORMERS_FILES, "config.json")
        found = {p for d in (self.root, self.model_dir) for p in (d / n for n in names) if p.is_file()}
        return sorted(found) + sorted(self.root.glob("*_Pooling/config.json"))

    def to_json(self) -> dict:
        return {
            "task": self.task,
            "architecture": self.architecture,
            "output": self.output_name,
            "model_type": self.config.get("model_type"),
            "weights": self.weights.name,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "text": self.text.to_json() if self.text else None,
            "image_preprocess": self.image_preprocess,
        }


def looks_like_folder_model(path: Path) -> bool:
    """A folder with any file of a saved Hugging Face model (the checks say what is missing)."""
    names = (*WEIGHT_FILES, "config.json", "modules.json", *TOKENIZER_FILES)
    return path.is_dir() and any((path / n).is_file() for n in names)


def looks_like_hub_id(text: str) -> bool:
    """``org/name`` as on the Hugging Face Hub (a path that does not exist here)."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "." not in parts[0]


def hub_id_error(path: Path) -> Exception:
    return file_error(
        path,
        "not found locally (deployopt never downloads models)",
        f"on a connected machine run `hf download {path} --local-dir FOLDER` (huggingface_hub), copy FOLDER here "
        "and pass it",
    )


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise file_error(path, f"is not readable JSON ({exc})", "re-save the model with save_pretrained") from exc
    if not isinstance(value, dict | list):
        raise file_error(path, "is not a JSON object", "re-save the model with save_pretrained")
    return value


def _sentence_transformer_modules(root: Path) -> tuple[Path, str | None, bool]:
    """(the Transformer module's folder, pooling mode, normalize) from ``modules.json``; other modules refused."""
    modules = _json(root / "modules.json")
    if not isinstance(modules, list):
        raise file_error(root / "modules.json", "is not a list of modules", "re-save it with SentenceTransformer.save")
    model_dir, pooling, normalize = None, None, False
    for module in modules:
        if not isinstance(module, dict):
            raise file_error(
                root / "modules.json", f"lists {module!r}, not a module", "re-save it with SentenceTransformer.save"
            )
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = root / str(module.get("path", ""))
        if kind == "Transformer":
            model_dir = folder
        elif kind == "Pooling":
            pooling = _pooling_mode(folder / "config.json")
        elif kind == "Normalize":  # no parameters: its folder may be absent
            normalize = True
        else:
            raise file_error(
                root,
                f"sentence-transformers module {module.get('type')} is not supported (Transformer, Pooling and "
                "Normalize are)",
                "export the model yourself with torch.onnx.export and pass the ONNX file",
            )
    if model_dir is None:
        raise file_error(
            root / "modules.json", "lists no Transformer module", "re-save it with SentenceTransformer.save"
        )
    return model_dir, pooling, normalize


def _pooling_mode(config_path: Path) -> str:
    config = _json(config_path) if config_path.is_file() else {"pooling_mode_mean_tokens": True}
    modes = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}")]
    unknown = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in POOLING_MODES]
    if len(modes) != 1 or unknown:
        raise file_error(
            config_path,
            f"pooling {modes + [k[13:] for k in unknown]} is not supported (one of {', '.join(POOLING_MODES)} is)",
            "export the model yourself with torch.onnx.export and pass the ONNX file",
        )
    return modes[0]


def _weights(model_dir: Path, root: Path) -> Path:
    found = [model_dir / n for n in WEIGHT_FILES if (model_dir / n).is_file()]
    if not found:
        raise file_error(
            root,
            "has a config.json but no weights (model.safetensors or pytorch_model.bin)",
            "copy the weight files saved with the model beside config.json (model.save_pretrained writes both)",
        )
    return found[0]


def _task(config: dict, folder: Path, sentence_transformers: bool, asked: str | None) -> str:
    if asked is not None:
        if asked not in TASKS:
            raise UsageError(f"--task {asked}: unknown task; one of {', '.join(TASKS)}")
        if asked == "sentence-embedding" and not sentence_transformers:
            raise UsageError(
                f"--task sentence-embedding: {folder} is not a sentence-transformers folder (no modules.json, so no "
                "pooling is known); use --task feature-extraction for the token embeddings"
            )
        return asked
    if sentence_transformers:
        return "sentence-embedding"
    architecture = (config.get("architectures") or [""])[0]
    for suffix, task in _ARCHITECTURE_TASKS.items():
        if architecture.endswith(suffix):
            return task
    raise file_error(
        folder,
        f"architecture {architecture or '(none named in config.json)'} has no supported task",
        f"pass --task ({', '.join(TASKS)}) — feature-extraction exports its base model — or export it yourself "
        "and pass the ONNX file",
    )


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            "Hugging Face model folders need transformers: pip install 'deployopt[hf]'"
        ) from exc
    return transformers


def model_class(config: dict, task: str, folder: Path) -> str:
    """The transformers class that builds ``task`` for this config's model type; one line when there is none."""
    from transformers.models.auto import modeling_auto

    model_type = config.get("model_type")
    architecture = (config.get("architectures") or [model_type or "?"])[0]
    names = getattr(modeling_auto, TASK_MAPPINGS[task])
    name = names.get(model_type) if model_type else None
    if not isinstance(name, str):  # a few types map to several classes: take the first
        name = name[0] if name else None
    if name is None:
        supported = sorted(t for t in names if isinstance(t, str))
        raise file_error(
            folder,
            f"architecture {architecture} (model_type {model_type!r}) is not supported for {task} by this "
            f"transformers {_require_transformers().__version__} ({len(supported)} model types are)",
            "export it yourself with torch.onnx.export and pass the ONNX file, or pick another --task",
        )
    return name


def _forward_parameters(class_name: str, folder: Path) -> set[str]:
    import inspect

    transformers = _require_transformers()
    try:
        model_type = getattr(transformers, class_name)
    except (ImportError, AttributeError) as exc:  # a class that needs an optional package transformers lacks
        raise BackendUnavailableError(f"{folder}: transformers cannot provide {class_name} here ({exc})") from exc
    return set(inspect.signature(model_type.forward).parameters)


def _text_encoding(
    hf_dir: Path, root: Path, config: dict, task: str, class_name: str, max_length: int | None
) -> TextEncoding:
    from deployopt.data.text import load_tokenizer

    if not any((d / n).is_file() for d in (root, hf_dir) for n in ("tokenizer.json", "vocab.txt", "vocab.json")):
        raise file_error(
            root,
            "has no tokenizer (tokenizer.json, vocab.txt or vocab.json)",
            "save it beside the model with tokenizer.save_pretrained(folder)",
        )
    tokenizer_dir = (
        root if (root / "tokenizer_config.json").is_file() or (root / "tokenizer.json").is_file() else hf_dir
    )
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise file_error(
            tokenizer_dir,
            f"its tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab}: they belong to "
            "different models",
            "copy the tokenizer files saved with this model",
        )
    accepted = _forward_parameters(class_name, root)
    names = tuple(n for n in TEXT_INPUTS if n in tokenizer.model_input_names and n in accepted)
    if "input_ids" not in names:
        raise file_error(root, f"the tokenizer gives {tokenizer.model_input_names}, not input_ids", "use a text model")
    sbert = _json(root / "sentence_bert_config.json") if (root / "sentence_bert_config.json").is_file() else {}
    limits = [config.get("max_position_embeddings"), getattr(tokenizer, "model_max_length", None)]
    limits += [sbert.get("max_seq_length")] if isinstance(sbert, dict) else []
    known = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]  # tokenizers say 1e30 for "no limit"
    if max_length is not None and known and max_length > min(known):
        raise UsageError(f"--max-length {max_length}: the model takes at most {min(known)} tokens")
    labels = config.get("id2label") or {}
    indexed = isinstance(labels, dict) and all(str(k).isdigit() for k in labels)
    names_by_index = tuple(str(labels[k]) for k in sorted(labels, key=int)) if labels and indexed else ()
    default = min([*known, MAX_LENGTH_CAP])
    return TextEncoding(tokenizer_dir, max_length or default, names, task, names_by_index)


def inspect_folder(
    root: Path, task: str | None = None, max_length: int | None = None
) -> tuple[HuggingFaceModel, Signature]:
    """Read and check a Hugging Face folder; the signature of the graph its export takes."""
    sentence_transformers = (root / "modules.json").is_file()
    if sentence_transformers:
        model_dir, pooling, normalize = _sentence_transformer_modules(root)
    else:
        model_dir, pooling, normalize = root, None, False
    if not (model_dir / "config.json").is_file():
        raise file_error(
            root,
            "has no config.json"
            + (" beside its weights" if any((model_dir / n).is_file() for n in WEIGHT_FILES) else ""),
            "copy the config.json saved with the model (model.save_pretrained writes it with the weights)",
        )
    _require_transformers()
    config = _json(model_dir / "config.json")
    if not isinstance(config, dict):
        raise file_error(model_dir / "config.json", "is not a JSON object", "re-save the model with save_pretrained")
    weights = _weights(model_dir, root)
    task = _task(config, root, sentence_transformers, task)
    class_name = model_class(config, task, root)
    architecture = (config.get("architectures") or [class_name])[0]
    if task in IMAGE_TASKS:
        if max_length is not None:
            raise UsageError("--max-length applies to text models; this is an image model")
        processor = root / "preprocessor_config.json"
        preprocess = image_preprocess(_json(processor)) if processor.is_file() else None
        model = HuggingFaceModel(root, model_dir, config, task, architecture, weights, image_preprocess=preprocess)
        return model, image_signature(config, root)
    text = _text_encoding(model_dir, root, config, task, class_name, max_length)
    model = HuggingFaceModel(root, model_dir, config, task, architecture, weights, pooling, normalize, text)
    signature = Signature(tuple(TensorSpec(n, ("batch", "seq"), "int64") for n in text.input_names))
    return model, signature


def folder_sha256(model: HuggingFaceModel) -> str:
    """One hash over the files that define the model (weights, config, tokenizer, modules), by relative name."""
    digest = hashlib.sha256()
    weights = [model.weights]
    if model.weights.name.endswith(".index.json"):  # sharded: the shards the index names
        shards = set(_json(model.weights).get("weight_map", {}).values())
        weights += [model.weights.parent / s for s in sorted(shards)]
    for path in sorted({*weights, *model.support_files()}):
        if not path.is_file():
            raise file_error(path, "is missing (named by the model's weight index)", "copy every weight shard")
        digest.update(str(path.relative_to(model.root)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_size(model: HuggingFaceModel) -> int:
    weights = model.weights
    if weights.name.endswith(".index.json"):
        return sum((weights.parent / s).stat().st_size for s in set(_json(weights).get("weight_map", {}).values()))
    return weights.stat().st_size
