"""Annotated image files -> :class:`LandmarkData`: read, validate, crop around the landmarks, resize.

The crop follows the paper's protocol: a square box around the ground-truth landmarks, enlarged by
``margin`` on each side, resampled to the network input with the same 3x3 transform that is kept in
``LandmarkData.from_source`` to map predictions back to image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.formats import DataError, Problems, Sample
from sslandmarks.data.images import read_image
from sslandmarks.geometry import warp_images

OUTSIDE_TOLERANCE = 0.25  # landmarks may leave the image by at most this share of its size


def load_image(sample: Sample, channels: int, problems: Problems) -> np.ndarray | None:
    """``(H, W, C)`` uint8 (:func:`~sslandmarks.data.images.read_image`: as displayed, any mode), or ``None``
    (reported) when the file is missing, unreadable, truncated, too large or of an unsupported mode."""
    try:
        return read_image(sample.image, channels)
    except DataError as e:
        problems.report(f"{sample.where}: {e}")
        return None


def as_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W, 3)`` RGB as the model's input channels: itself, or ``(H, W, 1)`` grey."""
    return rgb if channels == 3 else np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None]


def crop_transform(landmarks: np.ndarray, size: tuple[int, int], margin: float,
                   frame: tuple[float, float, float] | None = None) -> np.ndarray:
    """3x3 matrix from image pixels to a ``size = (H, W)`` crop of the square box around the known
    landmarks, enlarged by ``margin`` of its side on each side. ``frame = (dx, dy, ds)`` first moves that box
    by ``(dx, dy)`` of its side and scales it by ``ds``: the box another layout's landmarks would have
    (:func:`~sslandmarks.data.detect.layout_frame`)."""
    pts = landmarks[~np.isnan(landmarks).any(1)]
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()), 1.0)
    if frame is not None:
        centre, side = centre + np.array(frame[:2]) * side, side * frame[2]
    side = side * (1 + 2 * margin)
    h, w = size
    s = min(w, h) / side
    t = np.eye(3)
    t[0, 0] = t[1, 1] = s
    t[:2, 2] = np.array([(w - 1) / 2, (h - 1) / 2]) - s * centre
    return t


def crop_image(arr: np.ndarray, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample ``arr (H, W, C)`` uint8 by ``t`` into ``(1, C, *size)`` uint8.

    Bilinear sampling aliases when it shrinks by more than 2x, so the image is first box-averaged by
    the integer factor ``k`` that leaves a scale in (0.5, 1]; reduced pixel ``i`` covers original pixels
    ``k i .. k i + k - 1``, centred at ``k i + (k - 1) / 2``, and ``t`` is composed with that map."""
    k = max(1, int(1.0 / float(t[0, 0])))
    if k > 1:
        im = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).reduce(k)
        arr = np.asarray(im).reshape(im.size[1], im.size[0], -1)
        reduced_to_original = torch.tensor([[k, 0.0, (k - 1) / 2], [0.0, k, (k - 1) / 2], [0.0, 0.0, 1.0]])
        t = t @ reduced_to_original
    img = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None]
    return warp_images(img, t[None], out_size=size).round().clamp(0, 255).to(torch.uint8)


def _class_indices(s: Sample, class_heads: set[str], names: dict[str, tuple[str, ...]], problems: Problems,
                   keep: set[str] | None):
    """Attributes with class names replaced by their indices; None (reported) for an unknown name.
    Numeric codes from a format that defines them (MTFL's attributes) are indices already; the head's
    labels then only name them. With ``keep``, other attributes are dropped."""
    out = {}
    for k, v in s.attributes.items():
        if keep is not None and k not in keep:
            continue  # a column no model head reads (an id, COCO's category): not kept
        if k in names and isinstance(v, str):  # named classes; a name may look like a number ("1" in HGR1)
            if str(v) not in names[k]:
                problems.report(f"{s.where}: class {str(v)!r} of {k!r} is not among the head's labels")
                return None
            out[k] = names[k].index(str(v))
        elif not isinstance(v, str):
            out[k] = v
        elif k in class_heads:
            problems.report(f"{s.where}: {k!r} holds class names ({v!r}): list them in model.heads[].labels")
            return None
        # else: a named column that no head reads (an id, a note): not kept
    return out


def load_cropped(
    samples: list[Sample],
    size: tuple[int, int],
    channels: int,
    margin: float,
    problems: Problems,
    class_counts: dict[str, int] | None = None,
    class_names: dict[str, tuple[str, ...]] | None = None,
    heads: set[str] | None = None,
    progress: bool = False,
    frame: tuple[float, float, float] | None = None,
) -> LandmarkData:
    """Validate, read and crop ``samples``. ``class_counts`` (head -> number of classes) checks labels;
    ``class_names`` (head -> names in index order) maps named labels to indices; ``heads`` (the model's
    head names), when given, keeps only the attributes they read. Attribute columns that are neither a
    head nor numeric (an id, a note) are never kept. ``frame``: crop from another layout's landmark box
    (:func:`crop_transform`)."""
    images, lms, transforms, kept = [], [], [], []
    for s in tqdm(samples, desc="read", unit="image", disable=not progress):
        if np.isnan(s.landmarks).all():
            problems.report(f"{s.where}: no landmark is known, so there is no box to crop from")
            continue
        attrs = _class_indices(s, set(class_counts or {}), class_names or {}, problems, heads)
        if attrs is None:
            continue
        s = Sample(s.image, s.landmarks, attrs, s.where)
        bad_label = next((f"{k}={v}" for k, v in s.attributes.items()
                          if class_counts and k in class_counts and not 0 <= v < class_counts[k]), None)
        if bad_label:
            problems.report(f"{s.where}: class label {bad_label} is out of range for the model's heads")
            continue
        arr = load_image(s, channels, problems)
        if arr is None:
            continue
        h, w = arr.shape[:2]
        tol = OUTSIDE_TOLERANCE * max(h, w)
        known = s.landmarks[~np.isnan(s.landmarks).any(1)]
        if ((known < -tol) | (known > np.array([w, h]) + tol)).any():
            problems.report(f"{s.where}: landmarks lie far outside the {w}x{h} image (wrong format or scale?)")
            continue
        t = torch.from_numpy(crop_transform(s.landmarks, size, margin, frame)).float()
        images.append(crop_image(arr, t, size))
        pts = torch.from_numpy(s.landmarks).float()
        lms.append(pts @ t[:2, :2].T + t[:2, 2])
        transforms.append(t)
        kept.append(s)
    if not kept:
        return LandmarkData(torch.zeros(0, channels, *size, dtype=torch.uint8), torch.zeros(0, 0, 2))
    names = sorted({k for s in kept for k in s.attributes})
    kinds = {k: "regression" if k.endswith("_reg") else "class" for k in names}
    attributes = {}
    for k in names:
        if kinds[k] == "class":
            attributes[k] = torch.tensor([int(s.attributes.get(k, -1)) for s in kept], dtype=torch.long)
        else:
            attributes[k] = torch.tensor([[s.attributes.get(k, float("nan"))] for s in kept], dtype=torch.float32)
    return LandmarkData(torch.cat(images), torch.stack(lms), attributes, kinds, torch.stack(transforms),
                        names=[s.where or str(s.image) for s in kept])
