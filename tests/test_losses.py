import math

import pytest
import torch
from torch import nn

from sslandmarks.geometry import AffineRanges, apply_points, sample_affine, warp_images
from sslandmarks.losses import (
    SMOOTHING_PX,
    attribute_losses,
    combine,
    elt_loss,
    l2_penalty,
    landmark_loss,
    masked_mean,
    point_cost,
)
from sslandmarks.softargmax import soft_argmax


def test_masked_landmark_loss_by_hand():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [5.0, 5.0]]])
    target = torch.tensor([[[3.0, 4.0], [1.0, 2.0]], [[2.0, 0.0], [float("nan"), float("nan")]]])
    mask = ~torch.isnan(target).any(-1)
    # squared distances: 25, 1, 0 (the NaN one is masked) -> mean 26/3
    assert landmark_loss(pred, target, mask).item() == pytest.approx(26 / 3)
    assert landmark_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
    assert masked_mean(torch.tensor([1.0, 3.0]), None).item() == 2.0


def test_euclidean_landmark_loss_by_hand_and_its_gradient():
    """``distance="euclidean"`` charges the (smoothed) distance: the misses above (5, 1, 0 px) cost
    sqrt(d^2 + s^2) - s each; its gradient is the unit vector of the miss, and finite (zero) at a perfect hit."""
    pred = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [5.0, 5.0]]], requires_grad=True)
    target = torch.tensor([[[3.0, 4.0], [1.0, 2.0]], [[2.0, 0.0], [float("nan"), float("nan")]]])
    mask = ~torch.isnan(target).any(-1)
    s = SMOOTHING_PX
    by_hand = sum(math.sqrt(d * d + s * s) - s for d in (5.0, 1.0, 0.0)) / 3
    loss = landmark_loss(pred, target, mask, "euclidean")
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    g = pred.grad * 3  # undo the mean over 3 points
    assert torch.allclose(g[0, 0], -torch.tensor([3.0, 4.0]) / math.sqrt(25 + s * s))
    assert torch.allclose(g[1, 0], torch.zeros(2)) and torch.isfinite(g).all()
    assert torch.equal(point_cost(torch.tensor([3.0, 4.0])), torch.tensor(25.0))  # the default stays the paper's


def test_elt_zero_for_equivariant_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    t, _ = sample_affine(4, AffineRanges(30, (0.9, 1.1), 3), (60, 60), g)
    pred = 20 + 20 * torch.rand(4, 5, 2, generator=g)
    assert elt_loss(pred, apply_points(t, pred), t).item() == pytest.approx(0.0, abs=1e-8)
    assert elt_loss(pred, apply_points(t, pred) + 0.5, t).item() == pytest.approx(0.5, rel=1e-5)  # 0.25 + 0.25


def _centroid_detector(x: torch.Tensor) -> torch.Tensor:
    """An (almost exactly) equivariant 'network': the intensity centroid."""
    return soft_argmax(torch.log(x.clamp_min(1e-30)), 1.0)[0]


def test_elt_on_images_small_for_centroid_large_for_constant():
    ys, xs = torch.meshgrid(torch.arange(60.0), torch.arange(60.0), indexing="ij")
    imgs = torch.exp(-((xs - 27) ** 2 + (ys - 33) ** 2) / 8.0).expand(4, 1, 60, 60).clone()
    t, _ = sample_affine(4, AffineRanges(30, (0.9, 1.1), 3), (60, 60), torch.Generator().manual_seed(1))
    good = elt_loss(_centroid_detector(imgs), _centroid_detector(warp_images(imgs, t)), t)
    const = torch.full((4, 1, 2), 30.0)
    bad = elt_loss(const, const, t)
    assert good.item() < 1e-3 and bad.item() > 1.0


def test_attribute_losses_cross_entropy_and_l1_with_missing():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    labels = torch.tensor([0, 1, -1])
    reg = torch.tensor([[1.0], [3.0], [0.0]])
    reg_t = torch.tensor([[2.0], [float("nan")], [0.5]])
    out = attribute_losses({"c": logits, "r": reg}, {"c": labels, "r": reg_t}, {"c": "class", "r": "regression"})
    ce = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert out["c"].item() == pytest.approx(ce, rel=1e-5)
    assert out["r"].item() == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError):
        attribute_losses({"c": logits}, {"c": labels}, {"c": "ranking"})


def test_combine_is_eq2():
    terms = {k: torch.tensor(v) for k, v in {"attribute": 1.0, "elt": 2.0, "landmark": 3.0, "l2": 4.0}.items()}
    assert combine(terms, alpha=0.5, lam=2.0, gamma=0.1).item() == pytest.approx(1 + 1 + 6 + 0.4)
    assert combine({"landmark": torch.tensor(3.0)}, alpha=1, lam=1, gamma=0).item() == 3.0
    with pytest.raises(ValueError):
        combine({"elt": torch.tensor(1.0)}, alpha=0, lam=1, gamma=0)


def test_l2_penalty_skips_biases():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
        lin.bias.fill_(100.0)
    assert l2_penalty(lin.parameters()).item() == pytest.approx(25.0)


def test_heatmap_cross_entropy_by_hand():
    from sslandmarks.losses import heatmap_ce_loss

    maps = torch.zeros(1, 2, 3, 4)
    target = torch.tensor([[[1.0, 2.0], [3.2, 0.4]]])
    assert heatmap_ce_loss(maps, target).item() == pytest.approx(math.log(12))
    maps[0, 0, 2, 1] = 100.0  # the target pixel (x=1, y=2) of landmark 0 dominates
    per = heatmap_ce_loss(maps, target, torch.tensor([[True, False]]))
    assert per.item() == pytest.approx(0.0, abs=1e-6)
