"""Training on a mix of sources with different landmark layouts (issue 18): 68-point faces with full supervision,
5-point faces through the fixed map of the predicted 68 points, per-source counts in every batch, and crops
jittered as a face detector's boxes scatter. Generated data only."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sslandmarks.config import LossConfig, from_dict
from sslandmarks.data.augment import augment
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.detect import layout_frame
from sslandmarks.data.mix import mix_sources
from sslandmarks.data.sources import load_splits
from sslandmarks.data.splits import semi_supervised
from sslandmarks.errors import UserError
from sslandmarks.losses import SMOOTHING_PX, landmark_loss, mapped_landmark_loss
from sslandmarks.specs import POINT_MAPS, SPECS, mtfl5_from_300w68, point_map
from sslandmarks.train import Batches, check_run, compute_losses, fit

# the model points MTFL's five points are made of: eye contours, nose tip, mouth corners
MAPPED = sorted({i for group in POINT_MAPS[("300w-68", "mtfl-5")] for i in group})
HEADS = [{"name": "pose", "kind": "class", "classes": 5}, {"name": "smile", "kind": "class", "classes": 2}]


def write_faces(root: Path, n68: int = 8, n5: int = 12) -> None:
    """``root/faces68``: ``n68`` 48x48 photos with 68 points (.pts); ``root/mtfl.txt``: ``n5`` with 5 points and
    MTFL's four attributes (1-based)."""
    rng = np.random.default_rng(0)
    (root / "faces68").mkdir(parents=True)
    for i in range(n68):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "faces68" / f"f{i}.png")
        pts = rng.uniform(12, 36, (68, 2)) + 1  # iBUG is 1-based
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
        (root / "faces68" / f"f{i}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    lines = []
    for i in range(n5):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / f"m{i}.png")
        xs, ys = rng.uniform(18, 30, 5), rng.uniform(18, 30, 5)
        attrs = [rng.integers(1, 3), rng.integers(1, 3), rng.integers(1, 3), rng.integers(1, 6)]
        lines.append(" ".join([f"m{i}.png", *(f"{v:.2f}" for v in [*xs, *ys]), *map(str, attrs)]))
    (root / "mtfl.txt").write_text("\n".join(lines) + "\n")


def mixed_config(root: Path, **sections):
    """A tiny Seq-MT on 32x32 crops predicting 68 points: the 68-point faces as the main data, the MTFL
    faces as an extra source (4 per step, each point at weight 0.5) labelling the pose and smile heads."""
    data = {"name": "files", "format": "pts", "train_path": [str(root / "faces68")],
            "test_path": [str(root / "faces68")], "val_fraction": 0.25, "spec": "300w-68", "crop_margin": 0.15,
            "extra_sources": [{"format": "mtfl", "train_path": [str(root / "mtfl.txt")], "spec": "mtfl-5",
                               "batch": 4, "weight": 0.5, "attributes": ["pose", "smile"]}]}
    model = {"name": "seqmt", "in_channels": 1, "input_size": [32, 32], "num_landmarks": 68, "kernel": 5,
             "width": 4, "depth": 2, "pointwise": [4], "mlp_hidden": [16], "heads": HEADS}
    loss = {"variant": "L+ELT+A", "elt_on": "all"}
    train = {"steps": 4, "batch_labelled": 4, "batch_unlabelled": 0, "eval_every": 2, "log_every": 2,
             "checkpoint_every": 2}
    cfg = {"data": data, "model": model, "loss": loss, "train": train}
    for name, values in sections.items():
        cfg[name] = {**cfg[name], **values}
    return from_dict(cfg)


class Spy(nn.Module):
    """The model, keeping its last output's landmarks with their gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        out.landmarks.retain_grad()
        self.landmarks = out.landmarks
        return out


def test_point_map_is_the_mean_of_the_eye_contours_and_so_on():
    m = point_map("300w-68", "mtfl-5", 68)
    assert m.shape == (5, 68) and np.allclose(m.sum(1), 1) and np.allclose(m[0, 36:42], 1 / 6)
    pts = np.random.default_rng(1).uniform(0, 100, (68, 2))
    assert np.allclose(mtfl5_from_300w68(pts), [pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
    assert np.array_equal(point_map("mtfl-5", "mtfl-5", 5), np.eye(5))
    with pytest.raises(UserError, match="does not determine"):
        point_map("mtfl-5", "300w-68", 5)
    # mirroring commutes with the map: the left eye centre of a mirrored face is its right eye's
    p68, p5 = SPECS["300w-68"].flip, SPECS["mtfl-5"].flip
    mirrored68, mirrored5 = np.empty_like(pts), np.empty((5, 2))
    mirrored68[list(p68)], mirrored5[list(p5)] = pts, m @ pts
    assert np.allclose(m @ mirrored68, mirrored5)


def test_a_five_point_face_is_cropped_from_the_box_its_68_points_would_have():
    there = layout_frame("mtfl-5", "300w-68")
    dx, dy, ds = layout_frame("300w-68", "mtfl-5")
    assert layout_frame("300w-68", "300w-68") is None and there[1] > 0 and there[2] > 1.9  # lower, twice the size
    assert math.isclose(ds * there[2], 1) and math.isclose(dx + ds * there[0], 0, abs_tol=1e-12)
    with pytest.raises(UserError, match="no measured box relation"):
        layout_frame("aflw-19", "300w-68")


def test_mapped_landmark_loss_by_hand():
    """Identity maps at weight 1 are the plain landmark loss; a 5-point row counts its 5 points at its weight."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 68, 2, generator=g) * 30, torch.rand(3, 68, 2, generator=g) * 30
    target[0, :10] = float("nan")
    eye = torch.eye(68).expand(3, 68, 68)
    assert torch.allclose(mapped_landmark_loss(pred, target, eye, torch.ones(3)),
                          landmark_loss(pred, target, ~torch.isnan(target).any(-1)))
    m = torch.zeros(68, 68)
    m[:5] = torch.from_numpy(point_map("300w-68", "mtfl-5", 68)).float()
    five = target.clone()
    five[2, 5:] = float("nan")
    maps, weights = torch.stack([eye[0], eye[1], m]), torch.tensor([1.0, 1.0, 0.25])
    by_hand = (((target[0, 10:] - pred[0, 10:]) ** 2).sum() + ((target[1] - pred[1]) ** 2).sum()
               + 0.25 * ((five[2, :5] - m[:5] @ pred[2]) ** 2).sum()) / (58 + 68 + 0.25 * 5)
    assert torch.allclose(mapped_landmark_loss(pred, five, maps, weights), by_hand)
    def dist(d: torch.Tensor) -> torch.Tensor:  # the smoothed distance, written out
        return ((d**2).sum(-1) + SMOOTHING_PX**2).sqrt() - SMOOTHING_PX

    by_hand = (dist(target[0, 10:] - pred[0, 10:]).sum() + dist(target[1] - pred[1]).sum()
               + 0.25 * dist(five[2, :5] - (m[:5] @ pred[2])).sum()) / (58 + 68 + 0.25 * 5)
    assert torch.allclose(mapped_landmark_loss(pred, five, maps, weights, "euclidean"), by_hand)


def test_tiny_mixed_layout_run_and_the_five_point_faces_reach_only_their_five_points(tmp_path):
    """The issue's test: 68-point and 5-point faces train together for a few steps (L+ELT+A, attribute heads
    that only the 5-point source labels); the 5-point faces' landmark loss has gradient exactly on the 14
    predicted points their 5 points are made of, and the loss is the hand-computed weighted mean."""
    write_faces(tmp_path / "data")
    cfg = mixed_config(tmp_path / "data")
    splits = load_splits(cfg)
    assert [len(x) for x in splits.extra] == [12] and splits.extra[0].landmarks.shape == (12, 5, 2)
    metrics, model = fit(cfg, splits, tmp_path / "run", progress=False)
    assert math.isfinite(metrics["mean_error_px"])
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,total,landmark,attribute,elt") and len(log) == 3  # steps 2 and 4
    assert all(math.isfinite(float(v)) for v in log[-1].split(",")[2:6])

    plain = replace(cfg, loss=replace(cfg.loss, variant="L"))  # the landmark term alone
    train = mix_sources(semi_supervised(splits.train, plain), splits.extra, plain)
    batch, _ = Batches(train, plain, 0, 1).at(0)
    assert batch.source.tolist() == [0] * 4 + [1] * 4
    spy = Spy(model).train()
    losses = compute_losses(spy, batch, LossConfig(variant="L"), "l2")
    losses["landmark"].backward()
    grad, pred = spy.landmarks.grad, spy.landmarks.detach()
    unmapped = [i for i in range(68) if i not in MAPPED]
    assert torch.all(grad[4:, unmapped] == 0)  # the other 54 points get nothing from the 5-point faces
    assert torch.all(grad[4:, MAPPED].abs().sum(-1) > 0) and torch.all(grad[:4].abs().sum(-1) > 0)
    m = torch.from_numpy(point_map("300w-68", "mtfl-5", 68)).float()
    five = batch.landmarks[4:, :5]
    by_hand = (((batch.landmarks[:4] - pred[:4]) ** 2).sum() + 0.5 * ((five - m @ pred[4:]) ** 2).sum()) / (
        4 * 68 + 0.5 * 4 * 5)
    assert torch.allclose(losses["landmark"], by_hand, rtol=1e-5)


def generated(n: int, k: int, size: int = 32, labelled: int | None = None) -> LandmarkData:
    """``n`` blank ``size``-pixel images with ``k`` landmarks, of which the first ``labelled`` keep them."""
    lms = torch.full((n, k, 2), size / 2)
    if labelled is not None:
        lms[labelled:] = float("nan")
    return LandmarkData(torch.zeros(n, 1, size, size, dtype=torch.uint8), lms)


@pytest.mark.parametrize("world", [1, 2])
def test_every_batch_holds_each_source_in_its_configured_count(tmp_path, world):
    """Per step: train.batch_labelled labelled and train.batch_unlabelled unlabelled main faces, then
    data.extra_sources[i].batch faces of each source (a rank takes its share of each); every face of a
    source is drawn once per pass over it."""
    two = {"extra_sources": [
        {"format": "mtfl", "train_path": "a.txt", "spec": "mtfl-5", "batch": 6},
        {"format": "pts", "train_path": "b", "spec": "300w-68", "batch": 2, "labelled": False}]}
    cfg = mixed_config(tmp_path, data=two, train={"batch_labelled": 4, "batch_unlabelled": 2})
    main = generated(20, 68, labelled=12)
    train = mix_sources(main, [generated(30, 5), generated(10, 68)], cfg)
    assert train.landmarks.shape == (60, 68, 2) and train.source.bincount().tolist() == [20, 30, 10]
    assert not train.landmark_mask[50:].any()  # labelled: false keeps images only
    batches = Batches(train, cfg, 0, world)
    seen = []
    for step in range(5):  # 5 steps x 6 = one pass over the 30 faces of source 1
        batch, _ = batches.at(step)
        labelled = batch.landmark_mask.any(-1)
        counts = [int((labelled & (batch.source == 0)).sum()), int((~labelled & (batch.source == 0)).sum()),
                  int((batch.source == 1).sum()), int((batch.source == 2).sum())]
        assert counts == [4 // world, 2 // world, 6 // world, 2 // world]
        seen += batches.streams[2].batch_at(step).tolist()
    assert sorted(seen) == list(range(20, 50))


def test_box_jitter_moves_and_scales_crops_with_the_configured_spread_and_is_off_by_default(tmp_path):
    """Four points around the centre of 64x64 crops: after the jitter their centre moves by -d / s and their
    spread scales by 1 / s, so d / side and log s are recovered per crop; over n crops their standard deviations
    match the configured ones within 5 standard errors (sigma / sqrt(2 n)), and their means are 0 within 5
    sigma / sqrt(n)."""
    shift, scale, margin, size = (0.1, 0.05), 0.08, 0.25, 64
    jitter = {"box_jitter": {"shift": list(shift), "scale": scale}, "crop_margin": margin, "extra_sources": []}
    model = {"input_size": [size, size]}
    cfg = mixed_config(tmp_path, data=jitter, model=model, loss={"variant": "L"}, train={"batch_labelled": 64})
    c, a = (size - 1) / 2, 4.0
    lms = torch.tensor([[c - a, c], [c + a, c], [c, c - a], [c, c + a]]).expand(64, 4, 2).clone()
    images = torch.zeros(64, 1, size, size, dtype=torch.uint8)
    images[:, 0, 28:36, 28:36] = 255
    data = LandmarkData(images, lms)
    batches = Batches(data, cfg, 0, 1)
    out = [batches.at(step)[0] for step in range(40)]
    pts = torch.cat([b.landmarks for b in out]).double()  # (n, 4, 2)
    n, side = len(pts), size / (1 + 2 * margin)
    s = 2 * a / (pts[:, 1, 0] - pts[:, 0, 0])
    d = (c - pts.mean(1)) * s[:, None] / side
    for values, sigma in ((d[:, 0], shift[0]), (d[:, 1], shift[1]), (s.log(), scale)):
        assert abs(values.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n)
        assert abs(values.mean().item()) < 5 * sigma / math.sqrt(n)
    assert all(not torch.equal(b.images, images) for b in out)  # the crops themselves move
    off = Batches(data, mixed_config(tmp_path, data={"extra_sources": []}, model=model, loss={"variant": "L"}), 0, 1)
    assert off.jitter is None and torch.equal(off.at(0)[0].images, images[:4])


def test_a_mirrored_five_point_face_is_renumbered_by_its_own_layout(tmp_path):
    """augment_flip on mixed data: each row is renumbered by its source's flip permutation."""
    cfg = mixed_config(tmp_path)
    main, five = generated(2, 68), generated(2, 5)
    main.landmarks[:] = torch.rand(2, 68, 2) * 30
    five.landmarks[:] = torch.tensor([[10.0, 12], [20, 12], [15, 16], [11, 20], [19, 20]])
    train = mix_sources(main, [five], cfg)
    batch = train.subset(torch.tensor([0, 2]))
    flip = torch.tensor([[-1.0, 0, 31], [0, 1, 0], [0, 0, 1]]).expand(2, 3, 3)
    out = augment(batch, flip, torch.tensor([True, True]), batch.layouts.flips[batch.source])
    assert torch.allclose(out.landmarks[1, :5], torch.tensor([[11.0, 12], [21, 12], [16, 16], [12, 20], [20, 20]]))
    assert torch.isnan(out.landmarks[1, 5:]).all()
    mirrored = 31 - batch.landmarks[0, :, 0]
    assert torch.allclose(out.landmarks[0, list(SPECS["300w-68"].flip), 0], mirrored)


@pytest.mark.parametrize("data, needle", [
    ({"name": "blocks"}, "need data.name=files"),
    ({"extra_sources": [{"format": "mtfl", "spec": "mtfl-5", "batch": 2}]}, "needs a format"),
    ({"extra_sources": [{"format": "mtfl", "train_path": "a", "spec": "mtfl-6", "batch": 2}]}, "is unknown"),
    ({"extra_sources": [{"format": "csv", "train_path": "a", "spec": "aflw-19", "batch": 2}]}, "does not determine"),
    ({"extra_sources": [{"format": "mtfl", "train_path": "a", "spec": "mtfl-5"}]}, "batch=0"),
    ({"extra_sources": [{"format": "mtfl", "train_path": "a", "spec": "mtfl-5", "batch": 2, "weight": -1}]},
     "must be >= 0"),
    ({"extra_sources": [{"format": "mtfl", "train_path": "a", "spec": "mtfl-5", "batch": 2,
                         "attributes": ["gender"]}]}, "'gender' is not a model head"),
    ({"extra_sources": [{"format": "mtfl", "train_path": "a", "spec": "mtfl-5", "batch": 2, "wieght": 1}]},
     "unknown config key 'data.extra_sources[0].wieght'"),
    ({"box_jitter": {"shift": [0.1, -0.1]}}, "give values >= 0"),
    ({"box_jitter": {"shift": 0.1}}, "data.box_jitter.shift' must be a list"),
])
def test_bad_sources_and_jitter_are_one_line_errors(tmp_path, data, needle):
    with pytest.raises(UserError) as e:
        mixed_config(tmp_path, data=data)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_heatmap_model_cannot_learn_from_another_layout(tmp_path):
    cfg = mixed_config(tmp_path, model={"name": "rcn", "kernel": 9, "depth": 6, "pointwise": [8], "levels": 2},
                       loss={"variant": "L+A"})
    with pytest.raises(UserError, match="data.extra_sources: rcn learns its landmarks from heatmaps"):
        check_run(cfg, tmp_path / "run", resume=False)


def test_elt_on_unlabelled_faces_may_take_them_from_an_extra_source(tmp_path):
    """All main faces labelled, an extra source of images only: ELT on unlabelled faces has those to warp."""
    images_only = {"extra_sources": [{"format": "pts", "train_path": "b", "spec": "300w-68", "batch": 2,
                                      "labelled": False}]}
    cfg = mixed_config(tmp_path, data=images_only, loss={"variant": "L+ELT", "elt_on": "unlabelled"},
                       train={"batch_unlabelled": 2})
    batch, transforms = Batches(mix_sources(generated(8, 68), [generated(6, 68)], cfg), cfg, 0, 1).at(0)
    assert batch.source.tolist() == [0] * 4 + [1] * 2 and transforms.shape == (6, 3, 3)
    assert not batch.landmark_mask[4:].any()
    with pytest.raises(UserError, match="leaves none"):
        Batches(generated(8, 68), replace(cfg, data=replace(cfg.data, extra_sources=())), 0, 1)
