"""Run a model over a dataset and score it: pixel error, NME, per-landmark error, attribute accuracy."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from sslandmarks.config import Config
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.sources import flip_permutation, hidden_landmarks, normalizer, spec
from sslandmarks.metrics import accuracy, landmark_consistency, landmark_metrics


@torch.no_grad()
def predict_all(model: nn.Module, images: Tensor, batch_size: int = 256,
                flip_perm: tuple[int, ...] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Landmarks ``(N, K, 2)`` and attribute outputs (name -> ``(N, C)``) for uint8 ``images``, on CPU.

    With ``flip_perm`` (the layout's mirror permutation) each image is also predicted mirrored, and the
    mirrored landmarks, mapped back (``x -> W - 1 - x``, renumbered), are averaged with the direct ones
    (test-time mirroring; the attribute outputs are averaged too)."""
    from sslandmarks.train import to_input

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lms, attrs = [], {}
    for i in range(0, images.shape[0], batch_size):
        x = to_input(images[i : i + batch_size].to(device))
        out = model(x)
        lm, at = out.landmarks.float(), {k: v.float() for k, v in out.attributes.items()}
        if flip_perm is not None:
            mirrored = model(x.flip(-1))
            back = mirrored.landmarks.float().clone()
            back[..., 0] = x.shape[-1] - 1 - back[..., 0]
            lm = (lm + back[:, list(flip_perm)]) / 2  # original landmark j is the mirror's landmark flip[j]
            at = {k: (v + mirrored.attributes[k].float()) / 2 for k, v in at.items()}
        lms.append(lm.cpu())
        for k, v in at.items():
            attrs.setdefault(k, []).append(v.cpu())
    model.train(was_training)
    return torch.cat(lms), {k: torch.cat(v) for k, v in attrs.items()}


def mirror_perm(cfg: Config) -> tuple[int, ...] | None:
    """The mirror permutation when ``data.test_flip`` asks for test-time mirroring, else None."""
    return flip_permutation(cfg, "data.test_flip") if cfg.data.test_flip else None


def evaluate_data(
    model: nn.Module, data: LandmarkData, cfg: Config, batch_size: int = 256, norm: str | None = None
) -> dict:
    """Metrics of ``model`` on ``data`` (see DESIGN.md: n_images, mean_error_px, nme, normalizer, ...).

    Cropped data (``from_source`` set) is scored in the pixels of the original images."""
    from sslandmarks.geometry import apply_points, invert

    pred, attrs = predict_all(model, data.images, batch_size, mirror_perm(cfg))
    gt = data.landmarks.cpu()
    if data.from_source is not None:
        back = invert(data.from_source.cpu())
        pred, gt = apply_points(back, pred), apply_points(back, gt)
    out = landmark_metrics(pred, gt, cfg.model.input_size, norm or normalizer(cfg), spec(cfg))
    class_heads = {k: v for k, v in attrs.items() if data.kinds.get(k) == "class"}
    if class_heads:
        out["attribute_accuracy"] = {k: accuracy(v, data.attributes[k].cpu()) for k, v in class_heads.items()}
    if hidden_landmarks(cfg):
        out["landmark_consistency"] = landmark_consistency(pred, gt)
    return out


def guess_format(path: str) -> str:
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return "csv"
    if p.suffix.lower() == ".txt":
        return "mtfl"
    if p.suffix.lower() == ".json":
        return "coco"
    if p.suffix.lower() == ".ljson" or (p.is_dir() and any(p.glob("*.ljson")) and not any(p.glob("*.pts"))):
        return "ljson"
    return "pts"


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | None = None, split: str = "test", fmt: str | None = None,
    skip_bad: bool = False, detector: str | None = None,
) -> dict:
    """Metrics of a checkpoint on ``data``: annotated files (``fmt`` pts | mtfl | csv, guessed from the
    path when omitted; each face cropped from its ground-truth landmark box, or with ``detector="dlib"``
    from the face detector's box as ``predict`` does, missed faces listed under ``detector.missed``) or,
    by default, the test ``split`` of the checkpoint's own synthetic dataset. Skipped samples are listed
    under ``skipped``."""
    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.data.formats import Problems
    from sslandmarks.data.sources import FILES_NORMALIZER, SOURCES, check_landmark_count, read_files, spec
    from sslandmarks.errors import UserError

    model, cfg = model_from_checkpoint(checkpoint)
    if detector is not None and (data is None or data in SOURCES or cfg.data.name != "files"):
        raise UserError("--detector applies to models trained on face crops, scored on annotated photos (--data)")
    if data is not None and data not in SOURCES:
        problems = Problems(skip_bad)
        default = spec(cfg).default_normalizer if spec(cfg) is not None else FILES_NORMALIZER
        if detector is None:
            files = read_files(data, cfg, problems, fmt or guess_format(data))
            metrics = evaluate_data(model, files, cfg, norm=cfg.data.normalizer or default)
            return {**metrics, "skipped": problems.items}
        from sslandmarks.data.formats import read_annotations
        from sslandmarks.predict import detector_crops

        samples = read_annotations(data, fmt or guess_format(data), problems)
        m = cfg.model
        if samples:
            check_landmark_count(data, len(samples[0].landmarks), cfg)
        crops, missed = detector_crops(samples, m.input_size, m.in_channels, cfg.data.crop_margin, cfg.data.spec)
        metrics = evaluate_data(model, crops, cfg, norm=cfg.data.normalizer or default)
        return {**metrics, "detector": {"name": "dlib-hog", "faces": len(samples), "found": len(crops),
                                        "missed": missed}, "skipped": problems.items}
    name = data or cfg.data.name
    if name != cfg.data.name:
        raise UserError(f"--data {name!r}: the checkpoint was trained on {cfg.data.name!r}")
    if name not in SOURCES:
        raise UserError("the checkpoint was trained on files: pass --data PATH (and --format)")
    d = cfg.data
    size = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
    return evaluate_data(model, SOURCES[name].make(size, d.seed, split), cfg)
