"""Measure how dlib's HOG face box relates to the landmark box our face models are trained on, and how it
scatters around it.

usage: PYTHONPATH=src .venv/bin/python scripts/calibrate_dlib_box.py [../shared/data/300w-partial]

The detector runs as ``predict`` and ``evaluate --detector dlib`` run it (``data.detect.detect_faces``: a
256x256 photo is upsampled once), on the AFW + HELEN-train faces; a face's detection is the one whose box
overlaps the landmark box most, with IoU >= 0.3 (as ``data.detect.detector_crops``). The landmark box is the
square box of ``data.files.crop_transform``: centre of the landmarks' extent, side = the longer extent. Prints

1. the mapping: mean (std) of (landmark-box centre - dlib box centre) / dlib side, and of landmark side /
   dlib side; the means are ``data.detect.DLIB_TO_LANDMARK_BOX``;
2. the scatter left after that mapping (what ``data.box_jitter`` imitates in training): the residual
   centre offset (landmark-box centre - mapped centre) / landmark side per axis, and the log-scale
   log(landmark side / mapped side): mean, std and the 5th/95th percentiles.

Measured with dlib-bin 20.0.1 (``PYTHONPATH=src nice -n 10 .venv/bin/python scripts/calibrate_dlib_box.py``):
1,150 of 1,207 faces found; mapping mean (0.013, 0.086, 0.985), std (0.088, 0.049, 0.086) (the constants in
use, (0.007, 0.085, 0.994), were measured without the 2x upsampling and matched by centre distance: within
0.01); scatter after the mapping: shift x mean +0.006, std 0.091 (5-95 % [-0.148, +0.188]); shift y mean
+0.001, std 0.050 ([-0.117, +0.102]); log-scale mean -0.013, std 0.088 ([-0.185, +0.176]). Hence
``data.box_jitter: {shift: [0.09, 0.05], scale: 0.09}`` in configs/300w_face68_mixed.yaml.

The scatter is a few discrete steps, not a bell curve: the 300-W partial photos are normalised crops whose
landmark box is the same in every photo (side 128 px, centred), and dlib's boxes come in the sizes of its
image pyramid (7 distinct sides here; 77 % of the faces get the 129 px one). HELEN test photos are cropped
the same way, so ``evaluate --detector dlib`` on them meets the same steps; on ordinary photos the steps
fall anywhere relative to the face, which a Gaussian of the same std imitates better.
"""

import sys
from pathlib import Path

import numpy as np

from sslandmarks.data.detect import DLIB_TO_LANDMARK_BOX, detect_faces, iou
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.images import read_image


def landmark_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre ``(2,)`` and side of the square box that training crops are cut from."""
    lo, hi = points.min(0), points.max(0)
    return (lo + hi) / 2, float((hi - lo).max())


def measure(root: Path) -> tuple[np.ndarray, int]:
    """Per found face: ``[cx, cy, side]`` of the landmark box and of the matched dlib box (``(N, 6)``)."""
    rows, total = [], 0
    for folder in ("afw", "helen/trainset"):
        for s in read_annotations(root / folder, "pts", Problems()):
            total += 1
            lo, hi = s.landmarks.min(0), s.landmarks.max(0)
            found = [(iou(b, (*lo, *hi)), b) for b, _ in detect_faces(read_image(s.image, 3))]
            overlap, box = max(found, default=(0.0, None), key=lambda f: f[0])
            if overlap < 0.3:
                continue
            centre, side = landmark_box(s.landmarks)
            dc = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            rows.append([*centre, side, *dc, box[2] - box[0]])
    return np.array(rows), total


def report(r: np.ndarray, total: int) -> None:
    centre, side, dc, ds = r[:, :2], r[:, 2], r[:, 3:5], r[:, 5]
    rel = np.column_stack([(centre - dc) / ds[:, None], side / ds])
    print(f"{len(r)} of {total} faces detected")
    print(f"mapping (dx, dy, side ratio): mean {rel.mean(0).round(3)}, std {rel.std(0).round(3)}"
          f" (in use: {DLIB_TO_LANDMARK_BOX})")
    dx, dy, ratio = DLIB_TO_LANDMARK_BOX
    mapped_centre, mapped_side = dc + np.array([dx, dy]) * ds[:, None], ratio * ds
    scatter = np.column_stack([(centre - mapped_centre) / side[:, None], np.log(side / mapped_side)])
    for name, v in zip(("shift x", "shift y", "log-scale"), scatter.T):
        p5, p95 = np.percentile(v, [5, 95])
        print(f"scatter {name}: mean {v.mean():+.4f}, std {v.std():.4f}, 5-95 % [{p5:+.4f}, {p95:+.4f}]")
    sides, counts = np.unique(ds, return_counts=True)
    print(f"dlib box sides: {len(sides)} distinct, the commonest ({sides[counts.argmax()]:.0f} px) for "
          f"{counts.max() / len(ds):.0%} of the faces; landmark box sides: {len(np.unique(side.round(1)))} distinct")


if __name__ == "__main__":
    rows, n = measure(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/300w-partial"))
    report(rows, n)
