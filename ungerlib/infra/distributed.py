"""Several processes, one training: the plumbing behind DistributedDataParallel (DDP) runs.

    torchrun --standalone --nproc_per_node 4 -m ungerlib pipeline --profile cpu --dataset Beauty

torchrun starts N copies of one command and tells each its place in environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`current` reads them and joins
the process group the first time it is asked: nccl on CUDA, each process on GPU ``LOCAL_RANK``; gloo
on CPU. Started without torchrun, a process is rank 0 of a world of one and nothing here does anything,
so every entry point runs unchanged in one process.

What runs where under torchrun:

* **Training** (Stage I, Stage II: :func:`ungerlib.model.train.fit` with ``ddp=True``). Every rank draws
  the same global batches and negatives (one seed) and computes its :func:`part` of each batch; torch's
  ``DistributedDataParallel`` all-reduces the gradients. Each loss term is weighted by the rank's share
  of the global batch (:class:`Part`), so the gradient is the single-process gradient of the same global
  batch: the global batch is ``batch_size``, whatever the number of ranks.
* **Validation** and the early-stopping decision run on rank 0 and are broadcast; every rank keeps the
  same best state. **Checkpoints** are written by rank 0 once per epoch; every rank resumes from them.
* **Artefacts** (:func:`ungerlib.infra.store.cached`): rank 0 builds and writes; the other ranks wait
  for it, then load. Kinds trained with DDP (:attr:`ungerlib.infra.artefacts.Kind.ddp`) are built by
  every rank together, and written by rank 0 only. The store must be one folder that every rank sees
  (on several machines: a shared file system, ``UNGER_ARTEFACTS``).

A failure on one rank ends the job: torchrun stops the other processes.
"""
from __future__ import annotations

import atexit
import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ungerlib.infra.config import ConfigError

if TYPE_CHECKING:
    import torch

# How long a rank waits at a collective (a barrier while rank 0 builds an artefact alone, say the
# evaluation's beam search over every user) before torch gives up on the job.
TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Group:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its machine (its GPU)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Group()
_GROUP: Group | None = None
_ALONE = 0  # depth of alone() blocks


def launched() -> bool:
    """Was this process started by torchrun (or anything that sets ``WORLD_SIZE``) with more than one process?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend(local_rank: int) -> str:
    """``nccl`` with GPU ``local_rank`` made current on a CUDA machine, else ``gloo``; a machine with fewer
    GPUs than torchrun processes is a :class:`ConfigError`."""
    import torch

    if not torch.cuda.is_available():
        return "gloo"
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"torchrun started process {local_rank} on this machine but it has "
                          f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node {torch.cuda.device_count()}")
    torch.cuda.set_device(local_rank)
    return "nccl"


def init() -> Group:
    """Join torchrun's process group (once; later calls return it). Without torchrun: :data:`SINGLE`."""
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    if not launched():
        _GROUP = SINGLE
        return _GROUP
    import torch
    import torch.distributed as dist

    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    name = backend(local)
    dist.init_process_group(name, timeout=TIMEOUT,
                            device_id=torch.device("cuda", local) if name == "nccl" else None)
    _GROUP = Group(rank, world, local)
    atexit.register(_close)
    return _GROUP


def _close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> Group:
    """The group in effect: torchrun's (joined on first use), or :data:`SINGLE` without torchrun and
    inside :func:`alone`."""
    if _ALONE:
        return SINGLE
    return _GROUP if _GROUP is not None else init()


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return current().is_main()


@contextmanager
def alone() -> Iterator[None]:
    """Inside, this process acts as a world of one: rank 0 building an artefact while the others wait
    (:func:`ungerlib.infra.store.cached`), so nothing nested in that build waits for the others."""
    global _ALONE
    _ALONE += 1
    try:
        yield
    finally:
        _ALONE -= 1


def barrier() -> None:
    if current().world > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` (any picklable value), on every rank."""
    if current().world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(x: "torch.Tensor") -> "torch.Tensor":
    """The sum of ``x`` over the ranks (a new tensor; on the device nccl needs: the model's)."""
    if current().world == 1:
        return x
    import torch.distributed as dist

    x = x.clone()
    dist.all_reduce(x)
    return x


# --------------------------------------------------------------------------- sharding a global batch

@dataclass(frozen=True)
class Part:
    """This rank's part of one global batch (:func:`part`).

    ``rows`` [b]: the examples this rank computes. A loss term that is a mean over ``n`` units of the part
    (its examples, its code tokens) out of ``of`` units in the global batch is multiplied by
    ``share(n, of)``; a term that every rank computes over the whole global batch (Stage I's in-batch
    alignment) by ``replicated``. Summed over the ranks, the weighted terms are the single-process terms
    of the global batch, whatever the sizes of the parts; in one process both weights are 1.
    """

    rows: np.ndarray
    scale: float = 1.0
    replicated: float = 1.0

    def share(self, n: int | float, of: int | float) -> float:
        return self.scale * n / of


def part(idx: np.ndarray) -> Part:
    """This rank's part of global batch ``idx`` [B]: a contiguous ``B / world`` of it (sizes differ by at
    most one). A batch with fewer examples than ranks (at most the last of an epoch) is computed whole by
    every rank, since every rank must run the same forward and backward, and counted on rank 0 only."""
    g = current()
    if g.world == 1:
        return Part(idx)
    if len(idx) >= g.world:
        return Part(np.array_split(idx, g.world)[g.rank], 1.0, 1.0 / g.world)
    counted = float(g.rank == 0)
    return Part(idx, counted, counted)
