"""A trained model on many images: batch prediction, test-time mirroring, probability maps, and scores.

Used by training (validation), ``evaluate``, ``predict``, the demo and the reproduction runner alike, so
that every figure is computed the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslandmarks.config import Config
from sslandmarks.data.dataset import LandmarkData, to_input
from sslandmarks.data.sources import hidden_landmarks, normalizer
from sslandmarks.geometry import apply_points, invert
from sslandmarks.metrics import accuracy, landmark_consistency, landmark_metrics
from sslandmarks.softargmax import spatial_softmax
from sslandmarks.specs import layout, mirror_perm


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_all(model: nn.Module, images: Tensor, batch_size: int = 256,
                flip_perm: tuple[int, ...] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Landmarks ``(N, K, 2)`` and attribute outputs (name -> ``(N, C)``) for uint8 ``images (N, C, H, W)``,
    on CPU, in eval mode (the model's mode is restored afterwards).

    With ``flip_perm`` (the layout's mirror permutation) each image is also predicted mirrored, and the
    mirrored landmarks, mapped back (``x -> W - 1 - x``, renumbered), are averaged with the direct ones
    (test-time mirroring; the attribute outputs are averaged too)."""
    was_training = model.training
    model.eval()
    device = _device(model)
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


@torch.no_grad()
def predict_maps(model: nn.Module, images: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Landmarks ``(N, K, 2)`` and the soft-argmax probability maps ``(N, K, h, w)`` (spatial softmax with
    temperature ``beta``) of uint8 ``images``, in one batch, in eval mode; on CPU."""
    model.eval()
    out = model(to_input(images.to(_device(model))))
    return out.landmarks.cpu(), spatial_softmax(out.heatmaps, beta).cpu()


def score_landmarks(pred: Tensor, data: LandmarkData, cfg: Config, norm: str | None = None) -> dict:
    """:func:`~sslandmarks.metrics.landmark_metrics` of landmarks ``pred (N, K, 2)`` (input pixels, from any
    predictor: PyTorch, ONNX Runtime) against ``data``'s, in the original images' pixels for cropped data."""
    pred, gt = in_source_pixels(pred, data)
    return landmark_metrics(pred, gt, cfg.model.input_size, norm or normalizer(cfg), layout(cfg.data.spec))


def in_source_pixels(pred: Tensor, data: LandmarkData) -> tuple[Tensor, Tensor]:
    """``pred`` and ``data``'s landmarks on the CPU, mapped back to the original images' pixels for cropped data."""
    pred, gt = pred.cpu(), data.landmarks.cpu()
    if data.from_source is not None:
        back = invert(data.from_source.cpu())
        pred, gt = apply_points(back, pred), apply_points(back, gt)
    return pred, gt


def evaluate_data(
    model: nn.Module, data: LandmarkData, cfg: Config, batch_size: int = 256, norm: str | None = None
) -> dict:
    """Metrics of ``model`` on ``data`` (see DESIGN.md: n_images, mean_error_px, nme, normalizer, ...),
    with test-time mirroring where ``data.test_flip`` asks for it.

    Cropped data (``from_source`` set) is scored in the pixels of the original images."""
    pred, attrs = predict_all(model, data.images, batch_size, mirror_perm(cfg.data.spec, cfg.data.test_flip))
    out = score_landmarks(pred, data, cfg, norm)
    class_heads = {k: v for k, v in attrs.items() if data.kinds.get(k) == "class"}
    if class_heads:
        out["attribute_accuracy"] = {k: accuracy(v, data.attributes[k].cpu()) for k, v in class_heads.items()}
    if hidden_landmarks(cfg):
        out["landmark_consistency"] = landmark_consistency(*in_source_pixels(pred, data))
    if data.names is not None and "per_image_nme" in out:
        out["per_image_file"] = list(data.names)  # beside per_image_nme: which file (and line) each figure is
    return out
