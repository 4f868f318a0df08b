"""Data-parallel training across processes and machines with torch.distributed, launched by ``torchrun``.

``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` and the rendezvous address; ``deployopt train``
started under it joins the group (gloo on CPU, NCCL on CUDA) and wraps the model in
DistributedDataParallel. Every rank draws the same shuffled order from the same seed and trains on its
own slice of each global batch, so the averaged gradient is the single-process gradient of that batch:
``--batch-size`` stays the global batch size and the recipe means the same at any world size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from deployopt.errors import UsageError


@dataclass(frozen=True)
class ProcessGroup:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: Any) -> Any:
        """This rank's contiguous slice of one global batch (sizes differ by at most one)."""
        import torch

        return torch.tensor_split(indices, self.world_size)[self.rank]

    def broadcast_buffers(self, module: Any) -> None:
        """Give every rank rank 0's BatchNorm statistics, so all ranks evaluate (and decide) identically."""
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process: the one that prints results."""
    return int(os.environ.get("RANK", "0")) == 0


def join_from_environment(device: str) -> ProcessGroup | None:
    """Join the process group torchrun describes in the environment; ``None`` for a single process."""
    if launched_world_size() <= 1:
        return None
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UsageError(
                f"could not join the torchrun process group ({exc}); launch with "
                "torchrun --nproc-per-node N -m deployopt train ... "
                "(docs/commands/train.md: 'Training on several processes or machines')"
            ) from exc
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)


def leave(group: ProcessGroup | None) -> None:
    if group is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
