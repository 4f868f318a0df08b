"""Which runner a verb's models get: the runtime options ``verify`` and ``bench`` share (``--runtime``, ``--provider``,
``--device``, ``--torch-precision``, ``--torch-compile``), declared once and turned into a :class:`RunnerSpec`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from deployopt.runners import RunnerSpec, spec_for_model

if TYPE_CHECKING:
    from deployopt.sources.detect import SourceOptions


class RuntimeOptions(BaseModel):
    """Where the models under test run: the ONNX Runtime provider for ONNX files, the device (and, for
    PyTorch files, precision and torch.compile) otherwise. TensorRT engines always run on a CUDA device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime", description="Runtime for ONNX models (an OpenVINO IR always runs on OpenVINO)."
    )
    provider: Literal["cpu", "cuda", "tensorrt"] = Field(
        "cpu", description="ONNX Runtime execution provider for ONNX models; fails if it is not the active one."
    )
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="Device for PyTorch models (engines always run on CUDA)."
    )
    torch_precision: Literal["fp32", "fp16"] = Field(
        "fp32", description="Run PyTorch models in half precision (GPU baselines; needs --device cuda)."
    )
    torch_compile: bool = Field(False, description="Wrap PyTorch models in torch.compile.")

    def spec(self, path: Path, options: SourceOptions, threads: int | None = None) -> RunnerSpec:
        return spec_for_model(
            str(path),
            source_options=options.to_json(),
            threads=threads,
            provider=self.provider,
            device=self.device,
            precision=self.torch_precision,
            compile=self.torch_compile,
            runtime=self.runtime,
        )
