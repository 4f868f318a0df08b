"""A user's own data: .npz arrays and image folders, checked against the model's input before training."""

from __future__ import annotations

import numpy as np
import pytest

from deployopt.data.user_data import is_dataset_path, load_user_dataset
from deployopt.errors import InputFileError
from deployopt.sources.signature import Signature

GRAY_8 = Signature.parse(("input:batch,1,8,8:float32",))
RGB_4 = Signature.parse(("input:batch,3,4,4:float32",))


def _png(path, value: int) -> None:
    """A 6×5 grayscale image of one value (the loader converts and resizes it)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (6, 5), value).save(path)


def test_presplit_image_folder_keeps_its_splits_and_converts_to_the_model_input(tmp_path):
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for label, value in (("cat", 0), ("dog", 255)):
            for index in range(count):
                _png(tmp_path / split / label / f"{index}.png", value)
    dataset = load_user_dataset(str(tmp_path), RGB_4)
    inputs, labels = dataset.splits["train"]
    assert inputs.shape == (6, 3, 4, 4) and inputs.dtype == np.float32 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert inputs[0].max() == 0.0 and inputs[-1].min() == pytest.approx(1.0)
    assert len(dataset.splits["val"][1]) == 4 and len(dataset.splits["test"][1]) == 2
    assert dataset.preprocessing["classes"] == ["cat", "dog"] and dataset.preprocessing["mode"] == "RGB"


def test_flat_image_folder_is_split_60_20_20(tmp_path):
    for label, value in (("a", 10), ("b", 200)):
        for index in range(10):
            _png(tmp_path / label / f"{index}.png", value)
    splits = load_user_dataset(str(tmp_path), GRAY_8).splits
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert splits["test"][0].shape[1:] == (1, 8, 8)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: _png(root / "only" / "1.png", 3), r"has 1 class folder\(s\)"),
        (lambda root: [(root / c).mkdir(parents=True) for c in ("x", "y")], "has no images"),
        (
            lambda root: [(root / c).mkdir(parents=True) or (root / c / "1.png").write_text("no") for c in "xy"],
            "is not a readable image",
        ),
        (lambda root: [_png(root / split / "x" / "1.png", 9) for split in ("train", "val")], "no test/"),
    ],
)
def test_bad_image_folders_name_the_problem(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(InputFileError, match=message):
        load_user_dataset(str(tmp_path), GRAY_8)


def test_npz_checks_labels_and_dtype(tmp_path):
    bad_labels = tmp_path / "labels.npz"
    np.savez(bad_labels, inputs=np.zeros((10, 1, 8, 8), np.float32), labels=np.zeros(9, np.int64))
    with pytest.raises(InputFileError, match="labels must be 10 non-negative integers"):
        load_user_dataset(str(bad_labels), GRAY_8)
    ints = tmp_path / "ints.npz"
    np.savez(ints, inputs=np.zeros((10, 1, 8, 8), np.int64), labels=np.arange(10) % 2)
    with pytest.raises(InputFileError, match="inputs are int64 but the model takes float32"):
        load_user_dataset(str(ints), GRAY_8)
    missing = tmp_path / "x.npz"
    np.savez(missing, x=np.zeros(3))
    with pytest.raises(InputFileError, match="needs arrays 'inputs'"):
        load_user_dataset(str(missing), GRAY_8)


def test_dataset_names_and_paths_are_told_apart(tmp_path):
    assert not is_dataset_path("digits") and is_dataset_path("data.npz") and is_dataset_path("some/folder")
    assert is_dataset_path(str(tmp_path))
