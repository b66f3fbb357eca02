import math

import torch

from sslandmarks.softargmax import SoftArgmax, soft_argmax, spatial_softmax


def fixture_map() -> torch.Tensor:
    # exp of the map is [[1, 3, 1], [1, 1, 1]] / 8 after normalisation.
    m = torch.zeros(1, 1, 2, 3, dtype=torch.float64)
    m[0, 0, 0, 1] = math.log(3.0)
    return m


def test_hand_computed_value_and_gradient():
    m = fixture_map().requires_grad_(True)
    lm, probs = soft_argmax(m, beta=1.0)
    # x = (0*2 + 1*4 + 2*2) / 8 = 1; y = (0*5 + 1*3) / 8 = 0.375
    assert torch.allclose(lm[0, 0].double(), torch.tensor([1.0, 0.375], dtype=torch.float64), atol=1e-6)
    assert abs(probs.sum().item() - 1.0) < 1e-12
    lm[0, 0, 1].backward()
    # d y / d M_ij = p_ij (j_row - y); for (row 0, col 1): 3/8 * (0 - 0.375) = -0.140625
    g = m.grad[0, 0]
    assert abs(g[0, 1].item() + 0.140625) < 1e-6
    # for (row 1, col 0): 1/8 * (1 - 0.375) = 0.078125
    assert abs(g[1, 0].item() - 0.078125) < 1e-6


def test_beta_sharpens_towards_argmax():
    m = torch.zeros(1, 1, 5, 7)
    m[0, 0, 3, 5] = 1.0
    soft, _ = soft_argmax(m, beta=1.0)
    sharp, _ = soft_argmax(m, beta=100.0)
    assert torch.allclose(sharp[0, 0], torch.tensor([5.0, 3.0]), atol=1e-3)
    assert (sharp[0, 0] - torch.tensor([5.0, 3.0])).norm() < (soft[0, 0] - torch.tensor([5.0, 3.0])).norm()


def test_numerically_stable_for_huge_logits():
    m = torch.full((2, 3, 4, 4), 1e4)
    m[:, :, 1, 2] = 2e4
    lm, probs = soft_argmax(m, beta=10.0)
    assert torch.isfinite(lm).all() and torch.isfinite(probs).all()
    assert torch.allclose(lm, torch.tensor([2.0, 1.0]).expand_as(lm))


def test_float32_inside_autocast():
    m = torch.randn(2, 3, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lm, probs = soft_argmax(m, beta=1.0)
    assert lm.dtype == torch.float32 and probs.dtype == torch.float32


def test_gradcheck_float64():
    m = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_argmax(t, 0.7)[0], (m,))
    assert torch.autograd.gradcheck(lambda t: spatial_softmax(t, 3.0), (m,))


def test_module_wrapper():
    m = torch.randn(1, 2, 6, 6)
    assert torch.equal(SoftArgmax(2.0)(m)[0], soft_argmax(m, 2.0)[0])
