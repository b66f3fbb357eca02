"""Models, each built from a :class:`~sslandmarks.config.ModelConfig`; all return a
:class:`~sslandmarks.models.common.ModelOutput`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sslandmarks.config import ModelConfig
from sslandmarks.errors import UserError
from sslandmarks.models.commmt import build_commmt
from sslandmarks.models.common import ModelOutput
from sslandmarks.models.heatmapmt import build_heatmapmt
from sslandmarks.models.rcn import build_rcn, build_rcn_plus
from sslandmarks.models.seqmt import build_seqmt

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "seqmt": build_seqmt,
    "commmt": build_commmt,
    "heatmapmt": build_heatmapmt,
    "rcn": build_rcn,
    "rcn+": build_rcn_plus,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODELS:
        raise UserError(f"model.name={cfg.name!r} is unknown: use one of {', '.join(MODELS)}")
    return MODELS[cfg.name](cfg)


__all__ = ["MODELS", "ModelOutput", "build_model"]
