"""Label faces that carry a few landmarks with all of a model's landmarks (self-training), keeping only the faces
whose predicted points agree with the landmarks they carry.

    PYTHONPATH=src .venv/bin/python scripts/pseudo_label.py --model face68 \
        --data ../shared/data/mtfl/training.txt ../shared/data/mtfl/testing.txt --format mtfl --spec mtfl-5 \
        --out cache/mtfl-pseudo68/train.csv

Each photo goes through the model as ``sslandmarks predict`` runs it (dlib's detector, then the refining pass and
test-time mirroring of the model's card); of the faces found, the one whose points, mapped to the annotated layout
(``specs.POINT_MAPS``: MTFL's eye centres are means of 300-W's eye contours), lie nearest the annotation is
taken, and kept when its NME against the annotation (by the annotated layout's normaliser: MTFL's eye-centre
distance) is at most ``--max-nme`` %. The kept faces go to a CSV manifest in the model's layout
(``format: csv``, absolute image paths), to be named in ``data.extra_sources`` like any annotated faces. Its
points are machine-made, not annotation: report them as such, and keep the manifest outside the project (it
describes research-only photos)."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import sslandmarks
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.errors import UserError
from sslandmarks.metrics import normalizer_values, point_errors
from sslandmarks.specs import LandmarkSpec, layout, point_map


def agreement(points: np.ndarray, annotated: np.ndarray, mapping: np.ndarray, spec: LandmarkSpec) -> float:
    """NME (%) of ``points (K, 2)``, mapped by ``mapping (K', K)`` to the annotated layout ``spec``, against
    ``annotated (K', 2)``, by that layout's default normaliser."""
    pred, gt = (torch.as_tensor(a, dtype=torch.float64)[None] for a in (mapping @ points, annotated))
    # landmark_metrics' per-image NME, without the curves and tables it also computes for a whole split
    norm = normalizer_values(spec.default_normalizer, gt, (1, 1), spec)
    return float(100.0 * torch.nanmean(point_errors(pred, gt)) / norm[0])


def label(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="face68", help="a bundled model's name or a checkpoint (default: %(default)s)")
    p.add_argument("--data", nargs="+", required=True, help="annotation files or folders")
    p.add_argument("--format", required=True, help="their format (pts, mtfl, csv, ljson, coco)")
    p.add_argument("--spec", required=True, help="their layout (e.g. mtfl-5)")
    p.add_argument("--max-nme", type=float, default=10.0, help="keep faces within this NME (%%) of the annotation")
    p.add_argument("--out", type=Path, required=True, help="the CSV manifest to write")
    args = p.parse_args(argv)
    model = sslandmarks.load(args.model)
    spec = model.cfg.data.spec
    mapping = point_map(spec, args.spec, model.num_landmarks)
    annotated = layout(args.spec)
    samples = [s for path in args.data for s in read_annotations(path, args.format, Problems())]
    rows, nmes, missed = [], [], 0
    for s in tqdm(samples, desc="pseudo-labelling", unit="photo"):
        faces = model.predict(str(s.image))
        if not faces:
            missed += 1
            continue
        scores = [agreement(f.landmarks, s.landmarks, mapping, annotated) for f in faces]
        best = int(np.argmin(scores))
        nmes.append(scores[best])
        if scores[best] <= args.max_nme:
            rows.append([str(s.image.resolve()), *(f"{v:.3f}" for v in faces[best].landmarks.reshape(-1))])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_name(args.out.name + ".part")
    with part.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *(f"{a}{i}" for i in range(model.num_landmarks) for a in "xy")])
        w.writerows(rows)
    part.replace(args.out)
    q = np.percentile(nmes, [50, 90]) if nmes else [float("nan")] * 2
    print(f"{len(samples)} photos: no face found in {missed}; agreement with the annotation (NME %) median {q[0]:.2f}, "
          f"90th percentile {q[1]:.2f}; kept {len(rows)} within {args.max_nme:g} %; wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """:func:`label`, with a bad file, layout or model reported in one line (exit code 2) instead of a traceback."""
    try:
        return label(argv)
    except UserError as e:
        print(f"pseudo_label: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
