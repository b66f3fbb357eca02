"""Checkpoints: written atomically, loaded with ``weights_only=True``, rebuilt into models from their config."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sslandmarks.config import Config, from_dict
from sslandmarks.errors import UserError


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic write: a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


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
    from sslandmarks.models import build_model

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
