"""What the judge reads from class scores: their probabilities, and the views of the
decision beyond raw top-1 agreement (decisive samples, top-5 containment, KL) — see ``measure.verify``."""

from __future__ import annotations

import numpy as np


def class_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows of class scores as probabilities: as they are when they already are (non-negative, summing to 1 —
    a model ending in Softmax), else their softmax."""
    x = scores.astype(np.float64)
    if (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def decision_metrics(ref: np.ndarray, cand: np.ndarray, margin: float) -> dict[str, float | int | None]:
    """Decisive-sample agreement (with the count of decisive samples), top-5 containment and mean KL of one
    classifier output, by the fields of ``OutputMetrics`` they fill; decisive agreement is None when no sample is
    decisive."""
    p, q = class_probabilities(ref), class_probabilities(cand)
    ref_top, cand_top = ref.argmax(1), cand.argmax(1)
    two_best = np.sort(p, axis=1)[:, -2:]
    decisive = (two_best[:, 1] - two_best[:, 0]) >= margin
    k = min(5, cand.shape[1])
    top_k = np.argpartition(-cand, k - 1, axis=1)[:, :k]
    tiny = 1e-12  # a probability that underflowed to 0 in the candidate: bounded, not infinite, divergence
    kl = (p * (np.log(np.maximum(p, tiny)) - np.log(np.maximum(q, tiny)))).sum(axis=1)
    return {
        "decisive_samples": int(decisive.sum()),
        "decisive_agreement": float((ref_top == cand_top)[decisive].mean()) if decisive.any() else None,
        "top5_containment": float((top_k == ref_top[:, None]).any(axis=1).mean()),
        "mean_kl": float(np.maximum(kl, 0.0).mean()),
    }
