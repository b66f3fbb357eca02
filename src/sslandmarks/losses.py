"""Loss terms of Eq. 2 and their combination.

Every term is a plain function of tensors; :func:`combine` applies the paper's weights::

    Cost = attribute + alpha * elt + lambda * landmark + gamma * ||W||^2

with ``landmark`` the mean squared Euclidean distance over labelled landmarks (or, with
``distance="euclidean"``, the mean distance itself), ``elt`` the mean over
images and landmarks of ``||T L_k(I) - L_k(T I)||^2`` and ``attribute`` the sum over heads of
cross-entropy (classification) or L1 (regression). Where faces come annotated in several layouts,
``landmark`` compares each face's annotated points with the same linear combinations of the predicted ones
(:func:`mapped_landmark_loss`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslandmarks.geometry import apply_points


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` where ``mask`` is true; zero (still differentiable) when nothing is valid."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


SMOOTHING_PX = 0.1  # the euclidean distance is sqrt(d^2 + SMOOTHING_PX^2) - SMOOTHING_PX: differentiable at 0


def point_cost(diff: Tensor, distance: str = "squared") -> Tensor:
    """Cost of each miss ``diff (..., 2)`` -> ``(...)``: ``||diff||^2`` (``"squared"``, the paper's) or the
    distance ``||diff||`` (``"euclidean"``, smoothed within :data:`SMOOTHING_PX` of zero so that its gradient,
    within 1 % of a unit vector beyond 1 px, stays finite at a perfect hit)."""
    sq = (diff * diff).sum(-1)
    if distance == "squared":
        return sq
    return torch.sqrt(sq + SMOOTHING_PX**2) - SMOOTHING_PX


def landmark_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, distance: str = "squared") -> Tensor:
    """Mean over valid landmarks of ``||pred_k - target_k||^2`` (or of the distance: :func:`point_cost`).

    ``pred, target (B, K, 2)``; ``mask (B, K)`` bool (missing targets may hold NaN: they are ignored).
    """
    return masked_mean(point_cost(torch.nan_to_num(target) - pred, distance), mask)


def mapped_landmark_loss(
    pred: Tensor, target: Tensor, maps: Tensor, weights: Tensor, distance: str = "squared"
) -> Tensor:
    """:func:`landmark_loss` for faces annotated in different layouts: row ``b``'s annotated points are
    ``maps[b] @ pred[b]``, and each of its valid points weighs ``weights[b]`` in the mean.

    ``pred (B, K, 2)`` in the model's layout; ``target (B, K', 2)`` in each row's layout, NaN where missing
    (padding included); ``maps (B, K', K)``; ``weights (B,)``. A face thus reaches exactly the predicted
    points its annotation determines: its zero map rows and NaN targets add nothing. Computed in float32
    (elementwise, so that autocast keeps the means of points out of bfloat16)."""
    mapped = (maps.float()[..., None] * pred.float()[:, None]).sum(2)  # (B, K', K, 2) summed over K
    valid = ~torch.isnan(target).any(-1)
    diff = torch.nan_to_num(target).float() - mapped
    w = valid.float() * weights.float()[:, None]
    return (point_cost(diff, distance) * w).sum() / w.sum().clamp_min(1e-12)


def elt_loss(pred: Tensor, pred_warped: Tensor, t: Tensor, mask: Tensor | None = None) -> Tensor:
    """Equivariant landmark transformation cost, ``mean_k ||T L_k(I) - L_k(T I)||^2``.

    ``pred (B, K, 2)`` on the images, ``pred_warped (B, K, 2)`` on the warped images, ``t (B, 3, 3)``;
    ``mask (B, K)`` drops landmarks whose transformed position left the image.
    """
    return landmark_loss(pred_warped, apply_points(t, pred), mask)


def heatmap_ce_loss(heatmaps: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of a softmax over all pixels of each map against the ground-truth pixel
    (Heatmap-MT and RCN). ``heatmaps (B, K, H, W)``, ``target (B, K, 2)`` pixels, ``mask (B, K)``."""
    b, k, h, w = heatmaps.shape
    xy = torch.nan_to_num(target).round().long()
    x, y = xy[..., 0].clamp(0, w - 1), xy[..., 1].clamp(0, h - 1)
    logits = heatmaps.float().reshape(b * k, h * w)
    ce = F.cross_entropy(logits, (y * w + x).reshape(-1), reduction="none").reshape(b, k)
    return masked_mean(ce, mask)


def attribute_losses(
    outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], kinds: Mapping[str, str]
) -> dict[str, Tensor]:
    """One loss per named head.

    ``kinds[name]`` is ``"class"`` (``outputs (B, C)`` logits, ``targets (B,)`` long, ``-1`` = missing,
    cross-entropy) or ``"regression"`` (``outputs (B, D)``, ``targets (B, D)``, NaN = missing, L1).
    """
    out: dict[str, Tensor] = {}
    for name, kind in kinds.items():
        pred, target = outputs[name], targets[name].to(outputs[name].device)
        if kind == "class":
            valid = target >= 0
            ce = F.cross_entropy(pred.float(), target.clamp_min(0), reduction="none")
            out[name] = masked_mean(ce, valid)
        elif kind == "regression":
            target = target.reshape(pred.shape)
            valid = ~torch.isnan(target)
            out[name] = masked_mean((pred.float() - torch.nan_to_num(target)).abs(), valid)
        else:
            raise ValueError(f"unknown attribute kind {kind!r}: use 'class' or 'regression'")
    return out


def l2_penalty(parameters: Iterable[nn.Parameter]) -> Tensor:
    """``sum ||W||^2`` over weight tensors (biases and norm layers excluded: ``ndim > 1``)."""
    terms = [p.pow(2).sum() for p in parameters if p.ndim > 1]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def combine(terms: Mapping[str, Tensor], alpha: float, lam: float, gamma: float, attribute: float = 1.0) -> Tensor:
    """Eq. 2: ``attribute * A + alpha * ELT + lambda * L + gamma * ||W||^2`` over the terms present."""
    weights = {"attribute": attribute, "elt": alpha, "landmark": lam, "l2": gamma}
    total = None
    for name, w in weights.items():
        if name in terms and w != 0.0:
            total = w * terms[name] if total is None else total + w * terms[name]
    if total is None:
        raise ValueError("no loss term is switched on: check the variant and the weights")
    return total
