"""Landmark metrics: pure functions of predictions and ground truth (``(N, K, 2)`` pixels, NaN = missing)."""

from __future__ import annotations

import torch
from torch import Tensor


def point_errors(pred: Tensor, gt: Tensor) -> Tensor:
    """``(N, K)`` Euclidean distances in pixels; NaN where the ground truth is missing."""
    return torch.linalg.norm(pred.float() - gt.float(), dim=-1)


def _nanmean(x: Tensor, dim=None) -> Tensor:
    return torch.nanmean(x, dim=dim) if dim is not None else torch.nanmean(x)


def image_size_norm(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Normaliser: the image width (all images share the input size). ``(N,)``."""
    return torch.full((gt.shape[0],), float(size[1]))


def box_diagonal_norm(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Normaliser: the diagonal of the ground-truth landmarks' bounding box. ``(N,)``."""
    lo = torch.where(torch.isnan(gt), torch.inf, gt).amin(1)
    hi = torch.where(torch.isnan(gt), -torch.inf, gt).amax(1)
    return torch.linalg.norm(hi - lo, dim=-1)


NORMALIZERS = {"image_size": image_size_norm, "box_diagonal": box_diagonal_norm}


def landmark_metrics(pred: Tensor, gt: Tensor, size: tuple[int, int], normalizer: str) -> dict:
    """Mean and per-landmark pixel error and NME (percent of the named normaliser)."""
    err = point_errors(pred, gt)
    norm = NORMALIZERS[normalizer](gt, size)
    per_image = _nanmean(err, dim=1)
    return {
        "n_images": int(gt.shape[0]),
        "mean_error_px": float(_nanmean(err)),
        "per_landmark_error_px": [float(v) for v in _nanmean(err, dim=0)],
        "nme": float(100.0 * _nanmean(per_image / norm)),
        "normalizer": normalizer,
    }


def accuracy(logits: Tensor, target: Tensor) -> float:
    """Share of labelled samples (``target >= 0``) whose arg-max logit is right."""
    valid = target >= 0
    return float((logits.argmax(-1)[valid] == target[valid]).float().mean()) if valid.any() else float("nan")


def landmark_consistency(pred: Tensor, centres: Tensor) -> float:
    """Shapes: share of images where landmark 1 is nearer one shape and landmark 2 nearer the other,
    with the assignment (1 -> triangle or 1 -> square) that the model prefers over the whole set.

    ``pred (N, 2, 2)``, ``centres (N, 2, 2)`` = (triangle, square)."""
    d = torch.cdist(pred.float(), centres.float())  # (N, landmark, shape)
    first = ((d[:, 0, 0] < d[:, 0, 1]) & (d[:, 1, 1] < d[:, 1, 0])).float().mean()
    swapped = ((d[:, 0, 1] < d[:, 0, 0]) & (d[:, 1, 0] < d[:, 1, 1])).float().mean()
    return float(torch.maximum(first, swapped))
