"""Augmentation specs: parsing with clear errors, and per-sample random transforms that keep the shape."""

from __future__ import annotations

import numpy as np
import pytest

from deployopt.errors import UsageError
from deployopt.training.augment import build_augment, parse_spec
from tests.conftest import needs_torchvision


def test_spec_parses_names_arguments_and_defaults():
    assert parse_spec("crop:2, flip,rotate") == [("crop", 2.0), ("flip", None), ("rotate", 10)]
    assert build_augment("none", (1, 8, 8)) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("spin:3", "unknown augmentation 'spin'"),
        ("flip:1", "'flip' takes no argument"),
        ("rotate:lots", "'rotate:lots' needs a number"),
    ],
)
def test_bad_spec_names_the_part(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_spec(spec)


def test_augment_needs_an_image_input():
    with pytest.raises(UsageError, match="works on images"):
        build_augment("flip", (16,))


@needs_torchvision
def test_each_sample_gets_its_own_transform_and_the_shape_is_kept():
    import torch

    from deployopt.models.digits import INPUT_NAME, load_digits_split

    torch.manual_seed(0)
    digit = torch.from_numpy(load_digits_split("train")[0][INPUT_NAME][:1])
    batch = digit.repeat(16, 1, 1, 1)  # sixteen copies of one image
    augmented = build_augment("crop:1,rotate:15,jitter:0.3", (1, 8, 8))(batch, np.random.default_rng(0))
    assert augmented.shape == batch.shape and augmented.dtype == batch.dtype
    distinct = {tuple(sample.flatten().tolist()) for sample in augmented}
    assert len(distinct) >= 12  # a batch-wide transform would give one
