"""NNCF's int8 for OpenVINO: its default post-training quantization (what Optimum-Intel users get) and, when that
misses the budget, its ``quantize_with_accuracy_control`` with deployopt's judge as the validation function —
NNCF reverts the quantizers that cost the most until the judge's budget holds.

The validation metric is the judge's own :func:`~deployopt.measure.verify.budget_slack` on the
verification data against the original's outputs: 1 for a copy of the original, 0 exactly at a budget limit,
negative on a miss. NNCF validates the original too (compiled in f32, as the judge's reference is), so a
maximum absolute drop just under 1 asks NNCF for what the judge asks.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deployopt.errors import StageError, error_reason
from deployopt.measure.compare import budget_slack, compare_outputs
from deployopt.measure.verify import Judge
from deployopt.stages.openvino.ir import convert_onnx

NNCF_MAX_SAMPLES = 300  # NNCF's own default subset size
ACCURACY_CONTROL_DROP = 0.98  # of the slack's 1: passing NNCF's check leaves 2 % of the way to the budget's limit
RANKING_SUBSET = 32  # samples NNCF ranks its quantizers on (its default is the whole validation set)
# quantizers NNCF may revert to float, one per judged iteration: beyond this the model is mostly float, and the
# f32 or bf16 artifacts beside it are the faster choice
MAX_REVERTED = 32


def _import_nncf():
    # NNCF imports PyTorch when it is installed (2 s, and a "No CUDA runtime is found" warning on every CPU machine)
    # though its OpenVINO backend never uses it: where PyTorch is not loaded yet (a candidate's own process) it is
    # hidden while NNCF imports
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    hidden = "torch" not in sys.modules and "nncf" not in sys.modules
    if hidden:
        sys.modules["torch"] = None  # type: ignore[assignment]  # import torch raises ImportError
    try:
        import nncf
    finally:
        if hidden:
            del sys.modules["torch"]

    # its logger writes every step of the accuracy control to stdout, which is the command's result (--json)
    nncf.set_log_level(logging.ERROR)
    return nncf


def _refused(onnx_path: Path, exc: Exception) -> StageError:
    return StageError(f"{onnx_path}: NNCF cannot quantize this graph ({error_reason(exc)})")


def _options(nncf, samples: list, transformer: bool) -> dict[str, Any]:
    options: dict[str, Any] = {"subset_size": len(samples)}
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    return options


def _calibration_samples(calibration) -> list:
    return [batch for _, batch in zip(range(NNCF_MAX_SAMPLES), calibration.batches(1), strict=False)]


def nncf_quantize(onnx_path: Path, calibration, transformer: bool) -> Any:
    """NNCF's default post-training int8 on the fp32 IR, calibrated one sample at a time on ``calibration``.
    NNCF draws progress bars on stdout, which is the command's result (``--json``): they are swallowed; the
    step's own progress line says what runs."""
    nncf = _import_nncf()
    samples = _calibration_samples(calibration)
    model = convert_onnx(onnx_path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(model, nncf.Dataset(samples), **_options(nncf, samples, transformer))
    except Exception as exc:  # NNCF's own errors on a graph it cannot handle: the candidate is not made (a note)
        raise _refused(onnx_path, exc) from exc


def nncf_accuracy_control(onnx_path: Path, calibration, transformer: bool, judge: Judge) -> Any:
    """NNCF's int8 with accuracy control, validated by ``judge`` (see the module docstring), reverting at most
    :data:`MAX_REVERTED` quantizers."""
    nncf = _import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    samples = _calibration_samples(calibration)
    data = judge.data
    reference = judge.reference_outputs()
    # each validation item is one verification sample with its index, so any subset NNCF picks is compared with
    # the original's outputs of the very same samples
    items = [(index, data.take([index])) for index in range(data.num_samples)]

    def validate(compiled: Any, subset) -> tuple[float, None]:
        chosen = list(subset)
        indices = [index for index, _ in chosen]
        outputs = [compiled(feeds) for _, feeds in chosen]
        ports = list(compiled.outputs)
        candidate = [np.concatenate([np.asarray(out[port]) for out in outputs]) for port in ports]
        wanted = [np.take(array, indices, axis=0) for array in reference.arrays]
        labels = data.labels[indices] if data.labels is not None else None
        metrics, failures, ref_acc, cand_acc = compare_outputs(wanted, candidate, reference.names, labels, judge.budget)
        return budget_slack(metrics, failures, judge.budget, ref_acc, cand_acc), None

    restorer = AdvancedAccuracyRestorerParameters(
        max_num_iterations=MAX_REVERTED, ranking_subset_size=min(RANKING_SUBSET, data.num_samples)
    )
    model = convert_onnx(onnx_path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(samples),
                nncf.Dataset(items, lambda item: item[1]),
                validate,
                max_drop=ACCURACY_CONTROL_DROP,
                drop_type=nncf.DropType.ABSOLUTE,
                advanced_accuracy_restorer_parameters=restorer,
                **_options(nncf, samples, transformer),
            )
    except Exception as exc:
        raise _refused(onnx_path, exc) from exc
