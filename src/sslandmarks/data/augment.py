"""Random affine augmentation of whole batches: the same matrix moves the images and their landmarks."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from sslandmarks.coords import inside_image
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.geometry import apply_points, warp_images


def augment(batch: LandmarkData, t: Tensor, flipped: Tensor | None = None,
            flip_perm: tuple[int, ...] | Tensor | None = None) -> LandmarkData:
    """Warp ``batch`` by ``t (B, 3, 3)``; landmarks that leave the image become missing (NaN), not clamped.

    ``flipped (B,)`` marks mirrored transforms: their landmarks are renumbered by the spec's ``flip_perm``
    (landmark ``k`` of the original becomes landmark ``flip_perm[k]``: a left eye corner is a right one
    after a mirror), or, for rows in different layouts, by their own row of ``flip_perm (B, K)`` long.
    Images stay uint8 so the batch looks exactly like an unaugmented one to the rest of the loop."""
    h, w = batch.images.shape[-2:]
    t = t.to(batch.images.device)
    images = warp_images(batch.images, t).round_().clamp_(0, 255).to(torch.uint8)
    lms = apply_points(t, batch.landmarks)
    if flipped is not None and bool(flipped.any()):
        if flip_perm is None:
            raise ValueError("mirrored transforms need the landmark flip permutation")
        renumbered = torch.empty_like(lms)
        if isinstance(flip_perm, Tensor):  # per row: renumbered[b, perm[b, k]] = lms[b, k]
            renumbered.scatter_(1, flip_perm.to(lms.device)[..., None].expand_as(lms), lms)
        else:
            renumbered[:, list(flip_perm)] = lms
        lms = torch.where(flipped.to(lms.device)[:, None, None], renumbered, lms)
    lms = torch.where(inside_image(lms, h, w)[..., None], lms, torch.full_like(lms, float("nan")))
    return replace(batch, images=images, landmarks=lms)
