"""BatchNorm over the global batch of all DDP processes, on GPUs and on CPU processes (gloo) alike.

Under DDP each process sees only its share of a step's batch. Plain BatchNorm would normalise each share
by its own statistics, so N processes would train a different model from one process with the same global
batch. :func:`sync_batchnorm` swaps every ``BatchNorm*d`` for :class:`SyncBatchNorm`, whose training-mode
statistics are those of the global batch, as in one process. torch's ``nn.SyncBatchNorm`` does this on
accelerators only; on CPU tensors the statistics are all-reduced here, with the same semantics: mean and
biased variance over all ``N x H x W`` values of every process for normalising, the unbiased variance for
the running estimate. In eval mode nothing is exchanged (running statistics, as in BatchNorm). Parameter
and buffer names are those of BatchNorm, so checkpoints load either way.
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


class SyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` that also synchronises CPU processes (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return nn.modules.batchnorm._BatchNorm.forward(self, x)  # plain BatchNorm (torch's would refuse CPU)
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


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` replaced by :class:`SyncBatchNorm` sharing its parameters and
    buffers (optimisers built on the old parameters stay valid)."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child))
    return out
