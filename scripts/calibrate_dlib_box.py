"""Measure how dlib's HOG face box relates to the landmark box our face models are trained on.

usage: .venv/bin/python scripts/calibrate_dlib_box.py [../shared/data/300w-partial]
Prints the mean (and std) of (landmark-box centre - dlib box centre) / dlib side, and landmark-box side /
dlib side, over the AFW + HELEN-train faces where the detector found the face. The means are
predict.DLIB_TO_LANDMARK_BOX.
"""

import sys
from pathlib import Path

import dlib
import numpy as np

from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.images import read_image

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/300w-partial")
detector = dlib.get_frontal_face_detector()
rows, total = [], 0
for folder in ("afw", "helen/trainset"):
    for s in read_annotations(root / folder, "pts", Problems()):
        total += 1
        lo, hi = s.landmarks.min(0), s.landmarks.max(0)
        centre, side = (lo + hi) / 2, (hi - lo).max()
        for d in detector(read_image(s.image, 3), 0):
            dc = np.array([(d.left() + d.right()) / 2, (d.top() + d.bottom()) / 2])
            ds = d.right() - d.left()
            if np.abs(dc - centre).max() < 0.3 * side:  # the detection of this face
                rows.append([(centre[0] - dc[0]) / ds, (centre[1] - dc[1]) / ds, side / ds])
                break
r = np.array(rows)
print(f"{len(rows)} of {total} faces detected; mean {r.mean(0).round(3)}, std {r.std(0).round(3)}")
