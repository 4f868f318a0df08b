"""PyTorch eager runner: the reference every artifact is verified against, and the GPU baselines.

On ``device="cuda"`` the module runs on the GPU (optionally in half precision and/or under
``torch.compile``); inputs are copied in and outputs back each call, and the model's own compute time is
measured with CUDA events into :attr:`last_compute_ms`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployopt.errors import UsageError
from deployopt.runners.base import Runner
from deployopt.sources.detect import SourceOptions, inspect_source
from deployopt.sources.loading import load_torch_model, output_names


class TorchRunner(Runner):
    def activate(self) -> None:
        import torch

        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        if self.spec.precision not in ("fp32", "fp16"):
            raise UsageError(f"torch runner precision must be fp32 or fp16, not '{self.spec.precision}'")
        self._cuda = self.spec.device.startswith("cuda")
        if self._cuda:
            from deployopt.platform.gpu import require_cuda_gpu

            require_cuda_gpu(self.spec.device)
        elif self.spec.precision == "fp16":
            raise UsageError("fp16 PyTorch baselines run on a GPU only; add --device cuda")
        options = SourceOptions(
            **{**self.spec.source_options, "inputs": tuple(self.spec.source_options.get("inputs", ()))}
        )
        self._source = inspect_source(Path(self.spec.path), options)
        model = load_torch_model(self._source).to(self.spec.device)
        if self.spec.precision == "fp16":
            model = model.half()
        self._model = torch.compile(model) if self.spec.compile else model
        self._module = model
        self._names = self._source.signature.names if self._source.signature else None
        self._stream = torch.cuda.Stream(device=self.spec.device) if self._cuda else None

    def _to_device(self, array: np.ndarray):
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.spec.precision == "fp16" and tensor.is_floating_point():
            tensor = tensor.half()
        return tensor.to(self.spec.device, non_blocking=self._cuda)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        names = self._names or list(feeds)
        if not self._cuda:
            with torch.inference_mode():
                leaves = torch.utils._pytree.tree_leaves(self._model(*[self._to_device(feeds[n]) for n in names]))
        else:
            from deployopt.platform.gpu import CudaTimer

            with torch.inference_mode(), torch.cuda.stream(self._stream):
                args = [self._to_device(feeds[n]) for n in names]
                with CudaTimer(self._stream) as timer:
                    result = self._model(*args)
                leaves = [leaf.cpu() for leaf in torch.utils._pytree.tree_leaves(result)]
            self.last_compute_ms = timer.elapsed_ms()
        arrays = [leaf.float().numpy() if leaf.dtype == torch.float16 else leaf.numpy() for leaf in leaves]
        return dict(zip(output_names(self._module, len(arrays)), arrays, strict=True))

    def deactivate(self) -> None:
        self._model = self._module = None
