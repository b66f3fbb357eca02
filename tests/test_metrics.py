"""Metrics by hand: pixel error, NME with every kind of normaliser, AUC and failure rate, accuracy."""

import math

import pytest
import torch

from sslandmarks.metrics import accuracy, auc_failure, landmark_consistency, landmark_metrics, pair_distance
from sslandmarks.specs import LandmarkSpec


def test_metrics_normalisers_auc_and_failure_by_hand():
    gt = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 3.0], [4.0, 3.0]]])
    pred = gt + torch.tensor([1.0, 0.0])
    m = landmark_metrics(pred, gt, (10, 10), "box_diagonal")
    assert m["mean_error_px"] == 1.0 and m["nme"] == pytest.approx(20.0)  # 1 / 5
    assert landmark_metrics(pred, gt, (10, 10), "face_size")["nme"] == pytest.approx(100 / math.sqrt(12))
    assert pair_distance(gt, (0, 2), (1, 3)).item() == pytest.approx(4.0)  # group means (0,1.5) and (4,1.5)
    spec = LandmarkSpec("t", 4, None, {"corners": (0, 3), "groups": ((0, 2), (1, 3))}, "corners")
    by = landmark_metrics(pred, gt, (10, 10), "corners", spec)["nme_by"]
    assert by == {"corners": pytest.approx(20.0), "groups": pytest.approx(25.0)}  # 1 / 5 and 1 / 4
    auc, fr = auc_failure(torch.tensor([0.0, 0.04, 0.2]), 0.08)
    assert fr == pytest.approx(1 / 3)
    # CED: 1/3 on [0, 0.04), 2/3 on [0.04, 0.08] -> area / 0.08 = (1/3 * 0.5 + 2/3 * 0.5) = 0.5
    assert auc == pytest.approx(0.5, abs=2e-3)


def test_accuracy_ignores_missing_labels_and_is_nan_without_any():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 5.0]])
    assert accuracy(logits, torch.tensor([0, 0, -1, 1])) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(logits, torch.full((4,), -1)))


def test_landmark_consistency_takes_the_models_preferred_assignment():
    centres = torch.tensor([[[10.0, 10.0], [40.0, 40.0]]]).repeat(4, 1, 1)  # (triangle, square)
    swapped = centres.flip(1)
    assert landmark_consistency(swapped, centres) == 1.0  # landmark 1 always on the square: consistent
    mixed = torch.cat([centres[:2], swapped[2:]])
    assert landmark_consistency(mixed, centres) == 0.5
