"""PyTorch eager runner: the reference every artifact is verified against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployopt.loading import load_torch_model
from deployopt.runners.base import Runner
from deployopt.sources import SourceOptions, inspect_source


class TorchRunner(Runner):
    def activate(self) -> None:
        import torch

        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        options = SourceOptions(
            **{**self.spec.source_options, "inputs": tuple(self.spec.source_options.get("inputs", ()))}
        )
        self._source = inspect_source(Path(self.spec.path), options)
        self._model = load_torch_model(self._source)
        self._names = self._source.signature.names if self._source.signature else None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        names = self._names or list(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in names]
        with torch.inference_mode():
            result = self._model(*args)
        leaves = torch.utils._pytree.tree_leaves(result)
        if len(leaves) == 1:
            return {"output": leaves[0].numpy()}
        return {f"output_{i}": leaf.numpy() for i, leaf in enumerate(leaves)}

    def deactivate(self) -> None:
        self._model = None
