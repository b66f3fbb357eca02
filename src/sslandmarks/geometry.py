"""Explicit 3x3 affine transforms in pixel coordinates (see :mod:`sslandmarks.coords`).

A transform ``T`` is a ``(B, 3, 3)`` tensor that maps a point ``p = (x, y, 1)`` of the source image
to ``T p`` in the destination image. The same matrix moves images (:func:`warp_images`) and points
(:func:`apply_points`), so ``soft_argmax(warp(x, T)) == apply_points(T, soft_argmax(x))`` for an
equivariant detector: that is the ELT cost of the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sslandmarks.coords import pixel_to_normalized_matrix


@dataclass(frozen=True)
class AffineRanges:
    """Ranges of a random similarity transform about the image centre.

    ``rotation_deg``: uniform in ``[-r, r]``; ``scale``: log-uniform in ``[lo, hi]``;
    ``translate``: uniform in ``[-t, t]`` pixels per axis; ``flip``: probability of a horizontal flip.
    """

    rotation_deg: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    flip: float = 0.0


def identity(batch: int, device=None, dtype=torch.float32) -> Tensor:
    """``(B, 3, 3)`` identity transforms."""
    return torch.eye(3, device=device, dtype=dtype).expand(batch, 3, 3).clone()


def translation(t: Tensor) -> Tensor:
    """``(B, 2)`` offsets -> ``(B, 3, 3)``."""
    m = identity(t.shape[0], t.device, t.dtype)
    m[:, :2, 2] = t
    return m


def similarity(angle_rad: Tensor, scale: Tensor, flip: Tensor | None = None) -> Tensor:
    """Rotation by ``angle`` (counter-clockwise on screen is negative: y points down) and isotropic
    ``scale`` about the origin, with an optional horizontal mirror ``x -> -x`` applied first. ``(B,)``
    each -> ``(B, 3, 3)``."""
    c, s = torch.cos(angle_rad) * scale, torch.sin(angle_rad) * scale
    m = identity(angle_rad.shape[0], angle_rad.device, angle_rad.dtype)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    if flip is not None:
        m[:, :, 0] = torch.where(flip[:, None], -m[:, :, 0], m[:, :, 0])
    return m


def sample_affine(
    batch: int,
    ranges: AffineRanges,
    size: tuple[int, int],
    generator: torch.Generator | None = None,
    device=None,
) -> tuple[Tensor, Tensor]:
    """Random transforms about the centre of an image of ``size = (H, W)``.

    Returns ``T (B, 3, 3)`` float32 and ``flipped (B,)`` bool (apply the spec's flip permutation to
    the landmarks of flipped samples). Sampling happens on ``generator``'s device, then moves.
    """
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(batch, 5, generator=generator, device=gdev).to(device)
    angle = (2 * u[:, 0] - 1) * math.radians(ranges.rotation_deg)
    lo, hi = ranges.scale
    scale = torch.exp(math.log(lo) + u[:, 1] * (math.log(hi) - math.log(lo)))
    shift = (2 * u[:, 2:4] - 1) * ranges.translate
    flipped = u[:, 4] < ranges.flip
    h, w = size
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=device).expand(batch, 2)
    t = translation(centre + shift) @ similarity(angle, scale, flipped) @ translation(-centre)
    return t, flipped


def sample_box_jitter(
    batch: int,
    shift: tuple[float, float],
    scale: float,
    side: float,
    size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random re-crops ``(B, 3, 3)`` of images of ``size = (H, W)`` cut around a centred box of ``side``
    pixels, as if that box had been moved by ``N(0, (shift[0] * side)^2)`` in x and ``N(0, (shift[1] *
    side)^2)`` in y and scaled by ``exp(N(0, scale^2))``, as a face detector's boxes scatter: the moved box's
    centre ``c + d`` goes to the image centre ``c`` and its content shrinks by its scale ``s``, so a point
    ``p`` goes to ``c + (p - c - d) / s``. Sampled on the CPU (``generator``'s device)."""
    g = torch.randn(batch, 3, generator=generator)
    d = g[:, :2] * torch.tensor(shift) * side
    s = torch.exp(g[:, 2] * scale)
    h, w = size
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(batch, 2)
    return translation(centre) @ similarity(torch.zeros(batch), 1.0 / s) @ translation(-(centre + d))


def compose(*transforms: Tensor) -> Tensor:
    """``compose(A, B, C) = A @ B @ C``: apply ``C`` first."""
    out = transforms[0]
    for t in transforms[1:]:
        out = out @ t
    return out


def invert(t: Tensor) -> Tensor:
    """Inverse of ``(..., 3, 3)`` affine matrices (computed in float32 or better)."""
    return torch.linalg.inv(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)


def apply_points(t: Tensor, points: Tensor) -> Tensor:
    """Apply ``(B, 3, 3)`` to ``(B, K, 2)`` points."""
    return points @ t[:, :2, :2].transpose(1, 2) + t[:, None, :2, 2]


def warp_images(
    images: Tensor,
    t: Tensor,
    out_size: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> Tensor:
    """Warp ``(B, C, H, W)`` images by ``T (B, 3, 3)`` into ``(B, C, *out_size)``.

    Output pixel ``q`` takes the input value at ``T^-1 q``; outside the input is zero. Integer images
    are converted to float32 (values unchanged).
    """
    b, _, h, w = images.shape
    oh, ow = out_size or (h, w)
    x = images if images.is_floating_point() else images.float()
    n_in = pixel_to_normalized_matrix(h, w, device=x.device)
    n_out_inv = torch.linalg.inv(pixel_to_normalized_matrix(oh, ow, device=x.device))
    theta = n_in @ invert(t.to(x.device).float()) @ n_out_inv
    grid = F.affine_grid(theta[:, :2, :].to(x.dtype), [b, x.shape[1], oh, ow], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
