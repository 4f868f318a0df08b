"""Stand-ins that tests install in the processes deployopt starts (see ``child_site/sitecustomize.py`` and the
``child_patches`` fixture): a runtime that dies of a real SIGSEGV, NNCF refusing a graph, a damaged IR."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

ORIGINALS: dict[str, object] = {}  # target → the function it replaced, for stand-ins that pass through


def _segfault(where: str) -> None:
    print(f"fake runtime: {where}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def make_ir_crashing_on_int8(**job):
    """``deployopt.stages.openvino.make_ir`` whose OpenVINO dies converting the int8 Q/DQ graph, as 2026.4 did on
    a real model; every other IR is made as usual."""
    if job["variant"] == "openvino-int8":
        _segfault(f"segmentation fault converting {Path(job['source_path']).name}")
    return ORIGINALS["deployopt.stages.openvino.make_ir"](**job)


def runner_crashing_on_fp16(spec):
    """``deployopt.runners.create_runner`` whose runtime dies loading the fp16 artifact (in verification or a
    bench worker)."""
    if Path(spec.path).name == "model-fp16.onnx":
        _segfault("segmentation fault loading model-fp16.onnx")
    return ORIGINALS["deployopt.runners.create_runner"](spec)


def nncf_refusing(*args, **kwargs):
    raise RuntimeError("unsupported pattern\ndetails")


def damaged_ir(onnx_path, *args):
    """``onnx_path``'s fp32 IR with one convolution's weights tripled: a candidate whose numbers are wrong."""
    import onnx
    from onnx import numpy_helper

    from deployopt.stages.openvino.ir import convert_onnx

    model = onnx.load(str(onnx_path))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 3, weight.name))
    damaged = Path(tempfile.mkdtemp(prefix="deployopt-test-damaged-")) / "damaged.onnx"
    onnx.save(model, str(damaged))
    return convert_onnx(damaged)


def bench_worker_crashing_on_fp16(spec):
    """As :func:`runner_crashing_on_fp16`, in bench workers only: the artifact verifies, then dies when timed."""
    main = sys.modules["__main__"]
    if getattr(main.__spec__, "name", "") == "deployopt.measure.bench_worker":
        return runner_crashing_on_fp16(spec)
    return ORIGINALS["deployopt.runners.create_runner"](spec)


# work for deployopt.isolation.run_isolated, run in its child process by the isolation tests


def reports_and_returns(progress, value):
    progress("halfway")
    print("a library's chatter on stdout")
    return value


def refuses(path):
    from deployopt.errors import InputFileError

    raise InputFileError(f"{path}: not a model; pass an .onnx file")


def crashes_leaving_scratch(folder):
    (Path(folder) / ".ir-scratch").mkdir()
    (Path(folder) / ".ir-scratch" / "half.xml").write_text("<net")
    _segfault("segmentation fault in the middle of writing")


def segfaulting(*args, **kwargs):
    """Any function of deployopt's own process, dying as a native library can."""
    _segfault("segmentation fault in the build's own process")
