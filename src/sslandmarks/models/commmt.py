"""Comm-MT (Fig. 5, Table S5): the "common" multi-task baseline.

A conv stack with two 2x2 poolings, shared FC layers, then one linear branch per attribute head and
a landmark branch that regresses the 2K coordinates directly (no heatmaps: ``heatmaps`` is a
``(B, K, 1, 1)`` zero placeholder to keep the shared output contract).
With the Blocks widths (``depth=6``): five 9x9 convs, pool, one 9x9 conv, pool, 1x1 convs, FC 256 x 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslandmarks.config import ModelConfig
from sslandmarks.coords import from_unit
from sslandmarks.models.common import ModelOutput, conv_block, head_outputs, mlp


class CommMT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, w = cfg.input_size
        self.k = cfg.num_landmarks
        self.register_buffer("size", torch.tensor([w, h], dtype=torch.float32), persistent=False)
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for _ in range(max(cfg.depth - 1, 1)):
            layers += conv_block(cin, cfg.width, cfg.kernel, cfg.batchnorm)
            cin = cfg.width
        layers += [nn.MaxPool2d(2), *conv_block(cin, cfg.width, cfg.kernel, cfg.batchnorm), nn.MaxPool2d(2)]
        for width in cfg.pointwise:
            layers += conv_block(cin, width, 1, cfg.batchnorm)
            cin = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = cin * (h // 4) * (w // 4)
        hidden = cfg.mlp_hidden or (256,)
        self.shared = mlp(flat, hidden[:-1], hidden[-1], cfg.dropout)
        self.shared.append(nn.ReLU(inplace=True))
        if cfg.dropout > 0:
            self.shared.append(nn.Dropout(cfg.dropout))
        self.landmark_head = nn.Linear(hidden[-1], 2 * self.k)
        self.heads = nn.ModuleDict({hd.name: nn.Linear(hidden[-1], head_outputs(hd)) for hd in cfg.heads})

    def forward(self, images: Tensor) -> ModelOutput:
        z = self.shared(self.features(images))
        # regress coordinates in [-1, 1]-normalised units, returned in input pixels
        u = self.landmark_head(z).float().reshape(-1, self.k, 2)
        landmarks = from_unit(u, self.size)
        heatmaps = landmarks.new_zeros(landmarks.shape[0], self.k, 1, 1)
        return ModelOutput(heatmaps, landmarks, {name: head(z) for name, head in self.heads.items()})


def build_commmt(cfg: ModelConfig) -> CommMT:
    return CommMT(cfg)
