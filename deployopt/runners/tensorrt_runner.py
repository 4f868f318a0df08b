"""TensorRT runner: deserialises an engine built by ``deployopt engine`` and runs it on a CUDA stream.

Before TensorRT sees the engine, its sidecar is checked against this machine's TensorRT version and GPU
(:func:`deployopt.platform.tensorrt.check_compatible`), so a mismatch is one clear line naming both sides.
Buffers are PyTorch CUDA tensors; each call sets the input shapes, enqueues the copies and
``execute_async_v3`` on a non-default stream, and copies the outputs back to numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployopt.errors import InputFileError, StageError
from deployopt.platform.gpu import CudaTimer, require_cuda_gpu
from deployopt.platform.tensorrt import check_compatible, import_tensorrt, read_sidecar
from deployopt.runners.base import Runner


class TensorRTRunner(Runner):
    def activate(self) -> None:
        trt = import_tensorrt()
        sidecar = read_sidecar(self.spec.path)
        check_compatible(sidecar, self.spec.path, trt.__version__, None)  # before touching CUDA
        device = self.spec.device if self.spec.device.startswith("cuda") else "cuda"
        check_compatible(sidecar, self.spec.path, trt.__version__, require_cuda_gpu(device))
        import torch

        self._torch = torch
        self._device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        if sidecar.version_compatible:
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(Path(self.spec.path).read_bytes())
        if self._engine is None:
            raise InputFileError(
                f"{self.spec.path}: TensorRT could not deserialize the engine (corrupt file?); rebuild it"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._stream = torch.cuda.Stream(device=self._device)

    def _torch_dtype(self, name: str):
        return self._torch.from_numpy(np.empty(0, dtype=self._dtypes[name])).dtype

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise InputFileError(f"{self.spec.path}: the engine needs input(s) {missing}; got {sorted(feeds)}")
        keep_alive = []
        with torch.cuda.stream(self._stream):
            for name in self._inputs:
                host = torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=self._dtypes[name]))
                tensor = host.pin_memory().to(self._device, non_blocking=True)
                keep_alive.append(tensor)
                if not self._context.set_input_shape(name, tuple(tensor.shape)):
                    raise InputFileError(
                        f"{self.spec.path}: input '{name}' shape {tuple(tensor.shape)} is outside the engine's "
                        "optimization profile; rebuild with --shapes or --max-batch"
                    )
                self._context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self._outputs:
                shape = tuple(self._context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._torch_dtype(name), device=self._device)
                self._context.set_tensor_address(name, outputs[name].data_ptr())
            with CudaTimer(self._stream) as timer:
                ok = self._context.execute_async_v3(self._stream.cuda_stream)
            if not ok:
                raise StageError(f"{self.spec.path}: TensorRT execute_async_v3 failed")
            host_outputs = {name: tensor.to("cpu", non_blocking=False) for name, tensor in outputs.items()}
        self._stream.synchronize()
        self.last_compute_ms = timer.elapsed_ms()
        return {name: tensor.numpy() for name, tensor in host_outputs.items()}

    def deactivate(self) -> None:
        self._context = self._engine = self._runtime = None
