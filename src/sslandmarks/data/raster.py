"""Anti-aliased rasterisation of convex polygons in the pixel-centre convention of :mod:`coords`."""

from __future__ import annotations

import numpy as np

_SS = 4  # samples per pixel and axis
_OFFS = (np.arange(_SS) + 0.5) / _SS - 0.5  # sub-pixel sample offsets around the pixel centre


def fill_convex(canvas: np.ndarray, poly: np.ndarray, value: float = 1.0) -> None:
    """Add the coverage of convex polygon ``poly (V, 2)`` (``(x, y)`` pixels, any winding) to
    ``canvas (H, W)`` float, clipped at ``value``. Coverage is estimated with 4x4 samples per pixel."""
    h, w = canvas.shape
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return
    xs = (np.arange(x0, x1 + 1)[:, None] + _OFFS[None, :]).ravel()
    ys = (np.arange(y0, y1 + 1)[:, None] + _OFFS[None, :]).ravel()
    px, py = np.meshgrid(xs, ys)  # (rows*SS, cols*SS)
    inside = np.ones(px.shape, dtype=bool)
    area2 = 0.0
    for i in range(len(poly)):
        ax, ay = poly[i]
        bx, by = poly[(i + 1) % len(poly)]
        area2 += ax * by - bx * ay
    sign = 1.0 if area2 >= 0 else -1.0
    for i in range(len(poly)):
        ax, ay = poly[i]
        bx, by = poly[(i + 1) % len(poly)]
        inside &= sign * ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) >= 0
    cov = inside.reshape(y1 - y0 + 1, _SS, x1 - x0 + 1, _SS).mean(axis=(1, 3))
    region = canvas[y0 : y1 + 1, x0 : x1 + 1]
    np.minimum(region + cov * value, value, out=region)
