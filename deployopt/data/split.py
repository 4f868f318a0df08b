"""Seeded, stratified train / val / test splits with numpy alone (no scikit-learn in the core install)."""

from __future__ import annotations

import numpy as np

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def stratified_split(labels: np.ndarray, seed: int, stratify: bool = True) -> dict[str, np.ndarray]:
    """Sample indices per split. Each class is shuffled with ``seed`` and cut by the fractions (largest
    remainders get the leftover samples), so every split holds each class in proportion; with
    ``stratify=False`` the whole set is cut as one class."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(len(labels))]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FRACTIONS}
    for members in groups:
        members = rng.permutation(members)
        exact = np.array(list(FRACTIONS.values())) * len(members)
        counts = np.floor(exact).astype(int)
        for index in np.argsort(-(exact - counts), kind="stable")[: len(members) - counts.sum()]:
            counts[index] += 1
        for name, chunk in zip(FRACTIONS, np.split(members, np.cumsum(counts)[:-1]), strict=True):
            parts[name].append(chunk)
    return {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}
