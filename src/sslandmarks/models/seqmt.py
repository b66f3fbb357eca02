"""Seq-MT (Fig. 2, Tables S7-S9): a full-resolution conv net, soft-argmax, then MLPs on the coordinates.

The attribute heads see *only* the predicted landmarks, so an attribute loss trains the conv net
through the soft-argmax: the paper's sequential multi-tasking.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslandmarks.config import ModelConfig
from sslandmarks.coords import to_unit
from sslandmarks.models.common import ModelOutput, full_resolution_maps, head_outputs, mlp
from sslandmarks.softargmax import soft_argmax


class SeqMT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.beta = cfg.beta
        h, w = cfg.input_size
        self.register_buffer("size", torch.tensor([w, h], dtype=torch.float32), persistent=False)
        self.localizer = full_resolution_maps(cfg)
        k = cfg.num_landmarks
        self.heads = nn.ModuleDict(
            {hd.name: mlp(2 * k, cfg.mlp_hidden, head_outputs(hd), cfg.dropout) for hd in cfg.heads}
        )

    def heatmaps(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W)`` -> pre-softmax maps ``(B, K, H, W)``."""
        return self.localizer(images)

    def forward(self, images: Tensor) -> ModelOutput:
        """``images (B, C, H, W)`` float -> :class:`ModelOutput` with maps at full resolution."""
        heatmaps = self.heatmaps(images)
        landmarks, _ = soft_argmax(heatmaps, self.beta)
        # The MLP reads coordinates scaled to [-1, 1] (a fixed affine map of the pixel coordinates).
        z = to_unit(landmarks, self.size).flatten(1)
        attributes = {name: head(z) for name, head in self.heads.items()}
        return ModelOutput(heatmaps, landmarks, attributes)


def build_seqmt(cfg: ModelConfig) -> SeqMT:
    return SeqMT(cfg)
