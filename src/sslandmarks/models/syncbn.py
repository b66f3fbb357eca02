"""BatchNorm over the global batch of all DDP processes, on GPUs and on CPU processes (gloo) alike.

Under DDP each process sees only its share of a step's batch. Plain BatchNorm would normalise each share
by its own statistics, so N processes would train a different model from one process with the same global
batch. :func:`sync_batchnorm` swaps every ``BatchNorm*d`` for a layer whose training-mode statistics are
those of the global batch, as in one process: torch's ``nn.SyncBatchNorm`` on accelerators, and on CPU
processes (gloo), where torch and DDP refuse it, :class:`GlobalBatchNorm`, with the same semantics: mean
and biased variance over all ``N x H x W`` values of every process for normalising, the unbiased variance
for the running estimate. In eval mode nothing is exchanged (running statistics, as in BatchNorm).
Parameter and buffer names are those of BatchNorm, so checkpoints load either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum shared by all processes is the sum of their gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are all-reduced over the processes (CPU tensors; see the
    module docstring). Without a process group of more than one process it is plain BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = _AllReduceSum.apply(x.new_tensor([x.numel() / x.shape[1]]))
        mean = _AllReduceSum.apply(x.sum(dims)) / count  # two passes: no cancellation in E[x^2] - E[x]^2
        var = _AllReduceSum.apply((x - mean.reshape(shape)).square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, cpu: bool) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` replaced by one that normalises by global-batch statistics,
    sharing its parameters and buffers (optimisers built on the old parameters stay valid): torch's
    ``nn.SyncBatchNorm`` on accelerators, :class:`GlobalBatchNorm` on the CPU (``cpu``)."""
    if not cpu:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child, cpu))
    return out
