"""Distributed helpers: one process per device, started by ``torchrun``.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them we run as a single process. The
backend is nccl on CUDA and gloo on CPU. Rank 0 alone logs, evaluates and writes files.

Batch statistics are synchronised across processes (``convert_sync_batchnorm``) so that N
processes with batch B/N train exactly like one process with batch B. On CUDA this is
``nn.SyncBatchNorm``; PyTorch's SyncBatchNorm refuses CPU tensors, so on CPU (gloo) we use
:class:`CpuSyncBatchNorm`, a BatchNorm whose mean/variance come from an all-reduce.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["DistInfo", "init_distributed", "is_initialized", "cleanup", "barrier", "all_reduce_sum",
           "CpuSyncBatchNorm", "convert_sync_batchnorm", "unwrap"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Read the torchrun environment, pick the device, start the process group if needed.

    ``device``: "cpu", "cuda" or None (CUDA when available).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place, returned); a no-op for a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / TrainStep wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif getattr(model, "is_train_step", False):  # engine.train.TrainStep
            model = model.model
        else:
            return model


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients (all-reduced too)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over all processes (gloo / CPU).

    One all-reduce of [sum, sum of squares, count] per layer; the all-reduce is the autograd-aware
    one (``_AllReduceSum``), so gradients flow back through the global statistics as in ``nn.SyncBatchNorm``.
    Outside training, or in a single process, it is an ordinary BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        n_local = x.numel() // c
        # float64 sums: var = E[x^2] - E[x]^2 cancels badly in float32 when |mean| >> std
        xf = x.transpose(0, 1).reshape(c, -1).double()
        stats = torch.cat([xf.sum(1), (xf * xf).sum(1),
                           torch.full((1,), float(n_local), dtype=xf.dtype, device=x.device)])
        stats = _AllReduceSum.apply(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalises
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one (CUDA: nn.SyncBatchNorm; CPU: ours)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if type(module) is nn.BatchNorm2d:  # exact type: subclasses may change the maths
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum,
                               module.affine, module.track_running_stats)
        with torch.no_grad():
            if module.affine:
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            if module.track_running_stats:
                out.running_mean.copy_(module.running_mean)
                out.running_var.copy_(module.running_var)
                out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
