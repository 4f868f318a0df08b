"""ONNX's own node tests through ``deployopt build``: one case per op type (the full sweep is
benchmarks/conformance.py, recorded in docs/benchmarks.md)."""

import importlib.util
import sys
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "conformance", Path(__file__).resolve().parents[2] / "benchmarks" / "conformance.py"
)
conformance = importlib.util.module_from_spec(_SPEC)
sys.modules["conformance"] = conformance  # its dataclasses look their module up by name
_SPEC.loader.exec_module(conformance)

# The only clean refusal: a graph without inputs computes a constant; there is nothing to run or verify.
REFUSED = {"test_constant": "the graph has no inputs"}


@pytest.fixture(scope="module")
def sample():
    cases = [c for c in conformance.node_cases() if conformance.ort_reproduces(c)]
    return conformance.sample_per_op(cases, 1)


def test_sample_covers_every_op_type(sample):
    assert len(sample) >= 90  # ~97 op types with a float32 single-node case ORT reproduces


@pytest.mark.slow
def test_one_case_per_op_type_builds_and_verifies(sample, tmp_path):
    # ONNX Runtime only: this is ONNX's conformance through the build; the full sweep covers OpenVINO too
    outcomes = [conformance.run_case(case, tmp_path, runtime="onnxruntime") for case in sample]
    unexpected = []
    for o in outcomes:
        if o.case in REFUSED:
            if not (o.result == "refused" and REFUSED[o.case] in o.detail and "exit 3" in o.detail):
                unexpected.append(o)
        elif o.result != "pass":
            unexpected.append(o)
    assert not unexpected, "\n".join(f"{o.case} ({o.op}): {o.result} {o.detail}" for o in unexpected)
    assert any(o.detail.startswith("needed --data") for o in outcomes)  # Resize's scales: generated ones are invalid


def test_model_writing_into_its_inputs_does_not_change_the_data(tmp_path):
    """ORT's training-mode BatchNormalization writes running mean/var into its ``mean``/``var`` input buffers;
    fed the stored arrays themselves, the next model verified saw other inputs and the fp32 artifact failed."""
    (case,) = [c for c in conformance.node_cases() if c.name == "test_batchnorm_example_training_mode"]
    outcome = conformance.run_case(case, tmp_path)
    assert outcome.result == "pass", outcome.detail
