"""Detection from content and loading of every supported model source, plus each bad-file case."""

import os
import shutil

import pytest

from deployopt.errors import InputFileError, UsageError
from deployopt.sources.detect import SourceKind, SourceOptions, detect_kind, inspect_source
from deployopt.sources.loading import load_torch_model, resolve_arch
from tests.conftest import needs_torchvision


def test_each_format_is_detected_from_content(
    digits_checkpoint, digits_state_dict, digits_torchscript, digits_pt2, digits_pickled, digits_onnx, tmp_path
):
    expected = {
        digits_checkpoint: SourceKind.CHECKPOINT,
        digits_state_dict: SourceKind.CHECKPOINT,
        digits_torchscript: SourceKind.TORCHSCRIPT,
        digits_pt2: SourceKind.TORCH_EXPORT,
        digits_onnx: SourceKind.ONNX,
    }
    for path, kind in expected.items():
        assert detect_kind(path) is kind, path
        renamed = tmp_path / f"renamed-{path.name}.bin"  # the extension does not decide
        shutil.copy(path, renamed)
        assert detect_kind(renamed) is kind, renamed
    assert inspect_source(digits_pickled, SourceOptions(trust_pickle=True)).kind is SourceKind.PICKLED_MODULE


def test_deployopt_checkpoint_carries_arch_signature_and_dataset(digits_checkpoint):
    source = inspect_source(digits_checkpoint)
    assert source.arch == "digits-cnn" and source.dataset == "digits"
    assert source.signature.to_text() == ["input:batch,1,8,8:float32"]


def test_signatures_of_pt2_and_onnx_are_read_from_the_file(digits_pt2, digits_onnx):
    for path in (digits_pt2, digits_onnx):
        spec = inspect_source(path).signature.inputs[0]
        assert spec.shape[1:] == (1, 8, 8) and spec.batch_axis == 0 and spec.dtype == "float32", path


def test_input_option_overrides_saved_signature(digits_checkpoint):
    source = inspect_source(digits_checkpoint, SourceOptions(inputs=("x:4,1,8,8",)))
    assert source.signature.to_text() == ["x:4,1,8,8:float32"]


def test_state_dict_needs_arch_and_registered_arch_supplies_signature(digits_state_dict):
    source = inspect_source(digits_state_dict)
    assert source.signature is None
    with pytest.raises(InputFileError, match="pass --arch"):
        load_torch_model(source)
    source = inspect_source(digits_state_dict, SourceOptions(arch="digits-cnn"))
    assert source.signature is not None and source.dataset == "digits"
    assert load_torch_model(source).training is False


def test_weights_for_another_arch_are_rejected(digits_state_dict):
    source = inspect_source(digits_state_dict, SourceOptions(arch="deployopt.models.digits:DigitsCNN"))
    load_torch_model(source)  # the factory path works with matching weights
    wrong = inspect_source(digits_state_dict, SourceOptions(arch="torch.nn:Identity"))
    with pytest.raises(InputFileError, match=r"do not fit --arch torch\.nn:Identity"):
        load_torch_model(wrong)


def test_pickled_module_requires_explicit_trust(digits_pickled):
    with pytest.raises(InputFileError, match="--trust-pickle"):
        inspect_source(digits_pickled)
    module = load_torch_model(inspect_source(digits_pickled, SourceOptions(trust_pickle=True)))
    assert module.training is False


def test_unknown_arch_lists_registered_names():
    with pytest.raises(UsageError, match="digits-cnn"):
        resolve_arch("no-such-model")
    with pytest.raises(UsageError, match="cannot import"):
        resolve_arch("no_such_package.mod:build")


@needs_torchvision
def test_a_bare_torchvision_name_resolves_as_users_type_it():
    import torch

    model = resolve_arch("efficientnet_b0")
    assert type(model).__name__ == "EfficientNet"
    assert isinstance(resolve_arch("torchvision:resnet18"), torch.nn.Module)
    with pytest.raises(UsageError, match="did you mean resnet18"):
        resolve_arch("ResNet18")  # names are case-sensitive: the error offers the right spelling
    with pytest.raises(UsageError, match=r"did you mean .*efficientnet_b0"):
        resolve_arch("efficientnet_b00")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pt", "model file not found"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "empty.pt", b""), "is empty"),
        (lambda d: _write(d / "random.pt", os.urandom(4096)), "not a readable model"),
        (lambda d: _write(d / "random.onnx", os.urandom(4096)), "not a valid ONNX model"),
        (lambda d: _write(d / "notes.txt", b"hello, this is not a model\n"), "unrecognised model format"),
        (lambda d: _write(d / "archive.pt", _zip_bytes()), "zip archive but not a PyTorch model"),
    ],
)
def test_bad_files_get_one_line_naming_file_and_fix(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputFileError, match=message) as info:
        inspect_source(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text and ";" in text  # file; problem; fix


def test_corrupt_pickles_are_bad_files_whatever_the_unpickler_trips_on(tmp_path):
    """Bytes after a pickle header make torch.load fail in many ways (UnpicklingError, UnicodeDecodeError, and
    KeyError / IndexError from the unpickler's own stack, which once surfaced as exit 70): each is the file's fault."""
    import numpy as np

    rng = np.random.default_rng(7)
    for index in range(150):
        path = _write(tmp_path / f"corrupt{index}.pt", b"\x80\x02" + rng.bytes(2048))
        with pytest.raises(InputFileError, match="not a readable model"):
            inspect_source(path)


def test_truncated_checkpoint_is_reported(tmp_path, digits_checkpoint):
    data = digits_checkpoint.read_bytes()
    path = _write(tmp_path / "truncated.pt", data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        inspect_source(path)


def test_truncated_onnx_is_reported(tmp_path, digits_onnx):
    data = digits_onnx.read_bytes()
    path = _write(tmp_path / "truncated.onnx", data[: len(data) // 3])
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        inspect_source(path)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    return buffer.getvalue()
