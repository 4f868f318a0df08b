"""A small transformer sequence classifier and a synthetic token task with a known answer.

The model has the structure that matters to deployment tools (embedding, multi-head attention,
LayerNorm, MLP): transformer-shaped graphs are where int8 and fp16 conversion most often go wrong.
"""

from __future__ import annotations

import numpy as np

from deployopt.models import DatasetEntry, ModelEntry

SIGNATURE = ("ids:batch,seq=16:int64",)
VOCAB = 100


def TinyTextTransformer(
    vocab: int = VOCAB,
    dim: int = 32,
    heads: int = 2,
    layers: int = 2,
    classes: int = 2,
    max_len: int = 64,
):
    """Pre-norm transformer encoder over token ids, mean-pooled into a linear classifier."""
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(dim, classes)

        def forward(self, ids):
            x = self.embed(ids) + self.pos[:, : ids.shape[1]]
            return self.head(self.encoder(x).mean(1))

    return Classifier()


def load_token_majority(split: str = "test", seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sequences of 16 token ids; label 1 when most tokens are below VOCAB/2. Fixed per split and seed."""
    sizes = {"train": 2000, "val": 500, "test": 500}
    if split not in sizes:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(sizes)}")
    rng = np.random.default_rng([seed, list(sizes).index(split)])
    ids = rng.integers(0, VOCAB, size=(sizes[split], 16), dtype=np.int64)
    labels = ((ids < VOCAB // 2).sum(1) > 8).astype(np.int64)
    return {"ids": ids}, labels


MODELS = [
    ModelEntry(
        name="tiny-text-transformer",
        factory=TinyTextTransformer,
        signature=SIGNATURE,
        dataset="token-majority",
        description="2-layer transformer encoder classifier over 16 token ids",
        train_epochs=30,
    )
]
DATASETS = [
    DatasetEntry(
        name="token-majority",
        load=load_token_majority,
        description="synthetic: 16 token ids, label = whether most are below 50 (exact answer known)",
    )
]
