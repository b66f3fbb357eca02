"""Models, each built from a :class:`~sslandmarks.config.ModelConfig`; all return a
:class:`~sslandmarks.models.common.ModelOutput`. What the training loop needs to know about a model is
declared in :data:`MODELS`, never probed from the module."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from sslandmarks.config import Config, ModelConfig, variant_terms
from sslandmarks.errors import UserError
from sslandmarks.models.commmt import build_commmt
from sslandmarks.models.common import ModelOutput
from sslandmarks.models.heatmapmt import build_heatmapmt
from sslandmarks.models.rcn import build_rcn, build_rcn_plus
from sslandmarks.models.seqmt import build_seqmt
from sslandmarks.models.syncbn import sync_batchnorm


class Model(NamedTuple):
    build: Callable[[ModelConfig], nn.Module]
    landmark_loss: str  # "l2": squared distance of the coordinates; "heatmap_ce": pixel cross-entropy on the maps
    elt: bool  # the landmarks are differentiable in the image (soft-argmax, regression): ELT can train the model
    reads: frozenset[str]  # the model.* keys the architecture reads; setting any other one is refused


_EVERY = frozenset({"name", "in_channels", "input_size", "num_landmarks", "batchnorm", "mlp_hidden", "dropout",
                    "heads"})
_CONV_STACK = frozenset({"kernel", "width", "depth", "pointwise"})  # the full-resolution conv stack (Tables S5-S9)
MODELS: dict[str, Model] = {
    "seqmt": Model(build_seqmt, "l2", True, _EVERY | _CONV_STACK | {"head_kernel", "beta"}),
    "commmt": Model(build_commmt, "l2", True, _EVERY | _CONV_STACK),
    # arg-max readouts: no gradient reaches the maps through the coordinates, so no ELT
    "heatmapmt": Model(build_heatmapmt, "heatmap_ce", False, _EVERY | _CONV_STACK | {"head_kernel"}),
    "rcn": Model(build_rcn, "heatmap_ce", False, _EVERY | {"width", "levels", "stem_stride", "head_kernel"}),
    "rcn+": Model(build_rcn_plus, "l2", True, _EVERY | {"width", "levels", "stem_stride", "head_kernel", "beta"}),
}


def model_entry(name: str) -> Model:
    if name not in MODELS:
        raise UserError(f"model.name={name!r} is unknown: use one of {', '.join(MODELS)}")
    return MODELS[name]


def build_model(cfg: ModelConfig) -> nn.Module:
    return model_entry(cfg.name).build(cfg)


def check_config(cfg: Config) -> None:
    """What a training config asks of its model that the model cannot do: ELT with an arg-max readout (the
    term would have no gradient), extra sources with no coordinate outputs to map, or a model.* key the model
    never reads set away from its default (it would silently do nothing). Checkpoints are not checked: their
    configs hold every key."""
    entry, m = model_entry(cfg.model.name), cfg.model
    if "ELT" in variant_terms(cfg.loss.variant) and not entry.elt:
        raise UserError(f"loss.variant={cfg.loss.variant!r}: {m.name} reads its landmarks by arg-max, which has no "
                        "gradient, so ELT cannot train it: use a variant without ELT (e.g. L or L+A)")
    if cfg.data.extra_sources and entry.landmark_loss != "l2":
        raise UserError(f"data.extra_sources: {m.name} learns its landmarks from heatmaps, which faces annotated in "
                        "another layout cannot supervise: use a model with coordinate outputs (seqmt, commmt, rcn+)")
    default = ModelConfig()
    ignored = [k for k in ModelConfig.__dataclass_fields__
               if k not in entry.reads and getattr(m, k) != getattr(default, k)]
    if ignored:
        raise UserError(f"model.{ignored[0]} is set, but {m.name} does not read it: remove it from the config "
                        f"({m.name} reads {', '.join(sorted(entry.reads - {'name'}))})")


__all__ = ["MODELS", "Model", "ModelOutput", "build_model", "check_config", "model_entry", "sync_batchnorm"]
