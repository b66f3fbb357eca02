"""Heatmap-MT (Fig. 6, Table S6): the heatmap multi-task baseline.

Full-resolution convs give K maps; the landmark branch is a softmax over all pixels of each map,
trained with cross-entropy on the ground-truth pixel (``MODELS["heatmapmt"].landmark_loss``) and read
out by arg-max (so ELT, which needs differentiable coordinates, does not apply). The classification
branch pools the pre-softmax maps: four (2x2 pool, conv) stages, then the FC layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from sslandmarks.config import ModelConfig
from sslandmarks.models.common import ModelOutput, conv_block, full_resolution_maps, head_outputs, mlp
from sslandmarks.softargmax import hard_argmax


class HeatmapMT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, w = cfg.input_size
        self.localizer = full_resolution_maps(cfg)
        branch: list[nn.Module] = []
        cin, ph, pw = cfg.num_landmarks, h, w
        for _ in range(4):
            branch += [nn.MaxPool2d(2), *conv_block(cin, cfg.width, cfg.kernel, cfg.batchnorm)]
            cin, ph, pw = cfg.width, ph // 2, pw // 2
        self.branch = nn.Sequential(*branch, nn.Flatten())
        flat = cin * max(ph, 1) * max(pw, 1)
        self.heads = nn.ModuleDict(
            {hd.name: mlp(flat, cfg.mlp_hidden, head_outputs(hd), cfg.dropout) for hd in cfg.heads}
        )

    def heatmaps(self, images: Tensor) -> Tensor:
        """``images (B, C, H, W)`` -> pre-softmax maps ``(B, K, H, W)``."""
        return self.localizer(images)

    def forward(self, images: Tensor) -> ModelOutput:
        heatmaps = self.heatmaps(images)
        landmarks = hard_argmax(heatmaps)
        z = self.branch(heatmaps) if self.heads else None
        return ModelOutput(heatmaps, landmarks, {name: head(z) for name, head in self.heads.items()})


def build_heatmapmt(cfg: ModelConfig) -> HeatmapMT:
    return HeatmapMT(cfg)
