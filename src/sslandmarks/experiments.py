"""Paper tables as single commands: a grid of (model row x labelled fraction x seed) training runs.

Each cell trains in ``OUT/runs/<row>/<pct>pct-seed<seed>`` and is skipped when its ``metrics.json``
exists, so a stopped reproduction is rerun without redoing finished cells (an interrupted cell resumes
from its last checkpoint). The aggregate is written as ``table.csv``, ``table.md`` and ``plot.png``.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sslandmarks.config import from_dict, load_config, merge, parse_overrides, to_dict
from sslandmarks.errors import UserError

CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped with the package; ./configs links here


@dataclass(frozen=True)
class Row:
    name: str  # spelled as in the paper, e.g. "Seq-MT (L+ELT+A)"
    config: str  # file in configs/
    variant: str
    paper: dict[float, float] = field(default_factory=dict)  # labelled % -> the paper's figure


@dataclass(frozen=True)
class Table:
    rows: tuple[Row, ...]
    fractions: tuple[float, ...]
    metric: str  # key of metrics.json that is tabulated
    unit: str
    title: str
    no_full: frozenset[str] = frozenset()  # rows without the 100 % column (ELT: no unlabelled images)
    quick: dict = field(default_factory=dict)  # overrides for --quick


def _row(name: str, config: str, variant: str, paper: list[float | None], fractions) -> Row:
    return Row(name, config, variant, {f: p for f, p in zip(fractions, paper) if p is not None})


BLOCKS_FRACTIONS = (1.0, 5.0, 10.0, 20.0, 50.0, 100.0)
BLOCKS_TABLE1 = Table(
    rows=tuple(
        _row(n, c, v, p, BLOCKS_FRACTIONS)
        for n, c, v, p in [
            ("Seq-MT (L)", "blocks.yaml", "L", [8.33, 3.95, 3.35, 1.98, 1.19, 0.44]),
            ("Seq-MT (L+A)", "blocks.yaml", "L+A", [8.02, 3.45, 3.20, 1.67, 1.05, 0.38]),
            ("Seq-MT (L+ELT)", "blocks.yaml", "L+ELT", [6.42, 1.94, 1.37, 1.16, 0.85, None]),
            ("Seq-MT (L+ELT+A)", "blocks.yaml", "L+ELT+A", [6.25, 1.70, 1.26, 1.07, 0.74, None]),
            ("Comm-MT (L)", "blocks_commmt.yaml", "L", [12.89, 11.56, 10.72, 9.39, 5.04, 3.41]),
            ("Comm-MT (L+A)", "blocks_commmt.yaml", "L+A", [12.28, 11.19, 10.36, 9.01, 4.21, 2.97]),
            ("Heatmap-MT (L)", "blocks_heatmapmt.yaml", "L", [10.09, 6.59, 5.27, 3.82, 2.78, 2.01]),
            ("Heatmap-MT (L+A)", "blocks_heatmapmt.yaml", "L+A", [9.27, 6.35, 5.62, 3.75, 3.14, 2.23]),
        ]
    ),
    fractions=BLOCKS_FRACTIONS,
    metric="mean_error_px",
    unit="px",
    title="Blocks, Table 1: test landmark error (pixels) vs percentage of images with labelled landmarks",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),
    quick={"data": {"n_val": 300, "n_test": 600},
           "train": {"steps": 60, "eval_every": 30, "log_every": 30, "checkpoint_every": 30}},
)
TABLES: dict[str, Table] = {"blocks-table1": BLOCKS_TABLE1}
FIGURES = ("shapes-figure3",)  # single-run reproductions


def run_shapes_figure3(out: str | Path, quick: bool = False, extra: list[str] | None = None,
                       progress: bool = True) -> dict:
    """Sec. 4.1 / Fig. 3: Seq-MT trained on Shapes with class labels only; writes ``figure3.png`` and
    ``figure3.md`` (class accuracy and landmark consistency on the test set, the paper's 99 % beside)."""
    from sslandmarks.data.sources import load_splits
    from sslandmarks.train import fit

    cfg = load_config(CONFIGS / "shapes.yaml", extra)
    if quick:
        cfg = from_dict(merge(to_dict(cfg), {"data": {"n_train": 400, "n_val": 100, "n_test": 200},
                                             "train": {"steps": 30, "eval_every": 15, "checkpoint_every": 15}}))
    out = Path(out)
    run = out / "run"
    t0 = time.time()
    metrics, _ = fit(cfg, load_splits(cfg), run, resume=(run / "checkpoints" / "last.ckpt").is_file(),
                     progress=progress)
    acc = metrics["attribute_accuracy"]["nearer"]
    text = "\n".join([
        "# Shapes (Sec. 4.1, Fig. 3): landmarks learned from class labels only" + (" [--quick]" if quick else ""),
        "",
        "| test figure | ours | paper |", "|---|---|---|",
        f"| class accuracy | {acc:.3f} | 0.99 |",
        f"| landmark consistency | {metrics['landmark_consistency']:.3f} | (qualitative: Fig. 3) |",
        "",
        f"{metrics['n_images']} test images; {cfg.train.steps} steps; device "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}; torch {torch.__version__}; "
        f"{(time.time() - t0) / 60:.1f} min.",
        "", "![Fig. 3](figure3.png)", ""])
    (out / "figure3.md").write_text(text)
    (out / "figure3.png").write_bytes((run / "figure3.png").read_bytes())
    return metrics


def cells(table: Table, seeds: int) -> list[tuple[Row, float, int]]:
    return [(row, pct, seed) for row in table.rows for pct in table.fractions
            if not (pct == 100.0 and row.name in table.no_full) for seed in range(seeds)]


def cell_config(table: Table, row: Row, pct: float, seed: int, quick: bool, extra: list[str] | None = None):
    cfg = load_config(CONFIGS / row.config, [f"loss.variant={row.variant}", *(extra or [])])
    data = merge(to_dict(cfg), {"data": {"labelled_pct": pct}, "train": {"seed": seed}})
    if quick:
        data = merge(data, table.quick)
    return from_dict(data)


def _slug(name: str) -> str:
    return name.replace(" (", "_").replace(")", "").replace("+", "-")


_SPLITS: dict[tuple, object] = {}  # generated datasets, shared by the cells a process runs


def _run_cell(table_name: str, row_index: int, pct: float, seed: int, quick: bool, extra: list[str] | None,
              run: Path, threads: int = 0) -> str:
    """Train one cell (resuming an interrupted one); runs in this process or in a worker process."""
    from sslandmarks.data.sources import load_splits
    from sslandmarks.train import fit

    if threads:
        torch.set_num_threads(threads)
    table = TABLES[table_name]
    row = table.rows[row_index]
    cfg = cell_config(table, row, pct, seed, quick, extra)
    key = (cfg.data.name, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test, cfg.data.seed)
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(cfg)
    fit(cfg, _SPLITS[key], run, resume=(run / "checkpoints" / "last.ckpt").is_file(), progress=False)
    return f"{row.name} {pct:g}% seed {seed}"


def run_table(name: str, out: str | Path, seeds: int = 5, quick: bool = False, extra: list[str] | None = None,
              progress: bool = True, jobs: int = 1) -> list[dict]:
    """Run (or finish) every cell of table ``name`` into ``out`` and write the aggregate files.

    ``jobs > 1`` trains that many cells at once in worker processes (the models are small: one run
    alone leaves a GPU, or a many-core CPU, mostly idle)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    if name not in TABLES:
        raise UserError(f"unknown table {name!r}: use one of {', '.join(TABLES)}")
    if not 1 <= seeds <= 100:
        raise UserError(f"--seeds {seeds}: give a number of seeds between 1 and 100")
    if not 1 <= jobs <= 64:
        raise UserError(f"--jobs {jobs}: give a number of parallel runs between 1 and 64")
    parse_overrides(extra)  # validate --set early
    cell_config(TABLES[name], TABLES[name].rows[0], 100.0, 0, quick, extra)  # bad keys fail before any run
    table, out = TABLES[name], Path(out)
    t0 = time.time()
    todo = []
    for row, pct, seed in cells(table, seeds):
        run = out / "runs" / _slug(row.name) / f"{pct:g}pct-seed{seed}"
        if not (run / "metrics.json").is_file():
            todo.append((name, table.rows.index(row), pct, seed, quick, extra, run))
    bar = tqdm(total=len(todo), desc=name, unit="run", disable=not progress)
    if jobs == 1:
        for args in todo:
            bar.set_postfix_str(_run_cell(*args))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(_run_cell, *args, threads) for args in todo]):
                bar.set_postfix_str(done.result())
                bar.update()
    bar.close()
    results = collect(table, out, seeds)
    write_outputs(table, results, out, seeds, quick, time.time() - t0)
    return results


def collect(table: Table, out: Path, seeds: int) -> list[dict]:
    rows = []
    for row in table.rows:
        for pct in table.fractions:
            if pct == 100.0 and row.name in table.no_full:
                continue
            vals = []
            for seed in range(seeds):
                m = out / "runs" / _slug(row.name) / f"{pct:g}pct-seed{seed}" / "metrics.json"
                if m.is_file():
                    vals.append(json.loads(m.read_text())[table.metric])
            t = torch.tensor(vals, dtype=torch.float64)
            rows.append({
                "model": row.name, "labelled_pct": pct,
                "mean": float(t.mean()) if vals else math.nan,
                "std": float(t.std(unbiased=False)) if vals else math.nan,
                "seeds": len(vals), "paper": row.paper.get(pct),
            })
    return rows


def write_outputs(table: Table, results: list[dict], out: Path, seeds: int, quick: bool, seconds: float) -> None:
    from sslandmarks.viz import table_plot

    metric = "error" if table.unit == "px" else "nme"
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "labelled_pct", f"{metric}_mean", f"{metric}_std", "seeds", "paper"])
        for r in results:
            w.writerow([r["model"], f"{r['labelled_pct']:g}", f"{r['mean']:.4f}", f"{r['std']:.4f}", r["seeds"],
                        "" if r["paper"] is None else r["paper"]])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86'})"
    lines = [f"# {table.title}", "",
             f"Ours: mean +- std over {seeds} seed(s){' (--quick: short runs, not a result)' if quick else ''}; "
             f"paper in brackets; **bold** = the better of the pair.", "",
             f"Device: {device}; torch {torch.__version__}; wall time of this invocation: {seconds / 60:.1f} min.", "",
             "| model | " + " | ".join(f"{p:g} %" for p in table.fractions) + " |",
             "|---|" + "---|" * len(table.fractions)]
    by = {(r["model"], r["labelled_pct"]): r for r in results}
    for row in table.rows:
        cellsmd = []
        for pct in table.fractions:
            r = by.get((row.name, pct))
            if r is None or math.isnan(r["mean"]):
                cellsmd.append("")
                continue
            ours = f"{r['mean']:.2f} +- {r['std']:.2f}"
            if r["paper"] is None:
                cellsmd.append(ours)
                continue
            paper = f"{r['paper']:.2f}"
            if r["mean"] <= r["paper"]:
                ours = f"**{ours}**"
            else:
                paper = f"**{paper}**"
            cellsmd.append(f"{ours} ({paper})")
        lines.append(f"| {row.name} | " + " | ".join(cellsmd) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    table_plot(results, table, out / "plot.png")
