"""The reproduction runner: a tiny grid end to end, resumable; the real --quick grid in the slow tier."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_module, sets
from sslandmarks.cli import main
from sslandmarks.hardware import describe, machine
from sslandmarks.runner import cell_config
from sslandmarks.tables import BLOCKS_TABLE1, cell_dir, cells


def _row(name: str):
    return next(r for r in BLOCKS_TABLE1.rows if r.name == name)


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


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """Blocks Table 1 at two columns (5 %: every row; 100 %: the rows that have it), one seed, in-process."""
    out = tmp_path_factory.mktemp("grid")
    args = ["reproduce", "blocks-table1", "--out", str(out), "--seeds", "1", "--quiet", "--fractions", "5", "100",
            "--protocol", "paper", *sets(TINY)]
    assert main(args) == 0
    return out, args


def test_tiny_grid_end_to_end_and_rerun_skips_finished_cells(tiny_grid):
    out, args = tiny_grid
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert list(rows[0]) == ["model", "labelled_pct", "error_mean", "error_std", "seeds", "paper"]
    assert len(rows) == 46 and {r["model"] for r in rows} == {r.name for r in BLOCKS_TABLE1.rows}
    ran = [r for r in rows if r["seeds"] == "1"]
    assert {r["labelled_pct"] for r in ran} == {"5", "100"} and len(ran) == 8 + 6  # no ELT row at 100 %
    assert all(r["seeds"] == "0" for r in rows if r["labelled_pct"] not in ("5", "100"))
    for r in ran:  # each cell's figure is its run's own test error
        run = cell_dir(out, _row(r["model"]), float(r["labelled_pct"]), 0)
        metrics = json.loads((run / "metrics.json").read_text())
        assert r["error_mean"] == f"{metrics['mean_error_px']:.4f}" and r["error_std"] == ""  # one seed: no std
    assert [r["paper"] for r in rows if r["model"] == "Seq-MT (L)"][:2] == ["8.33", "3.95"]
    md = (out / "table.md").read_text()
    assert "| Seq-MT (L+ELT+A) |" in md and ("(1.70)" in md or "(**1.70**)" in md)
    assert f"`{TINY[0]}`" in md and "Training hours of the cells" in md  # --set changes stated beside the figures
    assert "wall time of this invocation" in md
    assert (out / "plot.png").stat().st_size > 10_000
    before = (out / "table.csv").read_text()
    runs = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    assert main(args) == 0  # everything is finished: only the aggregation runs
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()} == runs  # nothing retrained
    assert (out / "table.csv").read_text() == before
    assert "wall time of this invocation" not in (out / "table.md").read_text()  # the rerun trained nothing


def test_parallel_jobs_give_the_same_table_as_one_process(tiny_grid, tmp_path):
    """Cells are independent and deterministic: 2 worker processes reproduce the sequential numbers (up to
    float reduction order: a worker uses 1 thread where the sequential run uses 2). Through ``python -m``:
    the spawned workers must not rerun the command line."""
    one, _ = tiny_grid
    r = run_module(["reproduce", "blocks-table1", "--out", str(tmp_path), "--seeds", "1", "--quiet", "--jobs", "2",
                    "--fractions", "5", "--protocol", "paper", *sets(TINY)])
    assert r.returncode == 0, r.stderr[-2000:]
    two = {(r["model"], r["labelled_pct"]): r for r in csv.DictReader(open(tmp_path / "table.csv"))}
    ran = [k for k, r in two.items() if r["seeds"] == "1"]
    assert len(ran) == 8
    sequential = {(r["model"], r["labelled_pct"]): r for r in csv.DictReader(open(one / "table.csv"))}
    assert [float(two[k]["error_mean"]) for k in ran] == pytest.approx(
        [float(sequential[k]["error_mean"]) for k in ran], abs=1e-3)


def test_cpu_protocol_of_blocks_has_its_seeds_and_recipe():
    cpu = BLOCKS_TABLE1.protocols["cpu"]
    assert next(iter(BLOCKS_TABLE1.protocols)) == "cpu"  # the default, as committed in results/blocks-table1
    grid = cells(BLOCKS_TABLE1, cpu)
    per = {pct: len({s for _, p, s in grid if p == pct}) for pct in BLOCKS_TABLE1.fractions}
    assert per == {1.0: 3, 5.0: 3, 10.0: 3, 20.0: 1, 50.0: 1, 100.0: 1}
    assert len(grid) == 8 * 3 * 3 + 8 * 2 + 6
    row = BLOCKS_TABLE1.rows[0]
    cfg = cell_config(BLOCKS_TABLE1, row, 5.0, 2, False, ["train.steps=7"], cpu)
    assert (cfg.train.lr, cfg.train.precision, cfg.train.seed, cfg.data.labelled_pct) == (0.003, "auto", 2, 5.0)
    assert cfg.train.steps == 7  # --set wins over the protocol


def test_a_protocol_may_train_some_rows_and_columns_only():
    """``Protocol.rows`` / ``fractions`` restrict the grid and the table (an issue may ask for fewer rows)."""
    from sslandmarks.tables import Protocol, under

    proto = Protocol(seeds={5.0: 2}, rows=("Seq-MT (L)", "Seq-MT (L+ELT)"), fractions=(5.0, 100.0))
    table = under(BLOCKS_TABLE1, proto)
    assert [r.name for r in table.rows] == ["Seq-MT (L)", "Seq-MT (L+ELT)"] and table.fractions == (5.0, 100.0)
    grid = [(r.name, p, s) for r, p, s in cells(table, proto)]
    assert grid == [("Seq-MT (L)", 5.0, 0), ("Seq-MT (L)", 5.0, 1), ("Seq-MT (L)", 100.0, 0),
                    ("Seq-MT (L+ELT)", 5.0, 0), ("Seq-MT (L+ELT)", 5.0, 1)]  # no ELT row at 100 %
    assert under(BLOCKS_TABLE1, Protocol()) == BLOCKS_TABLE1


def test_hgr1_cpu_protocol_narrows_every_network_alike():
    """The hands CPU protocol: width 16 for every row, the baselines' 1x1 layers too, and the issue's six rows."""
    from sslandmarks.tables import HGR1_TABLE2, under

    cpu = HGR1_TABLE2.protocols["cpu"]
    table = under(HGR1_TABLE2, cpu)
    assert [r.name for r in table.rows] == ["Seq-MT (L)", "Seq-MT (L+A)", "Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)",
                                            "Comm-MT (L+A)", "Heatmap-MT (L+A)"]
    assert len(cells(table, cpu)) == 2 * (3 + 3 + 1 + 1) + 4 * (3 + 3 + 1 + 1 + 1)  # ELT rows: no 100 %
    for row in table.rows:
        m = cell_config(table, row, 5.0, 1, False, None, cpu).model
        assert m.width == 16 and all(w == 16 for w in m.pointwise), (row.name, m)


def test_hgr1_long_protocol_trains_the_claims_two_rows_at_5_pct_for_3000_steps():
    from sslandmarks.report import _claim_lines
    from sslandmarks.tables import HGR1_TABLE2, under

    long, cpu = HGR1_TABLE2.protocols["cpu-long"], HGR1_TABLE2.protocols["cpu"]
    table = under(HGR1_TABLE2, long)
    assert [(r.name, p, s) for r, p, s in cells(table, long)] == [
        ("Seq-MT (L)", 5.0, 0), ("Seq-MT (L)", 5.0, 1), ("Seq-MT (L)", 5.0, 2),
        ("Seq-MT (L+ELT+A)", 5.0, 0), ("Seq-MT (L+ELT+A)", 5.0, 1), ("Seq-MT (L+ELT+A)", 5.0, 2)]
    for row in table.rows:  # only the length differs from the 800-step table
        a, b = cell_config(table, row, 5.0, 1, False, None, long), cell_config(table, row, 5.0, 1, False, None, cpu)
        assert (a.train.steps, b.train.steps, a.train.eval_every) == (3000, 800, 250)
        assert a.model == b.model and a.data == b.data and (a.train.lr, a.train.warmup_steps) == (b.train.lr, 100)
    results = [{"model": r.name, "labelled_pct": 5.0, "mean": m, "std": 1.0, "seeds": 3}
               for r, m in zip(table.rows, (50.0, 39.0))]
    assert _claim_lines(table, results)[3:] == ["- Seq-MT (L+ELT+A) <= 0.8 x Seq-MT (L): held at 5 %."]  # no L+A row


@pytest.mark.parametrize("name, count", [("mtfl", 2 * (3 + 3 + 1) + 4 * (3 + 3 + 1 + 1)), ("300w-partial", 4 * 4 * 2)])
def test_face_cpu_protocols_size_every_row_of_an_architecture_alike(name, count):
    """The face CPU protocols: Seq-MT rows 5 convs 9x9x16, RCN+ rows the face68-fast net, the issue's columns."""
    from sslandmarks.models import check_config
    from sslandmarks.tables import TABLES, under

    cpu = TABLES[name].protocols["cpu"]
    table = under(TABLES[name], cpu)
    assert len(cells(table, cpu)) == count
    for row in table.rows:
        cfg = cell_config(table, row, 5.0, 0, False, None, cpu)
        check_config(cfg)
        m, t = cfg.model, cfg.train
        assert (t.steps, t.lr, t.precision, t.batch_labelled, t.eval_every) == (900, 0.003, "auto", 16, 150)
        assert t.batch_unlabelled == (16 if name == "mtfl" else 8)  # 300-W warps every face: 2 x (16 + 8)
        if m.name == "seqmt":
            assert (m.width, m.depth, m.kernel, m.input_size) == (16, 5, 9, (64, 64)), row.name
        else:
            assert (m.name, m.width, m.levels, m.stem_stride, m.input_size) == ("rcn+", 48, 3, 2, (64, 64)), row.name


def test_a_cell_is_reused_only_under_the_same_config(tiny_grid, tmp_path, capsys):
    """A finished cell trained under other settings is refused (not silently reused), --fresh retrains it,
    and a cell cut off without a checkpoint (as a committed result folder keeps it) starts again."""
    src, args = tiny_grid
    row = BLOCKS_TABLE1.rows[0]
    out = tmp_path / "t"
    shutil.copytree(cell_dir(src, row, 5.0, 0), cell_dir(out, row, 5.0, 0))
    base = ["reproduce", "blocks-table1", "--out", str(out), "--seeds", "1", "--quiet", "--fractions", "5",
            "--models", "Seq-MT (L)", "--protocol", "paper", *sets(TINY)]
    metrics = cell_dir(out, row, 5.0, 0) / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert main(base) == 0 and metrics.stat().st_mtime_ns == stamp  # same config: reused
    assert main([*base, "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "train.lr (0.003 -> 0.5)" in err and "--fresh" in err
    assert metrics.stat().st_mtime_ns == stamp
    assert main([*base, "--set", "train.lr=0.5", "--fresh"]) == 0
    assert yaml.safe_load((metrics.parent / "config.yaml").read_text())["train"]["lr"] == 0.5
    shutil.rmtree(metrics.parent / "checkpoints")  # what a committed, cut-off cell looks like
    metrics.unlink()
    assert main([*base, "--set", "train.lr=0.5"]) == 0 and metrics.is_file()


def test_a_cell_in_either_arithmetic_of_auto_is_reused_and_its_machine_is_stated(tiny_grid, tmp_path, capsys):
    """A protocol asking for ``train.precision=auto`` reuses a cell trained in bfloat16 (an AMX CPU) or float32
    (elsewhere), or with another ``train.conv``, not one in float64; ``table.md`` says where and in which
    arithmetic the cells ran."""
    src, _ = tiny_grid
    row = BLOCKS_TABLE1.rows[0]
    out = tmp_path / "t"
    run = cell_dir(out, row, 5.0, 0)
    shutil.copytree(cell_dir(src, row, 5.0, 0), run)
    base = ["reproduce", "blocks-table1", "--out", str(out), "--seeds", "1", "--quiet", "--fractions", "5",
            "--models", "Seq-MT (L)", "--protocol", "paper", *sets([*TINY, "train.precision=auto"])]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "32-true" and metrics["machine"]["cores"] >= 1
    saved = yaml.safe_load((run / "config.yaml").read_text())
    stamp = (run / "metrics.json").stat().st_mtime_ns
    for precision in ("32-true", "bf16-mixed"):
        saved["train"]["precision"] = precision
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
        assert main(base) == 0 and (run / "metrics.json").stat().st_mtime_ns == stamp  # reused
    saved["train"]["conv"] = "fft"  # the convolution algorithm (the same function) never clashes either
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(base) == 0 and (run / "metrics.json").stat().st_mtime_ns == stamp
    md = (out / "table.md").read_text()
    assert f"Where the cells ran: 1 cell(s) in float32 on {describe(machine())} (" in md
    del metrics["precision"], metrics["machine"]  # a cell finished before these were recorded
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(base) == 0
    assert "1 cell(s) in bfloat16 autocast on a machine not recorded" in (out / "table.md").read_text()
    saved["train"]["precision"] = "64-true"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(base) == 2 and "train.precision ('64-true' -> 'auto')" in capsys.readouterr().err


def test_reproduce_workers_die_with_their_parent(tmp_path):
    """SIGKILL to ``reproduce --jobs 2`` must not leave its workers training (they would idle at ~0.6 GB)."""
    import signal
    import time

    cmd = [sys.executable, "-m", "sslandmarks", "reproduce", "blocks-table1", "--out", str(tmp_path), "--seeds", "1",
           "--quiet", "--jobs", "2", "--fractions", "5", "--protocol", "paper", *sets(TINY[:-4]),
           "--set", "train.steps=100000"]
    parent = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("runs/*/*/log.csv"))) < 2:
        time.sleep(0.2)
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                                                 text=True).stdout.split()]
    assert children, "no worker processes were started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() and "Z" not in _state(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if Path(f"/proc/{c}").exists() and "Z" not in _state(c)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize("args, needle", [
    (["reproduce", "nope", "--out", "x"], "invalid choice"),
    (["reproduce", "blocks-table1", "--out", "{tmp}", "--protocol", "gpu"], "has the protocols cpu, paper"),
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
    assert main(["reproduce", "shapes-figure3", "--out", str(tmp_path), "--quick", "--quiet",
                 *sets(["model.width=4", "model.depth=2", "model.pointwise=[4]"])]) == 0
    md = (tmp_path / "figure3.md").read_text()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert f"| class accuracy | {metrics['attribute_accuracy']['nearer']:.3f} | 0.99 |" in md
    assert f"| landmark consistency | {metrics['landmark_consistency']:.3f} |" in md
    assert metrics["n_images"] == 200 and "30 steps" in md  # the --quick run
    assert (tmp_path / "figure3.png").read_bytes() == (tmp_path / "run" / "figure3.png").read_bytes()
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


def test_hgr1_table_with_generated_hands(tmp_path, monkeypatch):
    """The HGR1 runner end to end on a generated manifest: NME by palm width, the gesture-accuracy table
    (rows with A only, the paper's Table S3 beside), the Fig. 7-like comparison (its legend names the reference
    points as MediaPipe's), and row/column selection."""
    import sslandmarks.runner as runner
    from sslandmarks.tables import HGR1_TABLE2

    legends = []
    grid = runner.prediction_grid
    monkeypatch.setattr(runner, "prediction_grid", lambda *a, **k: (legends.append(k["gt_label"]), grid(*a, **k)))

    manifest = _hand_manifest(tmp_path)
    items = [f"data.{k}_path=[{manifest}]" for k in ("train", "val", "test")] + [
        "model.input_size=[16,16]", "model.width=2", "model.depth=2", "model.kernel=3", "model.pointwise=[2]",
        "model.mlp_hidden=[8]", "train.batch_labelled=2", "train.batch_unlabelled=2", "train.steps=2",
        "train.eval_every=2", "train.log_every=2", "train.checkpoint_every=2"]
    args = ["reproduce", "hgr1", "--out", str(tmp_path / "out"), "--seeds", "1", "--quiet", *sets(items)]
    assert main([*args, "--fractions", "5", "50", "--models", "Seq-MT (L)", "Seq-MT (L+ELT+A)"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "table.csv")))
    assert list(rows[0]) == ["model", "labelled_pct", "nme_mean", "nme_std", "seeds", "paper",
                             "accuracy_mean", "accuracy_std", "paper_accuracy"]
    ran = {(r["model"], r["labelled_pct"]) for r in rows if r["seeds"] == "1"}
    assert ran == {("Seq-MT (L)", "5"), ("Seq-MT (L)", "50"), ("Seq-MT (L+ELT+A)", "5"), ("Seq-MT (L+ELT+A)", "50")}
    assert len(rows) == 6 * 5 - 2 and float(next(r for r in rows if r["seeds"] == "1")["nme_mean"]) > 0  # cpu rows
    acc = [r for r in rows if r["accuracy_mean"]]
    assert {r["model"] for r in acc} == {"Seq-MT (L+ELT+A)"}  # L has no gesture head to score
    assert [r["paper_accuracy"] for r in acc] == ["74.64", "79.1"]  # its 5 and 50 % cells; the others are empty
    cell = tmp_path / "out" / "runs" / "Seq-MT_L-ELT-A" / "5pct-seed0" / "metrics.json"
    assert acc[0]["accuracy_mean"] == f"{100 * json.loads(cell.read_text())['attribute_accuracy']['gesture']:.2f}"
    md = (tmp_path / "out" / "table.md").read_text()
    assert "MediaPipe" in md and "gesture accuracy" in md and ("(52.60)" in md or "(**52.60**)" in md)
    assert (tmp_path / "out" / "figure.png").stat().st_size > 10_000  # L vs L+ELT+A at 5 %
    assert legends and "MediaPipe Hands" in legends[-1] and "not human annotation" in legends[-1]
    # a committed result folder keeps no checkpoints: the figure is drawn from the runs' test_predictions.json
    kept = json.loads((cell.parent / "test_predictions.json").read_text())["landmarks"]
    assert len(kept) == 6 and len(kept[0]) == 21  # the 6 test hands (subjects id09, id10), 21 points each
    for ckpt in (tmp_path / "out" / "runs").rglob("checkpoints"):
        shutil.rmtree(ckpt)
    (tmp_path / "out" / "figure.png").unlink()
    drawn = []
    monkeypatch.setattr(runner, "prediction_grid", lambda *a, **k: drawn.append(a[2]))
    assert main([*args, "--report-only"]) == 0
    assert drawn[0]["Seq-MT (L+ELT+A) (5 %)"].tolist() == kept
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
    items = [f"data.train_path=[{mtfl}]", f"data.test_path=[{mtfl}]", "data.val_fraction=0.25", *FACE_TINY]
    assert main(["reproduce", "mtfl", "--out", str(tmp_path / "m"), "--seeds", "1", "--quiet", "--fractions", "20",
                 "--models", "Seq-MT (L+ELT+A)", "RCN+ (L)", *sets(items)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "m" / "table.csv")))
    assert list(rows[0])[:5] == ["model", "labelled_pct", "nme_mean", "nme_std", "seeds"]  # no paper column
    assert {"auc@0.10_mean", "failure_rate@0.10_std", "attribute_accuracy.pose_mean"} <= set(rows[0])
    assert len(rows) == 6 * 4 - 2  # the cpu protocol: 1, 5, 20 and 100 %; no Seq-MT ELT row at 100 %
    assert {r["model"] for r in rows if r["seeds"] == "1"} == {"Seq-MT (L+ELT+A)", "RCN+ (L)"}
    md = (tmp_path / "m" / "table.md").read_text()
    assert "Test pose accuracy (%):" in md and "| Seq-MT (L+ELT+A) |" in md.split("pose accuracy")[1]
    assert "| RCN+ (L) |" not in md.split("pose accuracy")[1]  # no attribute heads trained without A
    cell = next(r for r in rows if r["model"] == "Seq-MT (L+ELT+A)" and r["labelled_pct"] == "20")
    metrics = json.loads((tmp_path / "m" / "runs" / "Seq-MT_L-ELT-A" / "20pct-seed0" / "metrics.json").read_text())
    assert cell["failure_rate@0.10_mean"] == f"{metrics['failure_rate@0.10']:.4f}"
    assert cell["attribute_accuracy.pose_mean"] == f"{100 * metrics['attribute_accuracy']['pose']:.4f}"
    assert next(r for r in rows if r["model"] == "RCN+ (L)" and r["labelled_pct"] == "20")[
        "attribute_accuracy.pose_mean"] == ""  # no attribute head trained without A
    assert "AUC@0.10" in md and "failure rate@0.10" in md

    items = [f"data.train_path=[{pts}]", f"data.test_path=[{pts}]", "data.val_fraction=0.25", *FACE_TINY]
    assert main(["reproduce", "300w-partial", "--out", str(tmp_path / "w"), "--seeds", "1", "--quiet", "--fractions",
                 "100", "--models", "RCN+ (L+ELT)", *sets(items)]) == 0
    more = list(csv.DictReader(open(tmp_path / "w" / "table.csv")))
    cell = next(r for r in more if r["model"] == "RCN+ (L+ELT)" and r["labelled_pct"] == "100")
    assert cell["seeds"] == "1" and float(cell["nme_by.interpupil_mean"]) > 0
    metrics = json.loads((tmp_path / "w" / "runs" / "RCN-_L-ELT" / "100pct-seed0" / "metrics.json").read_text())
    assert cell["auc@0.08_mean"] == f"{metrics['auc@0.08']:.4f}"
    assert cell["failure_rate@0.08_mean"] == f"{metrics['failure_rate@0.08']:.4f}"
    md = (tmp_path / "w" / "table.md").read_text()
    assert "inter-pupil" in md and "AUC@0.08" in md and "failure rate@0.08" in md


def test_report_only_trains_nothing_and_aggregates_what_is_there(tiny_grid, tmp_path):
    src, _ = tiny_grid
    typo = tmp_path / "no-such-grid"  # a mistyped --out: an error, not an empty table
    assert main(["reproduce", "blocks-table1", "--out", str(typo), "--report-only", "--quiet"]) == 2
    assert not typo.exists()
    (tmp_path / "runs").mkdir()  # a grid that has not finished a run yet
    assert main(["reproduce", "blocks-table1", "--out", str(tmp_path), "--report-only", "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert len(rows) == 46 and all(r["seeds"] == "0" for r in rows) and not any((tmp_path / "runs").iterdir())
    before = {p: p.stat().st_mtime_ns for p in (src / "runs").rglob("*") if p.is_file()}
    assert main(["reproduce", "blocks-table1", "--out", str(src), "--report-only", "--quiet", "--protocol", "paper",
                 "--seeds", "1", *sets(TINY)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (src / "runs").rglob("*") if p.is_file()} == before
    assert sum(r["seeds"] == "1" for r in csv.DictReader(open(src / "table.csv"))) == 8 + 6
    md = (src / "table.md").read_text()
    assert "wall time of this invocation" not in md  # it trained nothing
    assert "Unfinished grid: 14 of 46 runs so far** (32 to go, ~" in md  # 5 and 100 % of 46 cells, one seed each
    assert "CPU-hours at the finished runs' pace" in md
    empty = (tmp_path / "table.md").read_text()  # the cpu protocol: 3 seeds at 1-10 %
    assert "Unfinished grid: 0 of 94 runs so far** (94 to go; a cell's mean" in empty  # no pace to go by


def test_publish_copies_the_aggregate_under_the_tables_name(tiny_grid, tmp_path):
    """``--publish DIR``: DIR/blocks_table1.csv equals table.csv, the .md links the published plot."""
    src, _ = tiny_grid
    dest = tmp_path / "results"
    assert main(["reproduce", "blocks-table1", "--out", str(src), "--report-only", "--quiet", "--protocol", "paper",
                 "--seeds", "1", "--publish", str(dest), *sets(TINY)]) == 0
    assert (dest / "blocks_table1.csv").read_text() == (src / "table.csv").read_text()
    assert (dest / "blocks_table1.png").read_bytes() == (src / "plot.png").read_bytes()
    md = (dest / "blocks_table1.md").read_text()
    assert md.startswith((src / "table.md").read_text()) and "](blocks_table1.png)" in md
    assert main(["reproduce", "shapes-figure3", "--out", str(tmp_path / "s"), "--publish", str(dest)]) == 2


def test_table_md_says_where_the_papers_orderings_held():
    from sslandmarks.report import _claim_lines
    from sslandmarks.tables import Claim, Row, Table

    table = Table(rows=(Row("A", "blocks.yaml", "L"), Row("B", "blocks.yaml", "L")), fractions=(1.0, 5.0, 10.0),
                  metric="mean_error_px", unit="px", title="t",
                  claims=(Claim("A", "B", (1.0, 5.0, 10.0)), Claim("A", "B", (5.0,), 0.5)))

    def cell(model, pct, mean, std=0.1, seeds=3):
        return {"model": model, "labelled_pct": pct, "mean": mean, "std": std, "seeds": seeds}

    results = [cell("A", 1.0, 2.0), cell("B", 1.0, 1.9), cell("A", 5.0, 1.0), cell("B", 5.0, 1.9),
               cell("A", 10.0, 3.0, seeds=0), cell("B", 10.0, 4.0)]
    lines = _claim_lines(table, results)
    assert lines[-2] == ("- A < B: held at 5 %; not at 1 % (2.00 +- 0.10 vs 1.90 +- 0.10, 3 seed(s) each); "
                         "not computed yet at 10 %.")
    assert lines[-1] == "- A <= 0.5 x B: not at 5 % (1.00 +- 0.10 vs 1.90 +- 0.10, 3 seed(s) each)."
    assert _claim_lines(dataclasses.replace(table, claims=()), results) == []
    one = [cell("A", 5.0, 2.0, math.nan, 1), cell("B", 5.0, 1.9, math.nan, 1)]  # one seed: the value alone
    assert _claim_lines(table, one)[-1] == "- A <= 0.5 x B: not at 5 % (2.00 vs 1.90, 1 seed(s) each)."


def test_stats_give_the_sample_std_over_seeds_and_none_for_one_seed():
    from sslandmarks.report import _stats

    mean, std = _stats([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0) and std == pytest.approx(math.sqrt((4 + 1 + 9) / 2))  # n - 1 = 2
    assert _stats([4.0])[0] == 4.0 and math.isnan(_stats([4.0])[1])
    assert all(math.isnan(v) for v in _stats([]))


def test_hours_to_go_prices_each_rows_remaining_runs_at_its_own_pace():
    from sslandmarks.report import _hours_to_go
    from sslandmarks.tables import Row

    a, b, c = Row("A", "blocks.yaml", "L"), Row("B", "blocks.yaml", "L"), Row("C", "blocks.yaml", "L")
    planned = [(row, pct, seed) for row in (a, b, c) for pct in (5.0, 10.0) for seed in (0, 1)]  # 4 runs per row
    results = [{"model": "A", "seeds": 2, "train_minutes": 60.0}, {"model": "A", "seeds": 0, "train_minutes": 0.0},
               {"model": "B", "seeds": 1, "train_minutes": 240.0}, {"model": "C", "seeds": 0, "train_minutes": 0.0}]
    # A: 2 to go at 30 min; B: 3 at 240 min; C: 4 at the mean of all finished runs, 300 / 3 = 100 min
    hours = (2 * 30 + 3 * 240 + 4 * 100) / 60
    assert _hours_to_go(results, planned) == f", ~{hours:.1f} CPU-hours at the finished runs' pace"
    assert _hours_to_go([{**r, "seeds": 0, "train_minutes": 0.0} for r in results], planned) == ""


def test_table_md_counts_the_runs_whose_best_validation_was_their_last(tmp_path):
    from sslandmarks.report import _best_at_last_line, best_at_last, log_rows
    from sslandmarks.tables import Row, Table

    def log(name, scores):
        path = tmp_path / f"{name}.csv"
        lines = ["step,total,val_score"] + [f"{50 * i},1.0,{s}" for i, s in enumerate(scores, 1)]
        path.write_text("\n".join(lines) + "\n")
        return log_rows(path)

    assert best_at_last(log("falling", ["", 9.0, "", 7.0, "", 5.0])) is True  # training rows have no score
    assert best_at_last(log("turned", [9.0, 5.0, 7.0])) is False
    assert best_at_last(log("tie", [5.0, 5.0])) is False  # the first of equal scores is the best kept
    assert best_at_last(log("once", ["", 5.0])) is None and best_at_last(log_rows(tmp_path / "missing.csv")) is None
    table = Table(rows=(Row("A", "blocks.yaml", "L"), Row("B", "blocks.yaml", "L")), fractions=(5.0,),
                  metric="mean_error_px", unit="px", title="t")
    results = [{"model": "A", "best_at_last": 2, "validated": 3}, {"model": "B", "best_at_last": 0, "validated": 1}]
    assert _best_at_last_line(table, results)[0].endswith(": 2 of 4 (A 2 of 3, B 0 of 1).")
    assert _best_at_last_line(table, [{"model": "A", "best_at_last": 0, "validated": 0}]) == []
