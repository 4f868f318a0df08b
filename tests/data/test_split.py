"""The numpy stratified split: disjoint, complete, in proportion per class, seeded."""

import numpy as np

from deployopt.data.split import stratified_split


def test_split_is_disjoint_complete_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    parts = stratified_split(labels, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined) == list(range(len(labels)))  # every sample once
    for name, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        for label, count in zip(range(4), (50, 30, 15, 5), strict=True):
            assert abs((labels[parts[name]] == label).sum() - share * count) <= 1
    again = stratified_split(labels, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(stratified_split(labels, seed=4)["test"], parts["test"])


def test_unstratified_split_cuts_the_whole_set():
    parts = stratified_split(np.zeros(10, dtype=int) + np.arange(10) % 3, seed=0, stratify=False)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [6, 2, 2]
