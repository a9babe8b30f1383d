"""Training on several processes with PyTorch's own engine: ``torchrun`` and DDP.

    torchrun --nproc-per-node 2 -m detlearn train detect --steps 200 --batch-size 32

``torchrun`` starts the same program once per process and tells each its place
in environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`process_group` joins the processes for
the length of a ``with`` block and leaves the group however the block ends;
outside torchrun it does nothing, so the same program also runs alone.
Inside the block :func:`~detlearn.train.fit` trains one model together:

* every process draws the same global batch from the same seed and takes its
  shard of it (:meth:`World.shard`), so a seed gives the same global batches for
  any number of processes;
* :func:`replicated` wraps the model in ``DistributedDataParallel``, which
  averages the gradients, and makes its BatchNorm layers compute their statistics
  over the global batch (:class:`CrossProcessBatchNorm2d` on the CPU,
  ``torch.nn.SyncBatchNorm`` on CUDA);
* only rank 0 (:attr:`World.main`) shows progress, prints and writes files.

Backends: ``gloo`` for the CPU, ``nccl`` for CUDA, picked from the device unless
given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "BACKENDS",
    "CrossProcessBatchNorm2d",
    "World",
    "all_reduce_sum",
    "current",
    "default_backend",
    "gather_shards",
    "launched_by_torchrun",
    "local_device",
    "process_group",
    "replicated",
]

BACKENDS = ("gloo", "nccl")
# what torchrun sets in every process it starts (env:// initialisation reads them)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train together.

    Attributes:
        rank: 0 to ``size - 1``; rank 0 is the one that prints and writes.
        size: number of processes (1 without a process group).
        local_rank: rank among the processes of this machine (picks its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process shows progress, prints and writes files."""
        return self.rank == 0

    def shard(self, batch: Tensor) -> Tensor:
        """This process's part of a global batch of indices ``[B]``: ``[B / size]``.

        Rank r takes positions r, r + size, r + 2 * size, ... (as
        ``torch.utils.data.DistributedSampler`` does with a dataset's indices).
        """
        return batch[self.rank :: self.size]

    def check_batch(self, batch_size: int) -> int:
        """``batch_size`` (the global batch), if every process gets an equal shard."""
        if batch_size % self.size:
            raise ValueError(
                f"batch_size (the global batch) must be a multiple of the {self.size} "
                f"processes, got {batch_size}"
            )
        return batch_size

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` in every process (for decisions all must share)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.broadcast(tensor, src=0)
        return tensor.item()

    def average(self, record: dict[str, float]) -> dict[str, float]:
        """The mean of each value of ``record`` over the processes (``record`` alone).

        For the losses of one training step: each process has its shard's.
        """
        if self.size == 1:
            return record
        values = torch.tensor(
            list(record.values()), dtype=torch.float64, device=_collective_device()
        )
        dist.all_reduce(values)
        return dict(zip(record, (values / self.size).tolist(), strict=True))


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another env:// launcher) started this process."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def current() -> World:
    """This process's :class:`World`; ``World()`` (rank 0 of 1) without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def local_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else CUDA when available, else the CPU.

    Under torchrun, ``"cuda"`` without an index means this process's own GPU,
    ``cuda:LOCAL_RANK``, so that the processes of one machine share its GPUs.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def default_backend(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(
    device: str | torch.device | None = None, backend: str | None = None
) -> Iterator[World]:
    """Join torchrun's processes for the ``with`` block; yields this one's World.

    Args:
        device: where this process trains (see :func:`local_device`); it picks
            the backend and, for CUDA, becomes this process's current GPU.
        backend: ``"gloo"`` or ``"nccl"``; default :func:`default_backend`.

    Outside torchrun this yields ``World()`` and does nothing else. The group is
    destroyed when the block ends, also on an exception. A process that fails
    exits; torchrun sees it and stops the others, which may be waiting for it
    inside a collective, so the whole run ends with that process's error.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not launched_by_torchrun():
        yield World()
        return
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # collectives and NCCL use the current GPU
    dist.init_process_group(backend or default_backend(device))
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors handed to the group's collectives must live."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_shards(shard: Sequence) -> list:
    """Every process's ``shard`` of a list, put back in the order of the whole.

    Process r holds items r, r + P, r + 2P, ... of the whole list (P processes),
    as :meth:`World.shard` splits it; every process gets the whole list back.
    Items are any picklable objects (``torch.distributed.all_gather_object``).
    """
    world = current()
    if world.size == 1:
        return list(shard)
    shards: list = [None] * world.size
    dist.all_gather_object(shards, list(shard))
    total = sum(len(s) for s in shards)
    return [shards[i % world.size][i // world.size] for i in range(total)]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiable: the gradient of a sum that every
    process used is the sum of their gradients, so backward sums again."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over all processes, through which gradients flow.

    The same as ``torch.distributed.nn.functional.all_reduce`` (which this torch
    deprecates): the backward pass sums the gradients over processes too.
    """
    return _AllReduceSum.apply(tensor)


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all processes.

    ``torch.nn.SyncBatchNorm`` does this with CUDA kernels, and refuses CPU
    tensors; this class computes the same thing with sums over the processes
    (:func:`all_reduce_sum`), so it also runs on the CPU with gloo. Outside
    training or outside a process group it is ``nn.BatchNorm2d``. Convert a
    model's BatchNorm2d layers with :meth:`convert`.
    """

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or current().size == 1:
            return super().forward(input)
        channels = [1, -1] + [1] * (input.dim() - 2)  # broadcast per channel
        dims = [0, *range(2, input.dim())]  # every axis but the channels
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = all_reduce_sum(x.new_tensor(x.numel() // x.shape[1]))  # per channel
        if count <= 1:
            raise ValueError("BatchNorm needs more than 1 value per channel to train")
        mean = all_reduce_sum(x.sum(dims)) / count
        centred = x - mean.view(channels)
        var = all_reduce_sum((centred * centred).sum(dims)) / count  # biased, as BN
        out = centred * torch.rsqrt(var + self.eps).view(channels)
        if self.affine:
            out = out * self.weight.view(channels) + self.bias.view(channels)
        if self.track_running_stats:  # as nn.BatchNorm: the unbiased variance
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # a cumulative average
                momentum = 1.0 / self.num_batches_tracked.item()
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * count / (count - 1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return out.to(input.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every ``nn.BatchNorm2d`` layer replaced by this class.

        As ``nn.SyncBatchNorm.convert_sync_batchnorm``: the new layers share the
        old ones' parameters and buffers (so the optimizer and the original layers
        see what they learn); the module itself is changed in place and returned,
        unless it is a BatchNorm layer itself.
        """
        converted = module
        if isinstance(module, nn.BatchNorm2d):
            converted = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                bias=module.bias is not None,
            )
            if module.affine:
                converted.weight, converted.bias = module.weight, module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
        for name, child in module.named_children():
            converted.add_module(name, cls.convert(child))
        return converted


@contextmanager
def replicated(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` ready to train on this process's shards; yields what to call.

    Without a process group that is the model itself. With one, its BatchNorm
    layers become :class:`CrossProcessBatchNorm2d` (``nn.SyncBatchNorm`` on CUDA,
    whose kernels do the same) and it is wrapped in ``DistributedDataParallel``,
    which makes every process start from rank 0's weights and averages the
    gradients. On leaving, the model's own BatchNorm layers are put back; they
    share parameters and buffers with the converted ones, so they hold what
    was learnt.
    """
    if current().size == 1:
        yield model
        return
    batch_norms = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
    ]
    device = next(model.parameters()).device
    if device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        converted = CrossProcessBatchNorm2d.convert(model)
    try:
        yield nn.parallel.DistributedDataParallel(
            converted, device_ids=[device] if device.type == "cuda" else None
        )
    finally:
        for parent, name, child in batch_norms:
            parent.add_module(name, child)
