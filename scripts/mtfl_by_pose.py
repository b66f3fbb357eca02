"""The MTFL table's test NME split by head pose: MTFL's pose label of each AFLW test face (1 left profile,
2 left, 3 frontal, 4 right, 5 right profile) against each finished cell's per-face NME.

usage: PYTHONPATH=src .venv/bin/python scripts/mtfl_by_pose.py [results/mtfl] [../shared/data/mtfl/testing.txt] \
           > results/mtfl/by_pose.md

Reads only the committed cell files (``metrics.json``: ``per_image_nme``, ``per_image_file`` = "testing.txt:LINE")
and the test list; trains nothing and loads no model. A cell of several seeds shows the mean over its seeds.
"""

import json
import sys
from pathlib import Path

import numpy as np

from sslandmarks.data.formats import Problems, read_mtfl
from sslandmarks.tables import MTFL_TABLE, cell_dir

POSES = ("left profile", "left", "frontal", "right", "right profile")


def poses(test_list: Path) -> dict[int, int]:
    """Line number (1-based, as in ``per_image_file``) -> pose label 1-5, read by the project's MTFL reader."""
    return {int(s.where.rsplit(":", 1)[1]): s.attributes["pose"] + 1 for s in read_mtfl(test_list, Problems())}


def by_pose(metrics: dict, pose_of: dict[int, int]) -> list[float]:
    """One cell's mean NME (%) over all faces, then over the faces of each pose."""
    nme = np.asarray(metrics["per_image_nme"], dtype=float)
    pose = np.array([pose_of[int(name.rsplit(":", 1)[1])] for name in metrics["per_image_file"]])
    return [float(nme.mean())] + [float(nme[pose == p].mean()) for p in range(1, 6)]


def main(out: Path, test_list: Path) -> None:
    pose_of = poses(test_list)
    counts = np.bincount(list(pose_of.values()), minlength=6)[1:]
    print(f"# MTFL test NME (% eye-centre distance) by head pose, from {out}/runs\n")
    print("Mean over the finished seeds of each cell; faces per pose on the AFLW list: "
          + ", ".join(f"{name} {n}" for name, n in zip(POSES, counts)) + ".\n")
    print("| model | labelled % | seeds | all | " + " | ".join(POSES) + " |")
    print("|---|---|---|---|" + "---|" * len(POSES))
    for row in MTFL_TABLE.rows:
        for pct in MTFL_TABLE.fractions:
            runs = [by_pose(json.loads(m.read_text()), pose_of)
                    for m in sorted(cell_dir(out, row, pct, 0).parent.glob(f"{pct:g}pct-seed*/metrics.json"))]
            if runs:
                means = np.mean(runs, axis=0)
                print(f"| {row.name} | {pct:g} | {len(runs)} | " + " | ".join(f"{v:.2f}" for v in means) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/mtfl"),
         Path(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/mtfl/testing.txt"))
