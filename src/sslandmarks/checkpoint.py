"""Checkpoints: written atomically, loaded with ``weights_only=True``, rebuilt into models from their config."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from sslandmarks.config import Config, from_dict
from sslandmarks.errors import UserError
from sslandmarks.models import build_model
from sslandmarks.outputs import atomic_path
from sslandmarks.pretrained import PRETRAINED, pretrained_path

MAX_CHECKPOINT_BYTES = 1 << 30  # 1 GiB; the paper's models with optimiser state take a few MB


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic write (:func:`~sslandmarks.outputs.atomic_path`: temporary file, fsync, rename over ``path``).

    A kill at any moment leaves either the previous checkpoint or the new one, never a torn file; a failed
    write (disk full) removes its temporary file and leaves the previous checkpoint.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _check_archive(p: Path) -> None:
    """Refuse, before anything is unpickled or read into memory, a file that is not the zip archive
    ``torch.save`` writes: a bare pickle, random bytes, compressed members (a small file that inflates to
    gigabytes; ``torch.save`` never compresses) or more than ``MAX_CHECKPOINT_BYTES``."""
    size = p.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint ({size / 2**30:.1f} GiB, over the "
                        f"{MAX_CHECKPOINT_BYTES / 2**30:.0f} GiB limit)")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            head = f.read(2)
        what = ("a bare pickle: it holds pickled Python objects, which are refused for safety"
                if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
                else "not a checkpoint: not the zip archive torch.save writes (random bytes, truncated or "
                "another kind of file)")
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint ({what})")
    try:
        with zipfile.ZipFile(p) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint (a damaged archive: {e})") from None
    packed = next((m for m in members if m.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint (member {packed.filename} is compressed "
                        f"to {packed.compress_size:,} of {packed.file_size:,} bytes; torch.save never compresses)")
    if sum(m.file_size for m in members) > size or not any(m.filename.endswith("/data.pkl") for m in members):
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint (not the archive torch.save writes)")


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint (a file, or a bundled model's name) with ``weights_only=True``: pickled objects are
    refused and nothing in them runs.

    The archive is checked first (:func:`_check_archive`) and its tensors are memory-mapped, not read: a
    hostile file can neither run code nor claim more memory than its own size."""
    p = Path(path)
    if not p.is_file() and str(path) in PRETRAINED:  # a bundled model's name
        p = pretrained_path(str(path))
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} does not exist: pass RUN_DIR/checkpoints/best.ckpt or a bundled "
                        "model's name")
    _check_archive(p)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # unpickling refused, truncated file, not a checkpoint at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            first = "it holds pickled Python objects, which are refused for safety"
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("config"), dict):
        raise UserError(f"{p}: not an sslandmarks checkpoint (no model weights or config inside)")
    return state


def _mismatch(weights, expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why ``weights`` cannot load into a model whose tensors have the ``expected`` shapes (None: they can)."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return "the weights are not a dict of tensors"
    found = {k: tuple(v.shape) for k, v in weights.items()}
    for k in sorted({*found, *expected}, key=str):
        if found.get(k) != expected.get(k):
            return f"{k}: {found.get(k, 'missing')} in the file, {expected.get(k, 'not used')} in the model"
    return None


def pick_device(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` as given (CUDA must be there), ``auto``: CUDA when available, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"device {device!r}: use cpu, cuda, cuda:N or auto")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: CUDA is not available on this machine (use cpu)")
    return device


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model a checkpoint was trained with, in eval mode, and its config."""
    state = load_checkpoint(path)
    try:
        cfg = from_dict(state["config"])
    except UserError as e:
        raise UserError(f"{path}: its config is not valid for this version ({e})") from None
    with torch.device("meta"):  # the model's shapes, without allocating it: a config may declare a huge model
        expected = {k: tuple(v.shape) for k, v in build_model(cfg.model).state_dict().items()}
    weights = state["model"]
    problem = _mismatch(weights, expected)
    if problem:
        raise UserError(f"{path}: weights do not match the model in its config ({problem})")
    model = build_model(cfg.model)
    model.load_state_dict(weights)
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
