"""Text as model inputs: a text file (one example per line) or ``.jsonl`` (``text``, optional ``text_pair`` and
``label``), encoded by the model folder's own tokenizer; and the built-in English sentences used when a text model
is given no data (never random token ids: int8 ranges and verification must see real text).

Every example is truncated at the encoding's ``max_length`` and the set is padded to its longest example, so
the arrays have one sequence length (the graph's ``seq`` axis is dynamic).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.data.eval_data import EvalData
from deployopt.errors import UsageError, file_error
from deployopt.sources.huggingface import TextEncoding
from deployopt.sources.signature import Signature

TEXT_SUFFIXES = (".txt", ".jsonl")
SENTENCES = Path(__file__).resolve().parent.parent / "models" / "data" / "sentences.txt"


def is_text_file(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


@cache
def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer (fast when it has one), read from disk only. Examples are padded to a common length
    (the attention mask hides the padding): a tokenizer without a padding token pads with its end-of-text token,
    as is usual for GPT-style models; one with neither is refused."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # the tokenizers library raises bare Exception on a damaged tokenizer.json
        raise file_error(
            folder,
            f"its tokenizer cannot be loaded ({str(exc).splitlines()[0][:200]})",
            "re-save it with save_pretrained",
        ) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise file_error(
                folder,
                "its tokenizer has neither a padding nor an end-of-text token, so examples cannot share one length",
                "set tokenizer.pad_token and save it with save_pretrained",
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(encoding: TextEncoding, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Token arrays by input name (int64), truncated at ``max_length`` and padded to the longest example."""
    tokens = load_tokenizer(encoding.tokenizer)(
        texts, pairs, padding="longest", truncation=True, max_length=encoding.max_length, return_tensors="np"
    )
    return {name: np.asarray(tokens[name], dtype=np.int64) for name in encoding.input_names}


def _read_jsonl(path: Path, labels: tuple[str, ...]) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    texts, pairs, targets = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise file_error(
                    path, f"line {number} is not JSON ({exc.msg})", "write one JSON object per line"
                ) from exc
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise file_error(
                    path, f'line {number} has no "text" string field', 'write {"text": "...", "label": ...} per line'
                )
            texts.append(row["text"])
            if "text_pair" in row:
                pairs.append(str(row["text_pair"]))
            if "label" in row:
                targets.append(_label_index(row["label"], labels, path, number))
    if pairs and len(pairs) != len(texts):
        raise file_error(path, 'only some lines have a "text_pair"', "give every line a text_pair, or none")
    if targets and len(targets) != len(texts):
        raise file_error(path, 'only some lines have a "label"', "give every line a label, or none")
    return texts, pairs or None, np.asarray(targets, dtype=np.int64) if targets else None


def _label_index(label: Any, labels: tuple[str, ...], path: Path, number: int) -> int:
    if isinstance(label, int) and not isinstance(label, bool) and label >= 0:
        return label
    if isinstance(label, str) and label in labels:
        return labels.index(label)
    known = f"one of {', '.join(labels)} or " if labels else ""
    raise file_error(path, f"line {number}: label {label!r} is not a class of the model", f"use {known}a class index")


def text_data(encoding: TextEncoding, signature: Signature, path: Path) -> EvalData:
    """Examples of a .txt / .jsonl file, encoded for the model."""
    if not path.is_file():
        raise file_error(path, "not found", "check the path")
    if path.suffix.lower() == ".jsonl":
        texts, pairs, labels = _read_jsonl(path, encoding.labels)
    else:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
        texts, pairs, labels = [line.strip() for line in lines if line.strip()], None, None
    if not texts:
        raise file_error(path, "holds no examples", "write one example per line")
    if labels is not None and encoding.task != "text-classification":
        raise UsageError(f"{path}: labels are per-example classes, which only text-classification models predict")
    if labels is not None and encoding.labels and labels.max() >= len(encoding.labels):
        raise file_error(path, f"label {labels.max()} is beyond the model's {len(encoding.labels)} classes", "fix it")
    origin = f"{path} ({len(texts)} examples, max_length {encoding.max_length})"
    return EvalData(encode(encoding, texts, pairs), labels, origin, signature)


def builtin_sentences(encoding: TextEncoding, signature: Signature, part: str) -> EvalData:
    """The built-in English sentences — plain statements, questions, commands, dialogue, chat, figures, legal,
    technical and news prose, headlines, single words and long multi-clause sentences, grouped by kind — every
    other one calibrates, the rest verify (held apart): each half holds every kind, so a candidate judged on them
    is judged on the kinds of text it will meet, not on one style that hides its loss on the others."""
    sentences = [s for s in SENTENCES.read_text(encoding="utf-8").splitlines() if s.strip()]
    chosen = sentences[0::2] if part == "calibration" else sentences[1::2]
    origin = f"built-in English sentences ({part}: {len(chosen)}, max_length {encoding.max_length})"
    return EvalData(encode(encoding, chosen), None, origin, signature)
