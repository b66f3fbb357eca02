"""Landmarks on ordinary image files.

A model trained on crops around faces (``data.name: files``) first needs the faces found: dlib's HOG
detector (the optional ``detect`` extra, ``pip install 'sslandmarks[detect]'``) gives boxes, each mapped
to the crop the model was trained on, and the predictions are mapped back to photo pixels. A model
trained on whole images (Shapes, Blocks) sees the whole image, resized.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sslandmarks.data.formats import IMAGE_SUFFIXES
from sslandmarks.errors import UserError

# dlib box -> our landmark box, measured by scripts/calibrate_dlib_box.py on the 1,157 AFW + HELEN-train faces
# where dlib's HOG detector found the face (of 1,207): landmark-box centre = box centre + (0.007, 0.085) *
# box side; landmark-box side = 0.994 * box side (std 0.09, 0.05, 0.09).
DLIB_TO_LANDMARK_BOX = (0.007, 0.085, 0.994)
# per landmark layout: (dx, dy, ds) of its landmark box against dlib's box side. The 5 MTFL points' box
# relative to the 68-point box, measured on the same 1,207 AFW + HELEN-train faces (eye centres = means of
# the eye contours, nose tip, mouth corners): centre + (0.001, -0.066) * side68, side = 0.492 * side68
# (std 0.09, 0.03, 0.04), composed with the 68-point constants above.
DETECTOR_BOXES: dict[str, tuple[float, float, float]] = {
    "300w-68": DLIB_TO_LANDMARK_BOX,
    "mtfl-5": (0.008, 0.019, 0.489),
}


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


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders as the images inside them (sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        else:
            out.append(p)
    return out


def detect_faces(rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes ``(left, top, right, bottom)`` from dlib's HOG detector, largest first."""
    try:
        import dlib
    except ImportError:
        raise UserError("this model works on face crops and needs a face detector: "
                        "pip install 'sslandmarks[detect]' (dlib-bin)") from None
    detector = detect_faces.__dict__.setdefault("detector", dlib.get_frontal_face_detector())
    boxes = [(d.left(), d.top(), d.right(), d.bottom()) for d in detector(rgb, 1)]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]))


def box_to_crop(box: tuple[int, int, int, int], size: tuple[int, int], margin: float,
                layout: str | None = "300w-68") -> torch.Tensor:
    """3x3 photo -> input transform for a detector box, matching the landmark-box crops of training
    (the landmark box of ``layout``; layouts without a measured relation use the 68-point one)."""
    from sslandmarks.data.files import crop_transform

    dx, dy, ds = DETECTOR_BOXES.get(layout or "", DLIB_TO_LANDMARK_BOX)
    side = box[2] - box[0]
    c = np.array([(box[0] + box[2]) / 2 + dx * side, (box[1] + box[3]) / 2 + dy * side])
    corners = np.stack([c - ds * side / 2, c + ds * side / 2])
    return torch.from_numpy(crop_transform(corners, size, margin)).float()


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


def _channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, 3)`` RGB as the model's input channels: itself, or ``(H, W, 1)`` grey."""
    return rgb if channels == 3 else np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detector_crops(samples: list, size: tuple[int, int], channels: int, margin: float, layout: str | None = None,
                   progress: bool = True):
    """Annotated photos cropped the way ``predict`` crops them: from dlib's detector box (the one that
    overlaps the ground-truth landmark box most, IoU >= 0.3), not from the landmarks.

    Returns ``(LandmarkData, missed)``: the crops with their ground truth mapped into them (``from_source``
    set, so metrics come out in photo pixels) and the samples whose face the detector did not find."""
    from tqdm import tqdm

    from sslandmarks.data.dataset import LandmarkData
    from sslandmarks.data.files import crop_image
    from sslandmarks.geometry import apply_points

    images, landmarks, transforms, missed = [], [], [], []
    for s in tqdm(samples, desc="detect", disable=not progress):
        rgb = read_image(s.image, 3)
        lo, hi = np.nanmin(s.landmarks, 0), np.nanmax(s.landmarks, 0)
        overlap, box = max(((_iou(b, (*lo, *hi)), b) for b in detect_faces(rgb)), default=(0.0, None))
        if overlap < 0.3:
            missed.append(s.where or str(s.image))
            continue
        t = box_to_crop(box, size, margin, layout)
        images.append(crop_image(_channels(rgb, channels), t, size)[0])
        landmarks.append(apply_points(t[None], torch.from_numpy(s.landmarks).float()[None])[0])
        transforms.append(t)
    if not images:
        raise UserError("the face detector found none of the annotated faces")
    return LandmarkData(torch.stack(images), torch.stack(landmarks), from_source=torch.stack(transforms)), missed


def predict_files(checkpoint: str | Path, images: list[str], out: str | Path, progress: bool = True) -> int:
    """Write ``out/predictions.json`` (``{file: {"faces": [{"box", "landmarks", "attributes"}]}}``, landmarks
    in photo pixels) and ``out/<stem>_landmarks.png`` per image. Returns the number of images."""
    from tqdm import tqdm

    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.data.files import crop_image
    from sslandmarks.evaluate import mirror_perm, predict_all
    from sslandmarks.geometry import apply_points, invert
    from sslandmarks.outputs import ensure_writable_dir, write_json
    from sslandmarks.viz import photo_overlay

    model, cfg = model_from_checkpoint(checkpoint)
    flip_perm = mirror_perm(cfg)
    if cfg.data.name == "files" and cfg.data.spec not in DETECTOR_BOXES:
        print(f"note: no measured detector-box relation for the layout {cfg.data.spec or '(none)'}: crops use the "
              "68-point face box's; check the overlays", file=sys.stderr)
    paths = expand_inputs(images)
    arrays = [read_image(p, 3) for p in paths]  # validate everything before writing anything
    ensure_writable_dir(out)
    out = Path(out)
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
            t = torch.eye(3)
            t[0, 0], t[1, 1] = size[1] / w, size[0] / h
            t[:2, 2] = torch.tensor([size[1] / w, size[0] / h]) * 0.5 - 0.5
            transforms = [t]
        arr = _channels(rgb, cfg.model.in_channels)
        faces = []
        for box, t in zip(boxes, transforms):  # the same antialiased crop as in training
            landmarks, attributes = predict_all(model, crop_image(arr, t, size), flip_perm=flip_perm)
            lm = apply_points(invert(t[None]), landmarks)[0]
            faces.append({"box": list(box), "landmarks": lm.tolist(), **_attributes(attributes, cfg)})
        results[str(path)] = {"faces": faces}
        if faces:
            photo_overlay(rgb, faces, out / f"{path.stem}_landmarks.png", boxes=crops)
    write_json(results, out / "predictions.json")
    return len(results)
