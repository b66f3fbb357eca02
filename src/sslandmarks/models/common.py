"""The output contract shared by every model, and small building blocks."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from sslandmarks.config import HeadConfig, ModelConfig


class ModelOutput(NamedTuple):
    """``heatmaps (B, K, h, w)`` pre-softmax maps, ``landmarks (B, K, 2)`` ``(x, y)`` in input pixels,
    ``attributes``: one ``(B, C)`` logits / ``(B, D)`` regression tensor per named head (may be empty)."""

    heatmaps: Tensor
    landmarks: Tensor
    attributes: dict[str, Tensor]


def conv_block(cin: int, cout: int, kernel: int, batchnorm: bool, relu: bool = True) -> list[nn.Module]:
    """``kernel x kernel`` SAME convolution (+ BatchNorm) (+ ReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def full_resolution_maps(cfg: ModelConfig) -> nn.Sequential:
    """The full-resolution landmark network of Tables S6-S9: ``depth`` SAME convs of ``kernel x kernel x
    width``, 1x1 convs of the ``pointwise`` widths, then a ``head_kernel`` conv to ``num_landmarks`` maps
    (no ReLU there, so that the spatial softmax sees signed scores)."""
    layers: list[nn.Module] = []
    cin = cfg.in_channels
    for _ in range(cfg.depth):
        layers += conv_block(cin, cfg.width, cfg.kernel, cfg.batchnorm)
        cin = cfg.width
    for width in cfg.pointwise:
        layers += conv_block(cin, width, 1, cfg.batchnorm)
        cin = width
    layers += conv_block(cin, cfg.num_landmarks, cfg.head_kernel, batchnorm=False, relu=False)
    return nn.Sequential(*layers)


def mlp(cin: int, hidden: tuple[int, ...], cout: int, dropout: float) -> nn.Sequential:
    """FC layers with ReLU and dropout, then a linear output layer."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        cin = h
    layers.append(nn.Linear(cin, cout))
    return nn.Sequential(*layers)


def head_outputs(head: HeadConfig) -> int:
    return head.classes if head.kind == "class" else head.dims
