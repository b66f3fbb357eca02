"""Spatial softmax and soft-argmax (Eq. 1 of the paper).

``L_k = sum_{i,j} softmax(beta * M_k)_{i,j} * (i, j)``: the expected pixel position under a softmax
over all positions of landmark map ``M_k``. Computed in float32 (float64 inputs stay float64), also
inside autocast, where half-precision maps would lose sub-pixel accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslandmarks.coords import pixel_grid


def spatial_softmax(heatmaps: Tensor, beta: float = 1.0) -> Tensor:
    """``(B, K, H, W) -> (B, K, H, W)`` probabilities summing to one over each map (float32 or float64)."""
    b, k, h, w = heatmaps.shape
    x = heatmaps if heatmaps.dtype == torch.float64 else heatmaps.float()
    with torch.autocast(heatmaps.device.type, enabled=False):
        flat = x.reshape(b, k, h * w)
        flat = flat if beta == 1.0 else flat * beta  # 68 maps of 64x64: a pass over the maps saved each way
        return torch.softmax(flat, dim=-1).reshape(b, k, h, w)  # softmax subtracts the max: stable


def soft_argmax(heatmaps: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Soft-argmax of ``(B, K, H, W)`` maps.

    Returns ``landmarks (B, K, 2)`` as ``(x, y)`` in heatmap pixels (pixel centres at integers) and
    the probabilities ``(B, K, H, W)``; both float32 (float64 for float64 maps).
    """
    probs = spatial_softmax(heatmaps, beta)
    xs, ys = pixel_grid(probs.shape[-2], probs.shape[-1], device=probs.device, dtype=probs.dtype)
    x = (probs.sum(dim=-2) * xs).sum(dim=-1)  # marginal over rows, then expectation over columns
    y = (probs.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1), probs


def hard_argmax(heatmaps: Tensor) -> Tensor:
    """``(B, K, H, W) -> (B, K, 2)``: the ``(x, y)`` pixel of each map's maximum (not differentiable)."""
    w = heatmaps.shape[-1]
    idx = heatmaps.detach().flatten(2).argmax(-1)
    return torch.stack([(idx % w).float(), torch.div(idx, w, rounding_mode="floor").float()], -1)


class SoftArgmax(nn.Module):
    """Module wrapper of :func:`soft_argmax` with a fixed temperature ``beta``."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        return soft_argmax(heatmaps, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"
