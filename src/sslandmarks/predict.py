"""Landmarks on image files: resize to the model input, predict, map back to image pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sslandmarks.errors import UserError


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """``(H, W, C)`` uint8 from any Pillow-readable file; one line of error naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{p}: not a readable image ({e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def predict_files(checkpoint: str | Path, images: list[str], out: str | Path) -> int:
    """Write ``out/predictions.json`` (``{file: {"landmarks": [[x, y], ...], "attributes": {...}}}``)
    and ``out/<stem>_landmarks.png`` per image. Returns the number of images."""
    from tqdm import tqdm

    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.train import to_input
    from sslandmarks.viz import prediction_grid

    model, cfg = model_from_checkpoint(checkpoint)
    arrays = [read_image(p, cfg.model.in_channels) for p in images]  # validate everything first
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {str(out)!r} ({e.strerror})") from None
    h, w = cfg.model.input_size
    results = {}
    for path, arr in tqdm(list(zip(images, arrays)), desc="predict", disable=len(images) < 5):
        src_h, src_w = arr.shape[:2]
        pil = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
        small = np.asarray(pil.resize((w, h), Image.BILINEAR))
        x = torch.from_numpy(small.reshape(h, w, -1).copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            res = model(to_input(x))
        scale = torch.tensor([src_w / w, src_h / h])
        lm = (res.landmarks[0] + 0.5) * scale - 0.5  # input pixels -> image pixels (coords.py convention)
        attrs = {k: int(v[0].argmax()) if v.shape[-1] > 1 else float(v[0, 0]) for k, v in res.attributes.items()}
        results[str(path)] = {"landmarks": lm.tolist(), "attributes": attrs}
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]
        prediction_grid(img, None, {"prediction": lm[None]}, out / f"{Path(path).stem}_landmarks.png", cols=1)
    (out / "predictions.json").write_text(json.dumps(results, indent=2))
    return len(results)
