"""dlib's 68-point shape predictor on 300-W files, scored like `sslandmarks evaluate` (a benchmark, not a
runtime dependency). Needs dlib-bin and face-recognition-models (both run offline).

usage: .venv/bin/python scripts/bench_dlib.py [../shared/data/300w-partial/helen/testset]

Two protocols: `detector` (dlib's own HOG box, as users run it; faces it misses are counted as failures
with NME = inf and left out of the mean) and `gt-box` (a box derived from the ground-truth landmarks with
the inverse of predict.DLIB_TO_LANDMARK_BOX, the paper's protocol of cropping from the landmarks).
"""

import importlib.util
import sys
import time
from pathlib import Path

import dlib
import numpy as np
import torch

from sslandmarks.data.detect import DLIB_TO_LANDMARK_BOX
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.images import read_image
from sslandmarks.metrics import landmark_metrics
from sslandmarks.specs import SPECS

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/300w-partial/helen/testset")
models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
detector = dlib.get_frontal_face_detector()
samples = read_annotations(folder, "pts", Problems())
dx, dy, ds = DLIB_TO_LANDMARK_BOX
preds = {"detector": [], "gt-box": []}
missed, seconds = 0, 0.0
for s in samples:
    img = read_image(s.image, 3)
    lo, hi = s.landmarks.min(0), s.landmarks.max(0)
    side = (hi - lo).max() / ds
    c = (lo + hi) / 2 - np.array([dx, dy]) * side
    corners = (c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2)
    gt_box = dlib.rectangle(*[int(round(v)) for v in corners])
    boxes = [d for d in detector(img, 1) if abs((d.left() + d.right()) / 2 - c[0]) < 0.3 * side]
    for name, box in (("detector", boxes[0] if boxes else None), ("gt-box", gt_box)):
        if box is None:
            preds[name].append(np.full((68, 2), np.nan))
            continue
        t0 = time.perf_counter()
        shape = predictor(img, box)
        seconds += (time.perf_counter() - t0) if name == "gt-box" else 0.0
        preds[name].append(np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64))
    missed += not boxes
gt = torch.tensor(np.stack([s.landmarks for s in samples]))
print(f"dlib 68-point shape predictor on {folder} ({len(samples)} faces; the detector missed {missed}, "
      "left out of its figures)")
for name, p in preds.items():
    m = landmark_metrics(torch.tensor(np.stack(p)), gt, (0, 0), "interocular", SPECS["300w-68"])
    mp = landmark_metrics(torch.tensor(np.stack(p)), gt, (0, 0), "interpupil", SPECS["300w-68"])
    print(f"  {name:<9} NME inter-ocular {m['nme']:.2f} %, inter-pupil {mp['nme']:.2f} %, "
          f"AUC@0.08 {m['auc@0.08']:.3f}, FR@0.08 {m['failure_rate@0.08']:.3f} "
          f"(over {int((~np.isnan(np.stack(p))).all(axis=(1, 2)).sum())} faces)")
print(f"  shape predictor alone: {1000 * seconds / len(samples):.2f} ms per face on this CPU")
