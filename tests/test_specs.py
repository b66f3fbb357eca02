"""Landmark layouts: flip permutations, and the settings that need one."""

import pytest

from sslandmarks.errors import UserError
from sslandmarks.specs import SPECS, LandmarkSpec, flip_permutation, layout, mirror_perm


def test_300w_flip_permutation_is_an_involution_mapping_left_eye_to_right():
    flip = SPECS["300w-68"].flip
    assert all(flip[flip[k]] == k for k in range(68))
    assert flip[36] == 45 and flip[0] == 16 and flip[30] == 30 and flip[48] == 54 and flip[62] == 62


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.flip is not None])
def test_every_flip_permutation_is_an_involution(name):
    flip = SPECS[name].flip
    assert sorted(flip) == list(range(SPECS[name].num_landmarks)) and all(flip[flip[k]] == k for k in flip)


def test_mirror_permutation_only_where_asked_and_possible(monkeypatch):
    assert layout("") is None and layout("mtfl-5").num_landmarks == 5
    assert mirror_perm("mtfl-5", False) is None and mirror_perm("", False) is None
    assert mirror_perm("mtfl-5", True) == (1, 0, 2, 4, 3) == flip_permutation("mtfl-5", "data.augment_flip")
    assert mirror_perm("hand-21", True) == tuple(range(21))  # a mirrored right hand is a left one, same names
    monkeypatch.setitem(SPECS, "unmirrored", LandmarkSpec("unmirrored", 3, None))
    with pytest.raises(UserError, match="data.test_flip needs a data.spec with a flip permutation"):
        mirror_perm("unmirrored", True)
    with pytest.raises(UserError, match=r"data.augment_flip needs a data.spec .*\(none given"):
        flip_permutation("", "data.augment_flip")
    with pytest.raises(UserError, match="data.spec='nope' is unknown"):
        layout("nope")


def test_mtfl5_from_300w68_keeps_the_points_a_missing_one_does_not_touch():
    """A NaN among the 68 points spoils only the MTFL points made from it (0 x NaN is NaN in a plain product)."""
    import numpy as np

    from sslandmarks.specs import mtfl5_from_300w68

    pts = np.random.default_rng(0).random((68, 2))
    full = mtfl5_from_300w68(pts)
    pts[40] = np.nan  # point 41 (1-based): the right-hand side of the first eye's contour
    part = mtfl5_from_300w68(pts)
    assert np.isnan(part[0]).all() and np.allclose(part[1:], full[1:])
