"""The public inference API: landmarks on your images in three lines.

```
import sslandmarks
model = sslandmarks.load("face68")            # a bundled model's name, or a checkpoint written by train
faces = model.predict("photo.jpg")            # a path, a PIL image or a numpy array; or a list of them
faces[0].landmarks                            # (68, 2) numpy array, (x, y) in pixels of the image
```

Face models were trained on crops around faces, so :meth:`Landmarker.predict` first finds the faces with dlib's
HOG detector (the ``detect`` extra) and crops each the way training crops were framed; ``boxes=`` gives the
boxes instead, and ``detect=False`` takes the whole image as one face crop. Models trained on whole images
(Shapes, Blocks) always see the whole image, resized. ``sslandmarks predict`` is built on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sslandmarks.checkpoint import model_from_checkpoint, pick_device
from sslandmarks.config import Config
from sslandmarks.data.detect import DETECT_PIXELS, box_to_crop, detect_faces, resize_transform
from sslandmarks.data.files import crop_image, crop_transform
from sslandmarks.data.images import from_pil, read_image, with_channels
from sslandmarks.errors import UserError
from sslandmarks.geometry import apply_points, invert
from sslandmarks.inference import predict_all
from sslandmarks.pretrained import checkpoint_path, uninformative_heads
from sslandmarks.specs import mirror_perm

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in image pixels


@dataclass
class Face:
    """One face (or, for a whole-image model, the image): where it is and its landmarks, in image pixels."""

    box: Box  # the detector's box, the box given, or the whole image (left, top, right, bottom)
    landmarks: np.ndarray  # (K, 2) float64: (x, y) in pixels of the image; pixel (i, j) is centred at (i, j)
    score: float | None = None  # the detector's score (dlib's SVM margin; > 0 is a detection); None: no detector
    attributes: dict = field(default_factory=dict)  # head -> its most likely class label, or the regressed values
    probabilities: dict = field(default_factory=dict)  # class head -> {label: probability}

    def to_dict(self) -> dict:
        """Plain JSON types: ``box``, ``score``, ``landmarks``, ``attributes``, ``confidence`` (the probability
        of each class head's answer) and ``probabilities``."""
        out = {"box": [float(v) for v in self.box], "score": self.score,
               "landmarks": [[float(x), float(y)] for x, y in self.landmarks]}
        if self.attributes:
            out["attributes"] = self.attributes
        if self.probabilities:
            out["confidence"] = {k: max(p.values()) for k, p in self.probabilities.items()}
            out["probabilities"] = self.probabilities
        return out


def as_rgb(image) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a path, a PIL image or a numpy array (``(H, W)`` grey, ``(H, W, 1|3|4)``;
    uint8, uint16 (divided by 257), bool, or float in [0, 1]; alpha is dropped). Paths and PIL images are read
    as :mod:`~sslandmarks.data.images` reads every image (EXIF orientation applied)."""
    if isinstance(image, str | Path):
        return read_image(image, 3)
    if isinstance(image, Image.Image):
        return from_pil(image, 3)
    if isinstance(image, torch.Tensor):
        raise UserError("give a numpy array (H, W, 3), a PIL image or a path, not a torch tensor")
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or 0 in a.shape:
        raise UserError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.round(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise UserError("a float image array must hold values in [0, 1] (or pass uint8 in 0..255)")
        a = np.round(a * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise UserError(f"an image array of {a.dtype} is not supported: pass uint8 (0..255) or float in [0, 1]")
    return np.ascontiguousarray(with_channels(a, 3))


def _is_batch(image) -> bool:
    if isinstance(image, list | tuple):
        return True
    return isinstance(image, np.ndarray) and image.ndim == 4


class Landmarker:
    """A trained model ready to predict: :func:`load` makes one. ``predict`` is safe to call repeatedly; the
    face detector is built once per process."""

    def __init__(self, model: torch.nn.Module, cfg: Config, source: str, hidden: Sequence[str] = ()) -> None:
        self.model, self.cfg, self.source = model.eval(), cfg, source
        self.hidden = tuple(hidden)  # attribute heads not reported (uninformative by the model card)
        self.flip_perm = mirror_perm(cfg.data.spec, cfg.data.test_flip)

    def __repr__(self) -> str:
        return (f"Landmarker({self.source!r}: {self.num_landmarks} landmarks, input {self.input_size}, "
                f"{'face crops from a detector' if self.needs_detector else 'whole images'})")

    @property
    def num_landmarks(self) -> int:
        return self.cfg.model.num_landmarks

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.cfg.model.input_size)

    @property
    def needs_detector(self) -> bool:
        """Trained on crops around faces (``data.name: files``): photos need a face detector (or boxes)."""
        return self.cfg.data.name == "files"

    def predict(self, image, detect: bool = True, boxes: Sequence[Box] | None = None, min_score: float = 0.0,
                max_pixels: int = DETECT_PIXELS):
        """The faces in ``image`` (a path, a PIL image or a numpy array), largest first; for a list of images
        (or an ``(N, H, W, 3)`` array), one list of faces per image.

        ``boxes``: face boxes ``(left, top, right, bottom)`` framed like the detector's, instead of detecting;
        ``detect=False``: ``image`` is a face crop already (the whole image is the face); ``min_score``: drop
        detections scoring below it (dlib's SVM margin; 0 is dlib's own threshold); ``max_pixels``: larger
        photos are shrunk for the detector (boxes are mapped back). Models trained on whole images ignore
        ``detect``, ``boxes`` and ``min_score``."""
        if _is_batch(image):
            return [self.predict(im, detect, boxes, min_score, max_pixels) for im in image]
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        size = self.input_size
        if not self.needs_detector or (boxes is None and not detect):
            return self._faces(rgb, [resize_transform(h, w, size)], [(0.0, 0.0, float(w), float(h))], [None])
        if boxes is None:
            found = detect_faces(rgb, min_score, max_pixels)
            boxes, scores = [b for b, _ in found], [s for _, s in found]
        else:
            boxes, scores = [_box(b) for b in boxes], [None] * len(boxes)
        m = self.cfg.data
        return self._faces(rgb, [box_to_crop(b, size, m.crop_margin, m.spec) for b in boxes], boxes, scores)

    def track(self, image, faces: Sequence[Face]) -> list[Face]:
        """The same faces in a new frame (video): each cropped from the box around its previous landmarks,
        which is how training crops were framed, so no detector runs. Boxes and scores are carried over."""
        rgb = as_rgb(image)
        if not self.needs_detector:
            return self.predict(rgb)
        m = self.cfg.data
        transforms = [torch.from_numpy(crop_transform(f.landmarks, self.input_size, m.crop_margin)).float()
                      for f in faces]
        return self._faces(rgb, transforms, [f.box for f in faces], [f.score for f in faces])

    @torch.no_grad()
    def _faces(self, rgb: np.ndarray, transforms: list[torch.Tensor], boxes: list, scores: list) -> list[Face]:
        """Crop ``rgb`` by each 3x3 image -> input transform, predict all crops in one batch, map back."""
        if not transforms:
            return []
        arr = with_channels(rgb, self.cfg.model.in_channels)
        crops = torch.cat([crop_image(arr, t, self.input_size) for t in transforms])
        landmarks, outputs = predict_all(self.model, crops, flip_perm=self.flip_perm)
        back = apply_points(invert(torch.stack(transforms)), landmarks).double().numpy()
        faces = []
        for i, (box, score) in enumerate(zip(boxes, scores)):
            attributes, probabilities = self._attributes({k: v[i] for k, v in outputs.items()})
            faces.append(Face(tuple(float(v) for v in box), back[i], None if score is None else round(score, 4),
                              attributes, probabilities))
        return faces

    def _attributes(self, outputs: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """Each class head's most likely class (its label where the head names them, else the index) and the
        probabilities of all its classes; regression heads give their values. Hidden heads are left out."""
        attrs, probs = {}, {}
        for head in self.cfg.model.heads:
            if head.name in self.hidden or head.name not in outputs:
                continue
            v = outputs[head.name].float()
            if head.kind == "class" and v.shape[-1] > 1:
                p = torch.softmax(v, -1)
                labels = list(head.labels) if head.labels else list(range(v.shape[-1]))
                attrs[head.name] = labels[int(p.argmax())]
                probs[head.name] = {str(label): round(float(q), 4) for label, q in zip(labels, p)}
            else:
                attrs[head.name] = [float(x) for x in v] if v.shape[-1] > 1 else float(v[0])
        return attrs, probs


def _box(b) -> Box:
    box = tuple(float(v) for v in b)
    if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"a box is (left, top, right, bottom) with right > left and bottom > top, got {b!r}")
    return box


def load(name_or_path: str | Path, device: str = "cpu", threads: int | None = None,
         all_attributes: bool = False) -> Landmarker:
    """A bundled model by name (``face68``, ``face68-fast``, ``mtfl5``; ``sslandmarks models`` lists them) or a
    checkpoint written by ``sslandmarks train``, ready to predict on ``device``.

    ``threads``: torch's intra-op threads for this process (one is the fastest on a busy machine: idle
    threads spin against other work); ``all_attributes``: also report attribute heads that the model card
    marks as uninformative (mtfl5's gender and glasses), hidden by default."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads={threads}: give 1 or more")
        torch.set_num_threads(threads)
    path = checkpoint_path(str(name_or_path))
    model, cfg = model_from_checkpoint(path, pick_device(device))
    hidden = () if all_attributes else uninformative_heads(path)
    return Landmarker(model, cfg, str(name_or_path), hidden)
