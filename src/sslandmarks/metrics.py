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


def face_size_norm(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Normaliser: ``sqrt(w * h)`` of the ground-truth landmarks' bounding box. ``(N,)``."""
    lo = torch.where(torch.isnan(gt), torch.inf, gt).amin(1)
    hi = torch.where(torch.isnan(gt), -torch.inf, gt).amax(1)
    wh = hi - lo
    return (wh[:, 0] * wh[:, 1]).sqrt()


def box_max_side_norm(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Normaliser: the longer side of the ground-truth landmarks' bounding box. ``(N,)``."""
    lo = torch.where(torch.isnan(gt), torch.inf, gt).amin(1)
    hi = torch.where(torch.isnan(gt), -torch.inf, gt).amax(1)
    return (hi - lo).amax(-1)


def pair_distance(gt: Tensor, a, b) -> Tensor:
    """Distance between two points, or between the means of two groups of points (e.g. eye contours)."""
    pa = gt[:, list(a)].mean(1) if isinstance(a, tuple) else gt[:, a]
    pb = gt[:, list(b)].mean(1) if isinstance(b, tuple) else gt[:, b]
    return torch.linalg.norm(pa - pb, dim=-1)


NORMALIZERS = {
    "image_size": image_size_norm,
    "box_diagonal": box_diagonal_norm,
    "face_size": face_size_norm,
    "box_max_side": box_max_side_norm,
}


def normalizer_values(name: str, gt: Tensor, size: tuple[int, int], spec=None) -> Tensor:
    """``(N,)`` normalising lengths: a box/image one from :data:`NORMALIZERS`, or a point pair named in
    the :class:`~sslandmarks.specs.LandmarkSpec` (inter-ocular, inter-pupil, eye centres, palm width)."""
    if name in NORMALIZERS:
        return NORMALIZERS[name](gt, size)
    if spec is not None and name in spec.normalizers:
        return pair_distance(gt.float(), *spec.normalizers[name])
    raise ValueError(f"unknown normaliser {name!r}")


def auc_failure(nme: Tensor, threshold: float) -> tuple[float, float]:
    """Area under the cumulative error distribution up to ``threshold`` (as a fraction, normalised to 1)
    and the failure rate (share of images with NME above it). ``nme (N,)`` as fractions, not percent."""
    x = torch.sort(nme.double()).values
    grid = torch.linspace(0, threshold, 1001, dtype=torch.float64)
    ced = torch.searchsorted(x, grid, right=True).double() / len(x)
    auc = float(torch.trapezoid(ced, grid) / threshold)
    return auc, float((x > threshold).double().mean())


def landmark_metrics(pred: Tensor, gt: Tensor, size: tuple[int, int], normalizer: str, spec=None) -> dict:
    """Mean and per-landmark pixel error, NME (percent of the named normaliser), AUC and failure rate
    at 0.08 and 0.10, and the per-image NME (for CED plots)."""
    err = point_errors(pred, gt)
    per_image_px = _nanmean(err, dim=1)
    per_image = per_image_px / normalizer_values(normalizer, gt, size, spec)
    out = {
        "n_images": int(gt.shape[0]),
        "mean_error_px": float(_nanmean(err)),
        "per_landmark_error_px": [float(v) for v in _nanmean(err, dim=0)],
        "nme": float(100.0 * _nanmean(per_image)),
        "normalizer": normalizer,
    }
    if spec is not None and spec.normalizers:  # every normaliser the layout defines (e.g. inter-pupil too)
        out["nme_by"] = {n: float(100.0 * _nanmean(per_image_px / normalizer_values(n, gt, size, spec)))
                         for n in spec.normalizers}
    valid = per_image[~torch.isnan(per_image)]
    out["per_image_nme"] = [float(v) for v in 100.0 * per_image]
    if len(valid):
        for t in (0.08, 0.10):
            auc, fr = auc_failure(valid, t)
            out[f"auc@{t:.2f}"], out[f"failure_rate@{t:.2f}"] = auc, fr
    return out


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
