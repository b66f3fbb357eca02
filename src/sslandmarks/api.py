"""The public inference API: landmarks on your images in three lines.

```
import sslandmarks
model = sslandmarks.load("face68")            # a bundled model's name, or a checkpoint written by train
faces = model.predict("photo.jpg")            # a path, a PIL image or a numpy array; or a list of them
faces[0].landmarks                            # (68, 2) numpy array, (x, y) in pixels of the image
```

Face models were trained on crops around faces, so :meth:`Landmarker.predict` first finds the faces with dlib's
HOG detector (the ``detect`` extra) and crops each the way training crops were framed; ``boxes=`` gives the
boxes instead, and ``detect=False`` takes the whole image as one face crop. Crop models without a detector (hands,
and any layout other than a face's) crop from the ``boxes`` given, or from the whole image. Models trained on whole
images (Shapes, Blocks) see the whole image resized, or each box's region resized. ``sslandmarks predict`` is
built on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sslandmarks.boxes import Box, check_box, check_inside
from sslandmarks.checkpoint import model_from_checkpoint, pick_device
from sslandmarks.config import Config
from sslandmarks.data.detect import (
    DETECT_PIXELS,
    FACE_LAYOUTS,
    box_to_crop,
    detect_faces,
    object_box_to_crop,
    region_transform,
)
from sslandmarks.data.files import crop_image, crop_transform
from sslandmarks.data.images import from_pil, read_image, with_channels
from sslandmarks.errors import UserError
from sslandmarks.geometry import apply_points, invert
from sslandmarks.inference import predict_all
from sslandmarks.pretrained import checkpoint_path, uninformative_heads
from sslandmarks.specs import mirror_perm


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

    def __init__(self, model: torch.nn.Module, cfg: Config, source: str, hidden: Sequence[str] = (),
                 refine: int | None = None) -> None:
        self.model, self.cfg, self.source = model.eval(), cfg, source
        self.hidden = tuple(hidden)  # attribute heads not reported (uninformative by the model card)
        self.flip_perm = mirror_perm(cfg.data.spec, cfg.data.test_flip)
        if refine is not None and refine < 0:
            raise UserError(f"refine={refine}: give 0 (one pass) or more")
        # extra passes on a box's crop, each framed by the previous pass's landmarks as training framed its crops
        self.refine = (1 if self.has_detector else 0) if refine is None else refine

    def __repr__(self) -> str:
        return (f"Landmarker({self.source!r}: {self.num_landmarks} landmarks, input {self.input_size}, "
                f"{self._inputs})")

    @property
    def _inputs(self) -> str:
        if not self.needs_detector:
            return "whole images"
        return "face crops from a detector" if self.has_detector else "crops from the boxes given (no detector)"

    @property
    def num_landmarks(self) -> int:
        return self.cfg.model.num_landmarks

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.cfg.model.input_size)

    @property
    def needs_detector(self) -> bool:
        """Trained on crops around objects (``data.name: files``): photos need a box per object, from the face
        detector (:attr:`has_detector`) or given; without either, the whole image is the box."""
        return self.cfg.data.name == "files"

    @property
    def has_detector(self) -> bool:
        """A crop model of a face layout (``data.spec`` 300w-68, mtfl-5, aflw-19): dlib's face detector finds
        the boxes. Other crop models (hands) take the boxes given, or the whole image."""
        return self.needs_detector and self.cfg.data.spec in FACE_LAYOUTS

    def predict(self, image, detect: bool = True, boxes: Sequence[Box] | None = None, min_score: float = 0.0,
                max_pixels: int = DETECT_PIXELS):
        """The faces (objects) in ``image`` (a path, a PIL image or a numpy array), largest first; for a list
        of images (or an ``(N, H, W, 3)`` array), one list of faces per image.

        ``boxes``: ``(left, top, right, bottom)`` in image pixels, one per object, instead of detecting (the same
        boxes for every image of a list): for a face model framed like the detector's box, for a crop model
        without a detector drawn around the object, for a whole-image model the region it sees (resized). No
        ``boxes``: a face model runs the detector, a crop model without one and a whole-image model take the
        whole image ``(0, 0, W, H)`` as the box. ``detect=False``: ``image`` is a crop already (resized to the
        input). ``min_score``: drop detections scoring below it (dlib's SVM margin; 0 is dlib's own threshold);
        ``max_pixels``: larger photos are shrunk for the detector (boxes are mapped back)."""
        if _is_batch(image):
            return [self.predict(im, detect, boxes, min_score, max_pixels) for im in image]
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        whole = (0.0, 0.0, float(w), float(h))
        refine = self.refine if self.needs_detector else 0
        if boxes is not None:
            boxes = [check_inside(check_box(b), w, h) for b in boxes]
            return self._faces(rgb, [self._crop(b) for b in boxes], boxes, [None] * len(boxes), refine)
        if self.needs_detector and not detect:  # a crop already: resized, as a whole-image model's input
            return self._faces(rgb, [region_transform(whole, self.input_size)], [whole], [None])
        if not self.has_detector:
            return self._faces(rgb, [self._crop(whole)], [whole], [None], refine)
        found = detect_faces(rgb, min_score, max_pixels)
        return self._faces(rgb, [self._crop(b) for b, _ in found], [b for b, _ in found], [s for _, s in found],
                           refine)

    def _crop(self, box: Box) -> torch.Tensor:
        """The 3x3 image -> input transform for ``box``, as this model's training framed its inputs."""
        m, size = self.cfg.data, self.input_size
        if not self.needs_detector:
            return region_transform(box, size)
        if self.has_detector:
            return box_to_crop(box, size, m.crop_margin, m.spec)
        return object_box_to_crop(box, size, m.crop_margin)

    def track(self, image, faces: Sequence[Face]) -> list[Face]:
        """The same faces in a new frame (video): each cropped from the box around its previous landmarks,
        which is how training crops were framed, so no detector runs. Boxes and scores are carried over."""
        rgb = as_rgb(image)
        if not self.needs_detector:
            return self.predict(rgb)
        transforms = [self._reframe(f.landmarks) for f in faces]
        return self._faces(rgb, transforms, [f.box for f in faces], [f.score for f in faces])

    def _reframe(self, landmarks: np.ndarray) -> torch.Tensor:
        """The 3x3 image -> input transform of the box around ``landmarks (K, 2)`` (image pixels), framed as
        training framed its crops."""
        return torch.from_numpy(crop_transform(landmarks, self.input_size, self.cfg.data.crop_margin)).float()

    @torch.no_grad()
    def _faces(self, rgb: np.ndarray, transforms: list[torch.Tensor], boxes: list, scores: list,
               refine: int = 0) -> list[Face]:
        """Crop ``rgb`` by each 3x3 image -> input transform, predict all crops in one batch, map back; then
        ``refine`` times again, each crop framed by the previous pass's landmarks."""
        if not transforms:
            return []
        arr = with_channels(rgb, self.cfg.model.in_channels)
        back, outputs = self._pass(arr, transforms)
        for _ in range(refine):
            back, outputs = self._pass(arr, [self._reframe(points) for points in back])
        faces = []
        for i, (box, score) in enumerate(zip(boxes, scores)):
            attributes, probabilities = self._attributes({k: v[i] for k, v in outputs.items()})
            faces.append(Face(tuple(float(v) for v in box), back[i], None if score is None else round(score, 4),
                              attributes, probabilities))
        return faces

    def _pass(self, arr: np.ndarray, transforms: list[torch.Tensor]) -> tuple[np.ndarray, dict]:
        """Landmarks ``(N, K, 2)`` in image pixels and head outputs of the crops of ``arr`` by ``transforms``,
        predicted in one batch."""
        crops = torch.cat([crop_image(arr, t, self.input_size) for t in transforms])
        landmarks, outputs = predict_all(self.model, crops, flip_perm=self.flip_perm)
        return apply_points(invert(torch.stack(transforms)), landmarks).double().numpy(), outputs

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


def load(name_or_path: str | Path, device: str = "cpu", threads: int | None = None,
         all_attributes: bool = False, refine: int | None = None) -> Landmarker:
    """A bundled model by name (``face68``, ``face68-fast``, ``mtfl5``; ``sslandmarks models`` lists them) or a
    checkpoint written by ``sslandmarks train``, ready to predict on ``device``.

    ``threads``: torch's intra-op threads for this process (one is the fastest on a busy machine: idle
    threads spin against other work); ``all_attributes``: also report attribute heads that the model card
    marks as uninformative (mtfl5's gender and glasses), hidden by default; ``refine``: extra passes on each
    box's crop, each framed by the previous pass's landmarks as the model's training crops were (default: 1
    for a face model with a detector, whose boxes frame faces less tightly, 0 otherwise)."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads={threads}: give 1 or more")
        torch.set_num_threads(threads)
    path = checkpoint_path(str(name_or_path))
    model, cfg = model_from_checkpoint(path, pick_device(device))
    hidden = () if all_attributes else uninformative_heads(path)
    return Landmarker(model, cfg, str(name_or_path), hidden, refine)
