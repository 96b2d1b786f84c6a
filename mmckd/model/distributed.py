"""Data-parallel training across processes (torch.distributed): who this process is, and the collectives
training needs.

`fit` joins a process group when launched by torchrun (``WORLD_SIZE`` > 1 in the environment):

    torchrun --nproc-per-node 2 -m mmckd fit features.h5 -o runs/x     # or: mmckd fit ... --nproc 2

Every rank loads the whole feature file and draws the same shuffled order (same seed); each global
batch of ``batch_size`` clips is split into contiguous per-rank shards (sizes differ by at most one),
so a run of N processes takes the same optimiser steps on the same global batches as one process.
Gradients are averaged by DistributedDataParallel. Regression losses are scaled by the global count
of clips each network sees, and the MVSC loss is computed on the views of the whole global batch,
gathered with gradient (``torch.distributed.nn.functional.all_gather`` on a process group of its own,
so its backward pass never interleaves with DDP's gradient reduction): the gradient equals the
single-process one up to float rounding. Valid MAE is computed on per-rank shards of the valid
clips and gathered, so every rank takes the same model-selection decision. Only rank 0 writes the
run folder (checkpoints, bundles, metrics, report). Backend: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

FAULT_ENV = "MMCKD_TEST_FAIL_AT"  # "RANK:EPOCH": that rank raises at the start of that epoch (tests only)
TIMEOUT_ENV = "MMCKD_DIST_TIMEOUT"  # seconds a collective may wait for the other ranks (default 1800)


class DistributedError(RuntimeError):
    """The process group cannot be set up as asked (bad environment, device, or launcher use)."""


def launched_world_size() -> int:
    """WORLD_SIZE set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def launched_rank() -> int:
    """RANK set by torchrun (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0") or 0)


@dataclass
class DistContext:
    """This process's place in the group: rank, world size, local rank, its device, the backend, and
    a second group of the same ranks for the MVSC gather (kept apart from DDP's reductions)."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    gather_group: object
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (the first n % world ranks get one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's obj on every rank (small JSON-like values: decisions, metrics)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.tolist()

    @property
    def comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def gather_rows(self, local: torch.Tensor, with_grad: bool = False) -> torch.Tensor:
        """Concatenation over ranks (in rank order) of each rank's local tensor, whose first dimension
        may differ between ranks. with_grad: the result carries gradient back to every rank's part
        (on the gather group)."""
        group = self.gather_group if with_grad else None
        sizes = torch.zeros(self.world, dtype=torch.long, device=self.comm_device)
        sizes[self.rank] = local.shape[0]
        dist.all_reduce(sizes, group=group)
        longest = int(sizes.max())
        pad = longest - local.shape[0]
        src = local.to(self.comm_device)
        if pad:
            src = torch.cat([src, src.new_zeros((pad, *src.shape[1:]))])
        if with_grad:
            from torch.distributed.nn.functional import all_gather

            parts = all_gather(src, group=group)
        else:
            parts = [torch.empty_like(src) for _ in range(self.world)]
            dist.all_gather(parts, src.contiguous())
        return torch.cat([p[: int(n)] for p, n in zip(parts, sizes)]).to(local.device)

    def close(self, synchronize: bool = False) -> None:
        """Tear the process groups down. synchronize (after a run that finished on this rank): wait at a barrier
        first, so that no rank destroys its gloo connections while the other still uses them (gloo then now
        and then aborts the process: "terminate called without an active exception"). Not after a failure,
        where the other rank may never come."""
        if self.owns_group and dist.is_initialized():
            if synchronize:
                with contextlib.suppress(Exception):
                    dist.barrier()
            dist.destroy_process_group()


def init_from_env(device: str = "auto") -> DistContext | None:
    """Join the process group described by torchrun's environment; None when WORLD_SIZE is 1.

    device "auto": CUDA when available (cuda:LOCAL_RANK, NCCL), else CPU (gloo); "cpu" forces gloo.
    """
    world = launched_world_size()
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with torchrun")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda asked, but no CUDA device is available")
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); start fewer processes"
            )
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
        backend = "nccl"
    else:
        torch_device, backend = torch.device("cpu"), "gloo"
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, timeout=timeout)
    elif dist.get_world_size() != world:
        raise DistributedError(f"a process group of {dist.get_world_size()} ranks exists; WORLD_SIZE is {world}")
    gather_group = dist.new_group(backend=backend, timeout=timeout)
    ctx = DistContext(rank, world, local_rank, torch_device, backend, gather_group, owns)
    log.info("rank %d of %d on %s (%s)", rank, world, torch_device, backend)
    return ctx


def maybe_inject_fault(rank: int, epoch: int) -> None:
    """Test hook: raise when MMCKD_TEST_FAIL_AT is "RANK:EPOCH" for this rank and epoch (1-based)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    want_rank, want_epoch = (int(x) for x in spec.split(":"))
    if (want_rank, want_epoch) == (rank, epoch):
        raise RuntimeError(f"rank {rank}: failure injected at epoch {epoch} ({FAULT_ENV}={spec})")


def sharded_valid_mae(predictor, data, ctx: DistContext) -> dict[str, float]:
    """`evaluation.valid_mae` with each rank predicting its shard of every condition's valid clips; the
    predictions are gathered so every rank gets the same numbers."""
    from mmckd.model.evaluation import clips_with
    from mmckd.model.inference import subset_columns
    from mmckd.model.metrics import regression_metrics

    out = {}
    for s in predictor.answers:
        idx = clips_with(data, "valid", s)
        if not len(idx):
            continue
        mine = idx[ctx.shard(len(idx))]
        keep = np.tile(subset_columns(s), (len(mine), 1))
        preds, _ = predictor.predict_rows(data, mine, keep, network=predictor.network_for(s))
        gathered = ctx.gather_rows(torch.from_numpy(np.ascontiguousarray(preds, np.float32)))
        out[s] = regression_metrics(gathered.numpy(), data.labels[idx])["MAE"]
    return out
