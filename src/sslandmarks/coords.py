"""The one coordinate convention of sslandmarks.

Landmarks are ``(x, y)`` in pixels of the network input. Pixel ``(i, j)`` (column ``i``, row ``j``)
has its centre at ``(i, j)`` and covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``; the image of
width ``W`` therefore spans ``[-0.5, W - 0.5]``. Readers convert on the way in (iBUG ``.pts`` are
1-based: subtract 1).

A heatmap at stride ``s`` maps to the image by ``x_img = (x_hm + 0.5) * s - 0.5``.

``torch.nn.functional.grid_sample``/``affine_grid`` with ``align_corners=False`` use normalised
coordinates in which ``-1`` and ``+1`` are the outer edges of the image, so
``u = (2 x + 1) / W - 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates: ``xs (width,) = 0..W-1`` and ``ys (height,) = 0..H-1``."""
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)
    return xs, ys


def heatmap_to_image(points: Tensor, stride: float) -> Tensor:
    """Map ``(..., 2)`` points from a stride-``s`` heatmap to input pixels."""
    return (points + 0.5) * stride - 0.5


def image_to_heatmap(points: Tensor, stride: float) -> Tensor:
    """Inverse of :func:`heatmap_to_image`."""
    return (points + 0.5) / stride - 0.5


def pixel_to_normalized_matrix(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """``(3, 3)`` matrix taking pixel ``(x, y, 1)`` to ``grid_sample`` coordinates (``align_corners=False``)."""
    return torch.tensor(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]],
        device=device,
        dtype=dtype,
    )


def to_unit(points: Tensor, size_wh: Tensor) -> Tensor:
    """``(..., 2)`` pixels -> ``[-1, 1]`` with the image edges at -1 and +1 (``size_wh = (W, H)``)."""
    return 2 * (points + 0.5) / size_wh - 1


def from_unit(u: Tensor, size_wh: Tensor) -> Tensor:
    """Inverse of :func:`to_unit`."""
    return (u + 1) * size_wh / 2 - 0.5


def inside_image(points: Tensor, height: int, width: int, margin: float = 0.0) -> Tensor:
    """``(..., 2) -> (...)`` bool: the point lies within the image span, shrunk by ``margin`` pixels."""
    x, y = points[..., 0], points[..., 1]
    lo = -0.5 + margin
    return (x >= lo) & (y >= lo) & (x <= width - 0.5 - margin) & (y <= height - 0.5 - margin)
