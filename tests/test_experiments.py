"""The reproduction runner: a tiny grid end to end, resumable; the real --quick grid in the slow tier."""

from __future__ import annotations

import csv
import time

import pytest

from sslandmarks.cli import main
from sslandmarks.tables import BLOCKS_TABLE1, cells

TINY = ["data.n_train=60", "data.n_val=16", "data.n_test=16", "model.width=2", "model.depth=1", "model.kernel=3",
        "model.pointwise=[2]", "model.mlp_hidden=[8]", "train.batch_labelled=2", "train.batch_unlabelled=2",
        "train.steps=2", "train.eval_every=2", "train.log_every=2", "train.checkpoint_every=2"]


def test_grid_has_the_papers_cells():
    grid = cells(BLOCKS_TABLE1, seeds=2)
    assert len(grid) == (8 * 6 - 2) * 2
    names = [r.name for r in BLOCKS_TABLE1.rows]
    assert names == ["Seq-MT (L)", "Seq-MT (L+A)", "Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)", "Comm-MT (L)",
                     "Comm-MT (L+A)", "Heatmap-MT (L)", "Heatmap-MT (L+A)"]
    assert BLOCKS_TABLE1.rows[3].paper == {1.0: 6.25, 5.0: 1.70, 10.0: 1.26, 20.0: 1.07, 50.0: 0.74}


def test_tiny_grid_end_to_end_and_rerun_skips_finished_cells(tmp_path, capsys):
    args = ["reproduce", "blocks-table1", "--out", str(tmp_path), "--seeds", "1", "--quiet",
            *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert list(rows[0]) == ["model", "labelled_pct", "error_mean", "error_std", "seeds", "paper"]
    assert len(rows) == 46 and {r["model"] for r in rows} == {r.name for r in BLOCKS_TABLE1.rows}
    assert all(r["seeds"] == "1" and float(r["error_mean"]) >= 0 for r in rows)
    assert [r["paper"] for r in rows if r["model"] == "Seq-MT (L)"][:2] == ["8.33", "3.95"]
    md = (tmp_path / "table.md").read_text()
    assert "| Seq-MT (L+ELT+A) |" in md and ("(6.25)" in md or "(**6.25**)" in md)
    assert f"`{TINY[0]}`" in md and "training loops:" in md  # the --set changes are stated beside the figures
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    before = (tmp_path / "table.csv").read_text()
    t0 = time.time()
    assert main(args) == 0  # everything is finished: only the aggregation runs
    assert time.time() - t0 < 15 and (tmp_path / "table.csv").read_text() == before


def test_parallel_jobs_give_the_same_table_as_one_process(tmp_path):
    """Cells are independent and deterministic: 2 worker processes reproduce the sequential numbers (up to
    float reduction order: a worker uses 1 thread where the sequential run uses 2)."""
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["reproduce", "blocks-table1", "--out", str(tmp_path / "one"), "--seeds", "1", "--quiet", *sets]) == 0
    # through `python -m` (the spawned workers must not rerun the command line)
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    r = subprocess.run([sys.executable, "-m", "sslandmarks", "reproduce", "blocks-table1", "--out",
                        str(tmp_path / "two"), "--seeds", "1", "--quiet", "--jobs", "2", *sets],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    one = [float(r["error_mean"]) for r in csv.DictReader(open(tmp_path / "one" / "table.csv"))]
    two = [float(r["error_mean"]) for r in csv.DictReader(open(tmp_path / "two" / "table.csv"))]
    assert two == pytest.approx(one, abs=1e-3)


@pytest.mark.parametrize("args, needle", [
    (["reproduce", "nope", "--out", "x"], "invalid choice"),
    (["reproduce", "blocks-table1", "--out", "{tmp}", "--seeds", "0"], "--seeds 0"),
    (["reproduce", "blocks-table1", "--out", "/proc/x/y"], "cannot write"),
    (["reproduce", "blocks-table1", "--out", "{tmp}", "--set", "train.nope=1"], "unknown config key"),
])
def test_reproduce_validates_arguments(tmp_path, capsys, args, needle):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_quick_grid_in_the_slow_tier(tmp_path):
    assert main(["reproduce", "blocks-table1", "--out", str(tmp_path), "--quick", "--seeds", "1", "--quiet"]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "table.csv")))) == 46


def test_shapes_figure3_quick(tmp_path):
    assert main(["reproduce", "shapes-figure3", "--out", str(tmp_path), "--quick", "--quiet"]) == 0
    md = (tmp_path / "figure3.md").read_text()
    assert "class accuracy" in md and "landmark consistency" in md
    assert (tmp_path / "figure3.png").stat().st_size > 10_000


def _hand_manifest(root) -> str:
    """36 generated 'photos' (3 per subject id01-id12) with 21 points and a gesture each, in HGR1's columns."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["image,gesture,subject,score," + ",".join(f"x{k},y{k}" for k in range(21))]
    for s in range(1, 13):
        for j in range(3):
            img = (rng.random((48, 56)) * 80).astype(np.uint8)
            pts = rng.uniform(10, 40, size=(21, 2))
            for x, y in pts.astype(int):
                img[y - 1:y + 2, x - 1:x + 2] = 255
            name = f"{s}_{j}.png"
            Image.fromarray(img).save(root / name)
            lines.append(f"{name},{'AB'[j % 2]},id{s:02d},0.9," + ",".join(f"{v:.2f}" for v in pts.flatten()))
    (root / "hands.csv").write_text("\n".join(lines) + "\n")
    return str(root / "hands.csv")


def test_hgr1_table_with_generated_hands(tmp_path):
    """The HGR1 runner end to end on a generated manifest: NME by palm width, the gesture-accuracy table
    (rows with A only, the paper's Table S3 beside), the Fig. 7-like comparison, and row/column selection."""
    from sslandmarks.tables import HGR1_TABLE2

    manifest = _hand_manifest(tmp_path)
    sets = [f"data.{k}_path=[{manifest}]" for k in ("train", "val", "test")] + [
        "model.input_size=[16,16]", "model.width=2", "model.depth=2", "model.kernel=3", "model.pointwise=[2]",
        "model.mlp_hidden=[8]", "train.batch_labelled=2", "train.batch_unlabelled=2", "train.steps=2",
        "train.eval_every=2", "train.log_every=2", "train.checkpoint_every=2"]
    args = ["reproduce", "hgr1", "--out", str(tmp_path / "out"), "--seeds", "1", "--quiet",
            *[a for s in sets for a in ("--set", s)]]
    assert main([*args, "--fractions", "5", "50", "--models", "Seq-MT (L)", "Seq-MT (L+ELT+A)"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "table.csv")))
    assert list(rows[0]) == ["model", "labelled_pct", "nme_mean", "nme_std", "seeds", "paper"]
    ran = {(r["model"], r["labelled_pct"]) for r in rows if r["seeds"] == "1"}
    assert ran == {("Seq-MT (L)", "5"), ("Seq-MT (L)", "50"), ("Seq-MT (L+ELT+A)", "5"), ("Seq-MT (L+ELT+A)", "50")}
    assert len(rows) == 38 and float(next(r for r in rows if r["seeds"] == "1")["nme_mean"]) > 0
    acc = list(csv.DictReader(open(tmp_path / "out" / "accuracy.csv")))
    assert {r["model"] for r in acc} == {"Seq-MT (L+ELT+A)"}  # L has no gesture head to score
    assert [r["paper"] for r in acc] == ["74.64", "79.1"] and 0 <= float(acc[0]["accuracy_mean"]) <= 100
    md = (tmp_path / "out" / "table.md").read_text()
    assert "MediaPipe" in md and "gesture accuracy" in md and ("(52.60)" in md or "(**52.60**)" in md)
    assert (tmp_path / "out" / "figure.png").stat().st_size > 10_000  # L vs L+ELT+A at 5 %
    assert HGR1_TABLE2.rows[3].paper[5.0] == 40.6 and HGR1_TABLE2.rows[5].paper_accuracy[5.0] == 60.86


@pytest.mark.parametrize("extra, needle", [
    (["--fractions", "7"], "--fractions 7: hgr1 has the columns 5, 10, 20, 50, 100"),
    (["--models", "Seq-MT"], "--models 'Seq-MT': hgr1 has the rows"),
])
def test_reproduce_selection_is_validated(tmp_path, capsys, extra, needle):
    assert main(["reproduce", "hgr1", "--out", str(tmp_path), *extra]) == 2
    assert needle in capsys.readouterr().err


def _face_files(root, n: int = 24) -> tuple[str, str]:
    """Generated faces: an MTFL list (5 points + 4 attributes) and a folder of 68-point iBUG .pts files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    (root / "pts").mkdir()
    lines = []
    for i in range(n):
        img = (rng.random((60, 60)) * 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"f{i}.png")
        Image.fromarray(img).save(root / "pts" / f"f{i}.png")
        five = rng.uniform(15, 45, size=(5, 2))
        attrs = [1 + i % 2, 1 + (i // 2) % 2, 1, 1 + i % 5]
        lines.append(f" f{i}.png " + " ".join(f"{v:.1f}" for v in [*five[:, 0], *five[:, 1]])
                     + " " + " ".join(map(str, attrs)))
        pts = rng.uniform(10, 50, size=(68, 2)) + 1  # 1-based in the file
        (root / "pts" / f"f{i}.pts").write_text(
            "version: 1\nn_points: 68\n{\n" + "\n".join(f"{x:.2f} {y:.2f}" for x, y in pts) + "\n}\n")
    (root / "list.txt").write_text("\r\n".join(lines) + "\r\n")
    return str(root / "list.txt"), str(root / "pts")


FACE_TINY = ["model.input_size=[16,16]", "model.width=2", "model.depth=1", "model.kernel=3", "model.levels=2",
             "model.head_kernel=1", "model.mlp_hidden=[8]", "train.batch_labelled=2", "train.batch_unlabelled=2",
             "train.steps=2", "train.eval_every=2", "train.log_every=2", "train.checkpoint_every=2"]


def test_mtfl_and_300w_tables_with_generated_faces(tmp_path):
    """Both face tables end to end on generated files: the MTFL csv has no paper column (the paper has no
    MTFL table) and tabulates the four attribute accuracies; the 300-W table adds inter-pupil NME, AUC and
    failure rate, and its ELT rows have a 100 % column (ELT on every image, as the paper does on 300-W)."""
    mtfl, pts = _face_files(tmp_path)
    sets = [f"data.train_path=[{mtfl}]", f"data.test_path=[{mtfl}]", "data.val_fraction=0.25", *FACE_TINY]
    assert main(["reproduce", "mtfl", "--out", str(tmp_path / "m"), "--seeds", "1", "--quiet", "--fractions", "20",
                 "--models", "Seq-MT (L+ELT+A)", "RCN+ (L)", *[a for s in sets for a in ("--set", s)]]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m" / "table.csv")))
    assert list(rows[0]) == ["model", "labelled_pct", "nme_mean", "nme_std", "seeds"]
    assert len(rows) == 6 * 5 - 2
    assert {r["model"] for r in rows if r["seeds"] == "1"} == {"Seq-MT (L+ELT+A)", "RCN+ (L)"}
    md = (tmp_path / "m" / "table.md").read_text()
    assert "Test pose accuracy (%):" in md and "| Seq-MT (L+ELT+A) |" in md.split("pose accuracy")[1]
    assert "| RCN+ (L) |" not in md.split("pose accuracy")[1]  # no attribute heads trained without A
    more = list(csv.DictReader(open(tmp_path / "m" / "metrics.csv")))
    assert "attribute_accuracy.pose_mean" in more[0]

    sets = [f"data.train_path=[{pts}]", f"data.test_path=[{pts}]", "data.val_fraction=0.25", *FACE_TINY]
    assert main(["reproduce", "300w-partial", "--out", str(tmp_path / "w"), "--seeds", "1", "--quiet", "--fractions",
                 "100", "--models", "RCN+ (L+ELT)", *[a for s in sets for a in ("--set", s)]]) == 0
    more = list(csv.DictReader(open(tmp_path / "w" / "metrics.csv")))
    cell = next(r for r in more if r["model"] == "RCN+ (L+ELT)" and r["labelled_pct"] == "100")
    assert cell["seeds"] == "1" and float(cell["nme_by.interpupil_mean"]) > 0
    assert 0 <= float(cell["auc@0.08_mean"]) <= 1 and 0 <= float(cell["failure_rate@0.08_mean"]) <= 1
    md = (tmp_path / "w" / "table.md").read_text()
    assert "inter-pupil" in md and "AUC@0.08" in md and "failure rate@0.08" in md
