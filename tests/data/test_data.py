import numpy as np
import pytest

from deployopt.data.eval_data import dataset_data, generate_batch, generate_data, load_data
from deployopt.errors import InputFileError
from deployopt.sources.signature import Signature


@pytest.fixture
def sig():
    return Signature.parse(["input:batch,1,8,8:float32"])


def test_generated_data_is_seeded_and_matches_signature(sig):
    a, b = generate_data(sig, 10, seed=3), generate_data(sig, 10, seed=3)
    assert a.inputs["input"].shape == (10, 1, 8, 8) and a.inputs["input"].dtype == np.float32
    np.testing.assert_array_equal(a.inputs["input"], b.inputs["input"])
    assert not np.array_equal(a.inputs["input"], generate_data(sig, 10, seed=4).inputs["input"])


def test_integer_inputs_are_generated_in_range():
    data = generate_data(Signature.parse(["ids:batch,seq=16:int64"]), 4)
    ids = data.inputs["ids"]
    assert ids.dtype == np.int64 and ids.shape == (4, 16) and ids.min() >= 0 and ids.max() < 100


def test_batches_cover_every_sample_once(sig):
    data = generate_data(sig, 70)
    sizes = [feed["input"].shape[0] for feed in data.batches(32)]
    assert sizes == [32, 32, 6]


def test_fixed_batch_model_is_verified_on_many_batches_fed_one_at_a_time():
    """A [2, 3] model beside a whole-fed [3] input: 10 samples are 5 calls of exactly the model's batch."""
    sig = Signature.parse(["x:2,3:float32", "scale:3:float32"])
    data = generate_data(sig, 11)
    assert data.inputs["x"].shape == (10, 3) and data.inputs["scale"].shape == (3,)
    feeds = list(data.batches(32))
    assert [f["x"].shape for f in feeds] == [(2, 3)] * 5 and all(f["scale"].shape == (3,) for f in feeds)
    assert generate_batch(sig, 32).inputs["x"].shape == (2, 3)


def test_feeds_are_copies_a_runtime_may_write_into(sig):
    data = generate_data(Signature.parse(["x:2,3:float32", "scale:3:float32"]), 2)
    feed = next(data.batches(2))
    feed["scale"][:] = 7.0  # what ORT's training-mode BatchNormalization does to its mean/var inputs
    assert not (data.inputs["scale"] == 7.0).any()


def test_npz_with_labels_loads(tmp_path, sig):
    path = tmp_path / "val.npz"
    np.savez(path, input=np.zeros((5, 1, 8, 8), np.float32), labels=np.arange(5))
    data = load_data(sig, path)
    assert data.num_samples == 5 and list(data.labels) == [0, 1, 2, 3, 4]


def test_single_npy_is_used_for_a_single_input(tmp_path, sig):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((3, 1, 8, 8), np.float32))
    assert load_data(sig, path).num_samples == 3


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 1, 8, 8), np.float64), "dtype float64 but the model expects float32"),
        (np.zeros((5, 3, 8, 8), np.float32), r"shape \[5, 3, 8, 8\] but the model expects"),
        (np.zeros((5, 8, 8), np.float32), "shape"),
    ],
)
def test_data_not_matching_signature_is_rejected_with_fix(tmp_path, sig, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, input=array)
    with pytest.raises(InputFileError, match=message) as info:
        load_data(sig, path)
    assert str(path) in str(info.value)


def test_missing_input_name_and_missing_file(tmp_path, sig):
    path = tmp_path / "other.npz"
    np.savez(path, pixels=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(InputFileError, match=r"no array for input\(s\) \['input'\]"):
        load_data(sig, path)
    with pytest.raises(InputFileError, match="data file not found"):
        load_data(sig, tmp_path / "nope.npz")


def test_label_count_must_match(tmp_path, sig):
    data, labels = tmp_path / "d.npz", tmp_path / "l.npy"
    np.savez(data, input=np.zeros((4, 1, 8, 8), np.float32))
    np.save(labels, np.arange(3))
    with pytest.raises(InputFileError, match="labels must be 4 integers"):
        load_data(sig, data, labels)


def test_registered_digits_dataset_is_real_and_split_is_fixed(sig):
    test = dataset_data(sig, "digits", "test")
    assert test.num_samples == 360 and set(np.unique(test.labels)) == set(range(10))
    assert test.inputs["input"].min() >= 0.0 and test.inputs["input"].max() <= 1.0
    np.testing.assert_array_equal(test.labels, dataset_data(sig, "digits", "test").labels)
