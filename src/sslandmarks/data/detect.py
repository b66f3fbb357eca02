"""Faces in ordinary photos: dlib's HOG detector boxes, mapped to the crops a face model was trained on.

A model trained on crops around the ground-truth landmarks (``data.name: files``) needs the same framing
at prediction time: each detector box is mapped to the landmark box it stands for (constants measured by
``scripts/calibrate_dlib_box.py``), then cropped exactly like training crops (:func:`files.crop_transform`).
dlib is the optional ``detect`` extra (``pip install 'sslandmarks[detect]'``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.files import as_channels, crop_image, crop_transform, load_image
from sslandmarks.data.formats import Problems, Sample
from sslandmarks.errors import UserError
from sslandmarks.geometry import apply_points

# dlib box -> our landmark box, measured by scripts/calibrate_dlib_box.py on the 1,157 AFW + HELEN-train faces
# where dlib's HOG detector found the face (of 1,207): landmark-box centre = box centre + (0.007, 0.085) *
# box side; landmark-box side = 0.994 * box side (std 0.09, 0.05, 0.09). (The script now runs the detector as
# detect_faces does, upsampled once, and matches by IoU: 1,150 faces, (0.013, 0.086, 0.985), within 0.01 of
# these; they are kept so that the bundled models' figures stand. It also measures the scatter around the
# mapped box that data.box_jitter imitates in training.)
DLIB_TO_LANDMARK_BOX = (0.007, 0.085, 0.994)
# per landmark layout: (dx, dy, ds) of its landmark box against dlib's box side. The 5 MTFL points' box
# relative to the 68-point box, measured on the same 1,207 AFW + HELEN-train faces (eye centres = means of
# the eye contours, nose tip, mouth corners): centre + (0.001, -0.066) * side68, side = 0.492 * side68
# (std 0.09, 0.03, 0.04), composed with the 68-point constants above.
DETECTOR_BOXES: dict[str, tuple[float, float, float]] = {
    "300w-68": DLIB_TO_LANDMARK_BOX,
    "mtfl-5": (0.008, 0.019, 0.489),
}

# The layouts whose models find their objects with dlib's face detector. A model of another layout (hands:
# hand-21, hgr1-25) or of none (no data.spec, as in hands.yaml) has no detector: it takes
# the boxes given, or the whole image.
FACE_LAYOUTS = (*DETECTOR_BOXES, "aflw-19")


def layout_frame(annotated: str, target: str) -> tuple[float, float, float] | None:
    """``(dx, dy, ds)``: the landmark box of layout ``target`` from that of layout ``annotated`` (centre moved by
    ``(dx, dy)`` of its side, side scaled by ``ds``), through their measured relations to dlib's box
    (:data:`DETECTOR_BOXES`), so that faces annotated in ``annotated`` are cropped like ``target`` faces;
    None for the same layout. Raises :class:`UserError` for a layout without a measured relation."""
    if annotated == target:
        return None
    missing = [name for name in (annotated, target) if name not in DETECTOR_BOXES]
    if missing:
        raise UserError(f"no measured box relation for layout {missing[0] or 'none'} (only "
                        f"{', '.join(DETECTOR_BOXES)}): its faces cannot be cropped like {target or 'none'} faces")
    (ax, ay, a_side), (tx, ty, t_side) = DETECTOR_BOXES[annotated], DETECTOR_BOXES[target]
    return (tx - ax) / a_side, (ty - ay) / a_side, t_side / a_side


Box = tuple[int, int, int, int]  # (left, top, right, bottom) in photo pixels


# What dlib's HOG detector looks at: a photo of more pixels than this is shrunk first (boxes mapped back), and
# one of at most a quarter of it is upsampled 2x (faces down to ~40 px, instead of ~80 px, are found). A
# 256x256 HELEN photo is seen at 512x512 and lenna.png (512x512) at 1024x1024, as before; a 640x480 video frame
# as it is; a 4000x2250 photo at 1365x768 (faces from ~240 px on).
DETECT_PIXELS = 1024 * 1024


@functools.cache
def _dlib_detector():
    """dlib's HOG face detector, built once per process (building it takes ~0.4 s)."""
    try:
        import dlib
    except ImportError:
        raise UserError("this model works on face crops and needs a face detector: "
                        "pip install 'sslandmarks[detect]' (dlib-bin)") from None
    return dlib.get_frontal_face_detector()


def detect_faces(rgb: np.ndarray, min_score: float = 0.0, max_pixels: int = DETECT_PIXELS) -> list[tuple[Box, float]]:
    """``[(box, score), ...]`` from dlib's HOG detector on ``rgb (H, W, 3)`` uint8, largest box first; ``box``
    is ``(left, top, right, bottom)`` in photo pixels, ``score`` the detector's SVM margin (0 is dlib's own
    threshold; a real face usually scores above 0.5). Detections scoring below ``min_score`` are dropped.

    Photos over ``max_pixels`` are shrunk for the detector and the boxes scaled back; photos of at most a
    quarter of it are upsampled once, as dlib's examples do, so that small faces are found."""
    detector = _dlib_detector()
    h, w = rgb.shape[:2]
    scale = min(1.0, math.sqrt(max_pixels / max(h * w, 1)))
    img = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        scale = size[0] / w
    upsample = 1 if img.shape[0] * img.shape[1] * 4 <= max_pixels else 0
    rects, scores, _ = detector.run(np.ascontiguousarray(img), upsample, min(min_score, 0.0))
    found = [((round(r.left() / scale), round(r.top() / scale), round(r.right() / scale), round(r.bottom() / scale)),
              float(sc)) for r, sc in zip(rects, scores) if sc >= min_score]
    return sorted(found, key=lambda d: -(d[0][2] - d[0][0]))


def box_to_crop(box: Box, size: tuple[int, int], margin: float, layout: str | None = "300w-68") -> torch.Tensor:
    """3x3 photo -> input transform for a detector box, matching the landmark-box crops of training
    (the landmark box of ``layout``; layouts without a measured relation use the 68-point one)."""
    dx, dy, ds = DETECTOR_BOXES.get(layout or "", DLIB_TO_LANDMARK_BOX)
    side = box[2] - box[0]
    c = np.array([(box[0] + box[2]) / 2 + dx * side, (box[1] + box[3]) / 2 + dy * side])
    corners = np.stack([c - ds * side / 2, c + ds * side / 2])
    return torch.from_numpy(crop_transform(corners, size, margin)).float()


def region_transform(box, size: tuple[int, int]) -> torch.Tensor:
    """3x3 transform from an image to its region ``box = (x0, y0, x1, y1)`` resized to ``size = (H, W)``,
    where ``(0, 0, w, h)`` is the whole ``h x w`` image (resized whole, pixel centres map to pixel centres:
    ``x_in = (x + 0.5) * W / w - 0.5``); in general ``x_in = (x - x0 + 0.5) * W / (x1 - x0) - 0.5``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = size[1] / (x1 - x0), size[0] / (y1 - y0)
    t = torch.eye(3)
    t[0, 0], t[1, 1] = sx, sy
    t[:2, 2] = torch.tensor([(0.5 - x0) * sx - 0.5, (0.5 - y0) * sy - 0.5])
    return t


def object_box_to_crop(box, size: tuple[int, int], margin: float) -> torch.Tensor:
    """3x3 photo -> input transform for a box drawn around the object (a hand), cropped as training crops
    were framed around the object's landmarks: the square box around it, enlarged by ``margin`` per side."""
    corners = np.array([[box[0], box[1]], [box[2], box[3]]], dtype=np.float64)
    return torch.from_numpy(crop_transform(corners, size, margin)).float()


def iou(a, b) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detector_crops(samples: list[Sample], size: tuple[int, int], channels: int, margin: float,
                   layout: str | None = None, progress: bool = True,
                   problems: Problems | None = None) -> tuple[LandmarkData, list[str]]:
    """Annotated photos cropped the way ``predict`` crops them: from dlib's detector box (the one that
    overlaps the ground-truth landmark box most, IoU >= 0.3), not from the landmarks.

    Returns ``(LandmarkData, missed)``: the crops with their ground truth mapped into them (``from_source``
    set, so metrics come out in photo pixels) and the samples whose face the detector did not find."""
    images, landmarks, transforms, missed, names = [], [], [], [], []
    for s in tqdm(samples, desc="detect", disable=not progress):
        rgb = load_image(s, 3, problems or Problems())  # a bad image raises, or is reported and skipped
        if rgb is None:
            continue
        lo, hi = np.nanmin(s.landmarks, 0), np.nanmax(s.landmarks, 0)
        overlap, box = max(((iou(b, (*lo, *hi)), b) for b, _ in detect_faces(rgb)), default=(0.0, None))
        if overlap < 0.3:
            missed.append(s.where or str(s.image))
            continue
        t = box_to_crop(box, size, margin, layout)
        images.append(crop_image(as_channels(rgb, channels), t, size)[0])
        landmarks.append(apply_points(t[None], torch.from_numpy(s.landmarks).float()[None])[0])
        transforms.append(t)
        names.append(s.where or str(s.image))
    if not images:
        raise UserError("the face detector found none of the annotated faces")
    data = LandmarkData(torch.stack(images), torch.stack(landmarks), from_source=torch.stack(transforms), names=names)
    return data, missed
