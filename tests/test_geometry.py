import math

import pytest
import torch

from sslandmarks.geometry import (
    AffineRanges,
    apply_points,
    compose,
    identity,
    invert,
    sample_affine,
    similarity,
    translation,
    warp_images,
)
from sslandmarks.softargmax import soft_argmax


def gaussian_image(centre: torch.Tensor, size: int = 64, sigma: float = 1.5) -> torch.Tensor:
    """``(B, 1, size, size)`` Gaussian blobs at ``centre (B, 2)``."""
    grid = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    d2 = (xs[None] - centre[:, 0, None, None]) ** 2 + (ys[None] - centre[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))[:, None]


def centroid(img: torch.Tensor) -> torch.Tensor:
    """Intensity centroid via soft-argmax of the log image (softmax(log I) = I / sum I)."""
    lm, _ = soft_argmax(torch.log(img.double().clamp_min(1e-300)), beta=1.0)
    return lm[:, 0]


@pytest.mark.parametrize("seed", range(4))
def test_warp_matches_point_transform(seed):
    g = torch.Generator().manual_seed(seed)
    ranges = AffineRanges(rotation_deg=180, scale=(0.8, 1.25), translate=6, flip=0.5)
    t, flipped = sample_affine(16, ranges, (64, 64), g)
    assert flipped.any() and (~flipped).any()
    p = 26 + 12 * torch.rand(16, 2, generator=g, dtype=torch.float64)  # near the centre: stays inside
    img = gaussian_image(p)
    warped = warp_images(img.float(), t).double()
    expected = apply_points(t.double(), p[:, None])[:, 0]
    assert (centroid(warped) - expected).norm(dim=-1).max() < 0.05


def test_one_hot_pixel_moves_exactly_under_translation():
    img = torch.zeros(1, 1, 20, 20)
    img[0, 0, 5, 7] = 1.0  # pixel (x=7, y=5)
    t = translation(torch.tensor([[3.0, -2.0]]))
    out = warp_images(img, t)
    assert out[0, 0, 3, 10] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)


def test_inverse_and_compose():
    g = torch.Generator().manual_seed(0)
    t, _ = sample_affine(8, AffineRanges(90, (0.5, 2.0), 10, 0.5), (32, 32), g)
    assert torch.allclose(compose(invert(t), t), identity(8), atol=1e-5)
    p = torch.randn(8, 5, 2, generator=g)
    assert torch.allclose(apply_points(invert(t), apply_points(t, p)), p, atol=1e-4)
    a, b = t[:4], t[4:]
    assert torch.allclose(apply_points(compose(a, b), p[:4]), apply_points(a, apply_points(b, p[:4])), atol=1e-4)


def test_flip_twice_is_identity_and_mirrors_about_centre():
    zero = torch.zeros(1)
    f = translation(torch.tensor([[4.5, 0.0]])) @ similarity(zero, torch.ones(1), torch.tensor([True])) \
        @ translation(torch.tensor([[-4.5, 0.0]]))
    assert torch.allclose(f @ f, identity(1))
    assert apply_points(f, torch.tensor([[[0.0, 3.0]]])).tolist() == [[[9.0, 3.0]]]  # width 10: 0 <-> 9


def test_rotation_direction_and_sampling_ranges():
    t = similarity(torch.tensor([math.pi / 2]), torch.ones(1))
    assert torch.allclose(apply_points(t, torch.tensor([[[1.0, 0.0]]])), torch.tensor([[[0.0, 1.0]]]), atol=1e-6)
    g = torch.Generator().manual_seed(1)
    t, _ = sample_affine(2000, AffineRanges(20, (0.9, 1.1), 0, 0), (10, 10), g)
    det = torch.linalg.det(t[:, :2, :2]).sqrt()
    assert det.min() >= 0.9 - 1e-5 and det.max() <= 1.1 + 1e-5
    angle = torch.atan2(t[:, 1, 0], t[:, 0, 0]).rad2deg()
    assert angle.abs().max() <= 20 + 1e-4 and angle.abs().max() > 19


def test_sampling_is_deterministic_by_generator():
    a, _ = sample_affine(4, AffineRanges(30, (0.9, 1.1), 3, 0.5), (60, 60), torch.Generator().manual_seed(5))
    b, _ = sample_affine(4, AffineRanges(30, (0.9, 1.1), 3, 0.5), (60, 60), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_warp_to_other_output_size_crops():
    img = torch.zeros(1, 1, 40, 40)
    img[0, 0, 20, 30] = 1.0
    t = translation(torch.tensor([[-20.0, -10.0]]))  # crop origin at (20, 10)
    out = warp_images(img, t, out_size=(16, 16))
    assert out.shape == (1, 1, 16, 16) and out[0, 0, 10, 10] == pytest.approx(1.0)
