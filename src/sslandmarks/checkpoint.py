"""Checkpoints: written atomically, loaded with ``weights_only=True``, rebuilt into models from their config."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from sslandmarks.config import Config, from_dict
from sslandmarks.errors import UserError
from sslandmarks.models import build_model
from sslandmarks.outputs import atomic_path
from sslandmarks.pretrained import PRETRAINED, pretrained_path


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic write (:func:`~sslandmarks.outputs.atomic_path`: temporary file, fsync, rename over ``path``).

    A kill at any moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``: pickled objects are refused and nothing in them runs."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} does not exist: pass RUN_DIR/checkpoints/best.ckpt")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated file, not a checkpoint at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            first = "it holds pickled Python objects, which are refused for safety"
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{p}: not an sslandmarks checkpoint (no model weights or config inside)")
    return state


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model a checkpoint was trained with, in eval mode, and its config."""
    state = load_checkpoint(path)
    try:
        cfg = from_dict(state["config"])
    except UserError as e:
        raise UserError(f"{path}: its config is not valid for this version ({e})") from None
    model = build_model(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match the model in its config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), cfg


def init_weights(model: nn.Module, source: str, verbose: bool = True) -> list[str]:
    """Copy into ``model`` every tensor of ``source`` (a checkpoint path or a bundled model name) whose
    name and shape match; returns the names left at their fresh initialisation (reported on stderr)."""
    path = pretrained_path(source) if source in PRETRAINED else source
    if not Path(path).is_file():
        raise UserError(f"train.init={source!r} is neither a checkpoint file nor a bundled model name "
                        "(`sslandmarks models` lists them)")
    theirs = load_checkpoint(path)["model"]
    ours = model.state_dict()
    keep = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if all(k.endswith("num_batches_tracked") for k in keep):
        raise UserError(f"train.init={source!r}: none of its weights fit this config's model "
                        "(a different architecture or width)")
    model.load_state_dict(keep, strict=False)
    fresh = [k for k in ours if k not in keep]
    if verbose:
        extra = f"; fresh: {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''}" if fresh else ""
        print(f"init: {len(keep)} of {len(ours)} tensors from {path}{extra}", file=sys.stderr)
    return fresh
