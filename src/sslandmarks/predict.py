"""``predict``: landmarks on ordinary image files.

A model trained on crops around faces (``data.name: files``) first needs the faces found: dlib's HOG
detector (the optional ``detect`` extra, ``pip install 'sslandmarks[detect]'``) gives boxes, each mapped
to the crop the model was trained on (:mod:`~sslandmarks.data.detect`), and the predictions are mapped
back to photo pixels. A model trained on whole images (Shapes, Blocks) sees the whole image, resized.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from sslandmarks.checkpoint import model_from_checkpoint
from sslandmarks.data.detect import DETECTOR_BOXES, box_to_crop, detect_faces, resize_transform
from sslandmarks.data.files import as_channels, crop_image
from sslandmarks.data.formats import IMAGE_SUFFIXES, files_under
from sslandmarks.data.images import read_image
from sslandmarks.errors import UserError
from sslandmarks.geometry import apply_points, invert
from sslandmarks.inference import predict_all
from sslandmarks.outputs import ensure_writable_dir, refuse_inputs_as_outputs, write_json
from sslandmarks.specs import mirror_perm
from sslandmarks.viz import photo_overlay


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders as the images inside them (sorted; symlinked subfolders followed)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = files_under(p, IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        else:
            out.append(p)
    return out


def _attributes(outputs: dict[str, torch.Tensor], cfg) -> dict:
    """``attributes``: each class head's most likely class (its label where the head names them, else the
    index) and ``confidence``: that class's softmax probability; regression heads give their values."""
    labels = {h.name: h.labels for h in cfg.model.heads}
    attrs, conf = {}, {}
    for k, v in outputs.items():
        if v.shape[-1] > 1 and any(h.name == k and h.kind == "class" for h in cfg.model.heads):
            p = torch.softmax(v[0].float(), -1)
            i = int(p.argmax())
            attrs[k] = labels[k][i] if labels.get(k) else i
            conf[k] = round(float(p[i]), 4)
        else:
            attrs[k] = [float(x) for x in v[0]] if v.shape[-1] > 1 else float(v[0, 0])
    return {"attributes": attrs, "confidence": conf} if conf else {"attributes": attrs}


def overlay_names(paths: list[Path]) -> list[str]:
    """The overlay PNG written for each input image."""
    return [f"{p.stem}_landmarks.png" for p in paths]


def predict_files(checkpoint: str | Path, images: list[str], out: str | Path, progress: bool = True) -> int:
    """Write ``out/predictions.json`` (``{file: {"faces": [{"box", "landmarks", "attributes"}]}}``, landmarks
    in photo pixels) and ``out/<stem>_landmarks.png`` per image. Returns the number of images."""
    out = Path(out)
    model, cfg = model_from_checkpoint(checkpoint)
    flip_perm = mirror_perm(cfg.data.spec, cfg.data.test_flip)
    if cfg.data.name == "files" and cfg.data.spec not in DETECTOR_BOXES:
        print(f"note: no measured detector-box relation for the layout {cfg.data.spec or '(none)'}: crops use the "
              "68-point face box's; check the overlays", file=sys.stderr)
    paths = expand_inputs(images)
    names = dict.fromkeys(["predictions.json", *overlay_names(paths)])  # (same-stem images share an overlay)
    refuse_inputs_as_outputs([("--out", out / name) for name in names], [checkpoint, *paths])
    arrays = [read_image(p, 3) for p in paths]  # validate everything before writing anything
    ensure_writable_dir(out)
    crops = cfg.data.name == "files"
    size = cfg.model.input_size
    results = {}
    for path, rgb in tqdm(list(zip(paths, arrays)), desc="predict", disable=not progress or len(paths) < 5):
        h, w = rgb.shape[:2]
        if crops:
            boxes = detect_faces(rgb)
            if not boxes:
                print(f"{path}: no face found", file=sys.stderr)
            transforms = [box_to_crop(b, size, cfg.data.crop_margin, cfg.data.spec) for b in boxes]
        else:  # the whole image, resized to the input
            boxes = [(0, 0, w, h)]
            transforms = [resize_transform(h, w, size)]
        arr = as_channels(rgb, cfg.model.in_channels)
        faces = []
        for box, t in zip(boxes, transforms):  # the same antialiased crop as in training
            landmarks, attributes = predict_all(model, crop_image(arr, t, size), flip_perm=flip_perm)
            lm = apply_points(invert(t[None]), landmarks)[0]
            faces.append({"box": list(box), "landmarks": lm.tolist(), **_attributes(attributes, cfg)})
        results[str(path)] = {"faces": faces}
        if faces:
            photo_overlay(rgb, faces, out / overlay_names([path])[0], boxes=crops)
    write_json(results, out / "predictions.json")
    return len(results)
