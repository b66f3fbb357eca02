"""Run a model over a dataset and score it: pixel error, NME, per-landmark error, attribute accuracy."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from sslandmarks.config import Config
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.sources import source
from sslandmarks.metrics import accuracy, landmark_consistency, landmark_metrics


@torch.no_grad()
def predict_all(model: nn.Module, images: Tensor, batch_size: int = 256) -> tuple[Tensor, dict[str, Tensor]]:
    """Landmarks ``(N, K, 2)`` and attribute outputs (name -> ``(N, C)``) for uint8 ``images``, on CPU."""
    from sslandmarks.train import to_input

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lms, attrs = [], {}
    for i in range(0, images.shape[0], batch_size):
        out = model(to_input(images[i : i + batch_size].to(device)))
        lms.append(out.landmarks.float().cpu())
        for k, v in out.attributes.items():
            attrs.setdefault(k, []).append(v.float().cpu())
    model.train(was_training)
    return torch.cat(lms), {k: torch.cat(v) for k, v in attrs.items()}


def evaluate_data(model: nn.Module, data: LandmarkData, cfg: Config, batch_size: int = 256) -> dict:
    """Metrics of ``model`` on ``data`` (see DESIGN.md: n_images, mean_error_px, nme, normalizer, ...)."""
    pred, attrs = predict_all(model, data.images, batch_size)
    gt = data.landmarks.cpu()
    src = source(cfg.data.name)
    out = landmark_metrics(pred, gt, cfg.model.input_size, src.normalizer)
    class_heads = {k: v for k, v in attrs.items() if data.kinds.get(k) == "class"}
    if class_heads:
        out["attribute_accuracy"] = {k: accuracy(v, data.attributes[k].cpu()) for k, v in class_heads.items()}
    if src.hidden_landmarks:
        out["landmark_consistency"] = landmark_consistency(pred, gt)
    return out


def write_metrics(metrics: dict, path: str | Path) -> None:
    """Write JSON atomically (NaN becomes null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(clean(metrics), indent=2))
    os.replace(tmp, path)


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None, split: str = "test") -> dict:
    """Metrics of a checkpoint on ``data`` (default: the checkpoint's own synthetic dataset, ``split``)."""
    from sslandmarks.data.sources import SOURCES
    from sslandmarks.errors import UserError
    from sslandmarks.checkpoint import model_from_checkpoint

    model, cfg = model_from_checkpoint(checkpoint)
    name = data or cfg.data.name
    if name not in SOURCES:
        raise UserError(f"--data {name!r}: not a known dataset; use one of {', '.join(SOURCES)}")
    if name != cfg.data.name:
        raise UserError(f"--data {name!r}: the checkpoint was trained on {cfg.data.name!r}")
    d = cfg.data
    size = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
    return evaluate_data(model, SOURCES[name].make(size, d.seed, split), cfg)
