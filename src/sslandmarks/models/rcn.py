"""Recombinator Networks (Honari et al., CVPR 2016) and RCN+ (Fig. S3 of the 2018 paper).

An encoder of 3x3 convs with 2x2 max-pooling down to ``levels`` halvings, and a decoder that upsamples
(bilinear) and *concatenates* the encoder map of the same resolution before two more 3x3 convs, back
to full resolution, where a last conv gives the K landmark maps.
- ``rcn``: softmax over all pixels, trained with cross-entropy on the ground-truth pixel, arg-max readout.
- ``rcn+``: soft-argmax (beta) and the squared-distance landmark loss, so ELT and attribute heads on the
  coordinates apply (as in Seq-MT).
Widths: ``width`` maps per layer (64 on 300-W, 70 on AFLW); ``levels`` halvings (4: 80 -> 5).
``stem_stride`` s > 1 (the fast CPU face models) puts a stride-s conv first, so every layer runs at 1/s of
the input resolution and the heatmaps are ``(H/s, W/s)``. Its kernel is s + 2 with padding 1, so heatmap
pixel i is centred on input pixel s*i + (s-1)/2, exactly where ``coords.heatmap_to_image`` puts it
(a 3x3 kernel at stride 2 would centre it on 2i, half an input pixel away).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslandmarks.config import ModelConfig
from sslandmarks.coords import heatmap_to_image, to_unit
from sslandmarks.models.common import ModelOutput, conv_block, head_outputs, mlp
from sslandmarks.softargmax import hard_argmax, soft_argmax


class RCN(nn.Module):
    def __init__(self, cfg: ModelConfig, plus: bool = True) -> None:
        super().__init__()
        self.plus = plus
        self.beta = cfg.beta
        h, w = cfg.input_size
        self.register_buffer("size", torch.tensor([w, h], dtype=torch.float32), persistent=False)
        width, bn = cfg.width, cfg.batchnorm
        levels, self.stride = cfg.levels, cfg.stem_stride
        if self.stride < 1 or h % self.stride or w % self.stride:
            raise ValueError(f"input {h}x{w} must be divisible by model.stem_stride={self.stride}")
        if self.stride > 1 and not plus:
            raise ValueError("stem_stride > 1 needs rcn+ (RCN's pixel cross-entropy is at input resolution)")
        cin = cfg.in_channels
        self.stem = nn.Identity()
        if self.stride > 1:
            stem = nn.Conv2d(cin, width, self.stride + 2, stride=self.stride, padding=1, bias=not bn)
            self.stem = nn.Sequential(stem, *([nn.BatchNorm2d(width)] if bn else []), nn.ReLU(inplace=True))
            cin = width
        self.down = nn.ModuleList(
            [nn.Sequential(*conv_block(cin if i == 0 else width, width, 3, bn)) for i in range(levels)]
        )
        self.bottom = nn.Sequential(*conv_block(width, width, 3, bn), *conv_block(width, width, 3, bn))
        self.up = nn.ModuleList(
            [nn.Sequential(*conv_block(2 * width, width, 3, bn), *conv_block(width, width, 3, bn))
             for _ in range(levels)]
        )
        self.maps = nn.Sequential(*conv_block(width, cfg.num_landmarks, cfg.head_kernel, False, relu=False))
        k = cfg.num_landmarks
        self.heads = nn.ModuleDict(
            {hd.name: mlp(2 * k, cfg.mlp_hidden, head_outputs(hd), cfg.dropout) for hd in cfg.heads}
        )

    def heatmaps(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W)`` -> pre-softmax maps ``(B, K, H / stem_stride, W / stem_stride)``."""
        skips, x = [], self.stem(images)
        for conv in self.down:
            x = conv(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for conv, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = conv(torch.cat([x, skip], dim=1))
        return self.maps(x)

    def forward(self, images: Tensor) -> ModelOutput:
        heatmaps = self.heatmaps(images)
        landmarks = soft_argmax(heatmaps, self.beta)[0] if self.plus else hard_argmax(heatmaps)
        if self.stride > 1:
            landmarks = heatmap_to_image(landmarks, self.stride)
        z = to_unit(landmarks, self.size).flatten(1)
        return ModelOutput(heatmaps, landmarks, {name: head(z) for name, head in self.heads.items()})


def build_rcn(cfg: ModelConfig) -> RCN:
    return RCN(cfg, plus=False)


def build_rcn_plus(cfg: ModelConfig) -> RCN:
    return RCN(cfg, plus=True)
