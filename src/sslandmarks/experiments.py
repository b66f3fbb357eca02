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
    paper_accuracy: dict[float, float] = field(default_factory=dict)  # labelled % -> the paper's class accuracy


@dataclass(frozen=True)
class Table:
    rows: tuple[Row, ...]
    fractions: tuple[float, ...]
    metric: str  # key of metrics.json that is tabulated
    unit: str
    title: str
    no_full: frozenset[str] = frozenset()  # rows without the 100 % column (ELT: no unlabelled images)
    quick: dict = field(default_factory=dict)  # overrides for --quick
    accuracy: str | None = None  # a class head whose test accuracy is tabulated too (rows trained with A)
    compare: tuple[str, str, float] | None = None  # two rows drawn on test images at one fraction (figure.png)
    note: str = ""  # said under the table (e.g. where the data differ from the paper's)
    also: tuple[tuple[str, str, bool], ...] = ()  # more metrics: (metrics.json key, dotted; label; lower is better)

    @property
    def has_paper(self) -> bool:
        return any(row.paper for row in self.rows)


def _row(name: str, config: str, variant: str, paper: list[float | None], fractions,
         paper_accuracy: list[float | None] = ()) -> Row:
    return Row(name, config, variant, {f: p for f, p in zip(fractions, paper) if p is not None},
               {f: p for f, p in zip(fractions, paper_accuracy) if p is not None})


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
REAL_DATA_QUICK = {"train": {"steps": 40, "eval_every": 20, "log_every": 20, "checkpoint_every": 20}}
HGR1_FRACTIONS = (5.0, 10.0, 20.0, 50.0, 100.0)
HGR1_TABLE2 = Table(
    rows=tuple(
        _row(n, c, v, p, HGR1_FRACTIONS, a)
        for n, c, v, p, a in [  # Table 2 (NME, % of wrist width) and Table S3 (gesture accuracy, %)
            ("Seq-MT (L)", "hgr1.yaml", "L", [52.6, 44.7, 32.1, 22.1, 18.8], []),
            ("Seq-MT (L+A)", "hgr1.yaml", "L+A", [50.0, 40.2, 31.4, 22.3, 18.4], [69.08, 70.14, 72.26, 77.07, 75.92]),
            ("Seq-MT (L+ELT)", "hgr1.yaml", "L+ELT", [45.4, 32.1, 25.8, 19.6, None], []),
            ("Seq-MT (L+ELT+A)", "hgr1.yaml", "L+ELT+A", [40.6, 32.0, 24.0, 19.8, None], [74.64, 75.01, 73.90, 79.10]),
            ("Comm-MT (L)", "hgr1_commmt.yaml", "L", [77.1, 62.8, 52.7, 41.8, 35.7], []),
            ("Comm-MT (L+A)", "hgr1_commmt.yaml", "L+A", [53.4, 39.3, 35.5, 26.9, 24.1],
             [60.86, 69.64, 69.20, 76.03, 73.42]),
            ("Heatmap-MT (L)", "hgr1_heatmapmt.yaml", "L", [66.5, 51.9, 42.4, 30.9, 25.5], []),
            ("Heatmap-MT (L+A)", "hgr1_heatmapmt.yaml", "L+A", [64.8, 54.9, 43.2, 30.5, 26.7],
             [83.74, 87.86, 87.55, 90.29, 89.27]),
        ]
    ),
    fractions=HGR1_FRACTIONS,
    metric="nme",
    unit="% of palm width",
    title="HGR1 hands, Table 2: test NME (% of palm width, MediaPipe Hands' points) vs percentage of labelled images",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),
    quick=REAL_DATA_QUICK,
    accuracy="gesture",
    compare=("Seq-MT (L)", "Seq-MT (L+ELT+A)", 5.0),
    note="The landmarks are **MediaPipe Hands' output (machine-made, not human annotation)**: the figures measure "
         "agreement with MediaPipe Hands on 21 points, normalised by the palm width (points 5-17). The paper's "
         "figures (in brackets) are on HGR1's 25 human-annotated points normalised by the wrist width, and the "
         "paper had 898 photos where this copy has 703: compare orderings and ratios, not values.",
)
MTFL_FRACTIONS = (1.0, 5.0, 10.0, 20.0, 100.0)
MTFL_TABLE = Table(
    rows=(
        Row("Seq-MT (L)", "mtfl.yaml", "L"),
        Row("Seq-MT (L+A)", "mtfl.yaml", "L+A"),
        Row("Seq-MT (L+ELT)", "mtfl.yaml", "L+ELT"),
        Row("Seq-MT (L+ELT+A)", "mtfl.yaml", "L+ELT+A"),
        Row("RCN+ (L)", "mtfl_rcn.yaml", "L"),
        Row("RCN+ (L+ELT+A)", "mtfl_rcn.yaml", "L+ELT+A"),
    ),
    fractions=MTFL_FRACTIONS,
    metric="nme",
    unit="% of eye-centre distance",
    title="MTFL: test NME (% of the eye-centre distance, AFLW test list) vs percentage of labelled images",
    no_full=frozenset({"Seq-MT (L+ELT)", "Seq-MT (L+ELT+A)"}),  # Seq-MT's ELT is on unlabelled images only
    quick=REAL_DATA_QUICK,
    also=tuple((f"attribute_accuracy.{head}", f"{head} accuracy (%)", False)
               for head in ("gender", "smile", "glasses", "pose")),
    note="Trained on MTFL's training list (LFW + web faces, a tenth held out for validation), tested on its AFLW "
         "list; the four attribute heads (gender, smile, glasses, 5 poses) read the 5 predicted landmarks. The "
         "paper reports no MTFL table (its AFLW results use 19 points), so there is no paper column.",
)
W300_FRACTIONS = (5.0, 10.0, 20.0, 50.0, 100.0)
W300_TABLE = Table(
    rows=(
        Row("Seq-MT (L)", "300w.yaml", "L"),
        Row("Seq-MT (L+ELT)", "300w.yaml", "L+ELT"),
        Row("RCN+ (L)", "300w_rcn.yaml", "L"),
        Row("RCN+ (L+ELT)", "300w_rcn.yaml", "L+ELT"),
    ),
    fractions=W300_FRACTIONS,
    metric="nme",
    unit="% of inter-ocular distance",
    title="300-W partial (AFW + HELEN train, HELEN test): test NME vs percentage of labelled images",
    quick=REAL_DATA_QUICK,
    also=(("nme_by.interpupil", "NME (% of inter-pupil distance)", True), ("auc@0.08", "AUC@0.08", False),
          ("failure_rate@0.08", "failure rate@0.08", True)),
    note="Inter-ocular = outer eye corners (points 37 and 46); inter-pupil = the eye contours' centres. ELT on every "
         "image (the paper's 300-W protocol), so (L+ELT) has a 100 % column. The paper's Table 6 is on the full "
         "300-W test set (HELEN + LFPW + IBUG, eye-centre normalised; Fullset at 5/10/20/50/100 %: Seq-MT (L) "
         "9.82/8.30/7.26/6.28/5.95, Seq-MT (L+ELT) 8.23/7.28/6.62/6.10/5.74, RCN+ (L) 7.26/6.48/5.91/5.52/5.26, "
         "RCN+ (L+ELT) 7.22/6.32/5.88/5.45/5.10); this copy has HELEN's test images only, an easier set.",
)
TABLES: dict[str, Table] = {"blocks-table1": BLOCKS_TABLE1, "hgr1": HGR1_TABLE2, "mtfl": MTFL_TABLE,
                            "300w-partial": W300_TABLE}
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


def cells(table: Table, seeds: int, fractions=None, models=None) -> list[tuple[Row, float, int]]:
    """The grid: every (row, fraction, seed), less the rows' missing 100 % cells; optionally only the
    given ``fractions`` and ``models`` (row names)."""
    return [(row, pct, seed) for row in table.rows for pct in table.fractions
            if not (pct == 100.0 and row.name in table.no_full)
            and (fractions is None or pct in fractions) and (models is None or row.name in models)
            for seed in range(seeds)]


def cell_config(table: Table, row: Row, pct: float, seed: int, quick: bool, extra: list[str] | None = None):
    cfg = load_config(CONFIGS / row.config, [f"loss.variant={row.variant}", *(extra or [])])
    data = merge(to_dict(cfg), {"data": {"labelled_pct": pct}, "train": {"seed": seed}})
    if quick:
        data = merge(data, table.quick)
    return from_dict(data)


def _slug(name: str) -> str:
    return name.replace(" (", "_").replace(")", "").replace("+", "-")


def cell_dir(out: Path, row: Row, pct: float, seed: int) -> Path:
    return out / "runs" / _slug(row.name) / f"{pct:g}pct-seed{seed}"


_SPLITS: dict[str, object] = {}  # loaded datasets, shared by the cells a process runs


def _splits(cfg):
    """The cell's data splits, loaded once per process for all cells with the same data and input."""
    from sslandmarks.data.sources import load_splits

    d, m = to_dict(cfg)["data"], cfg.model
    d.pop("labelled_pct")  # applied by fit, not by loading
    key = repr((d, m.input_size, m.in_channels, m.num_landmarks, m.heads))
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(cfg)
    return _SPLITS[key]


def _run_cell(table_name: str, row_index: int, pct: float, seed: int, quick: bool, extra: list[str] | None,
              run: Path, threads: int = 0) -> str:
    """Train one cell (resuming an interrupted one); runs in this process or in a worker process."""
    from sslandmarks.train import fit

    if threads:
        torch.set_num_threads(threads)
    table = TABLES[table_name]
    row = table.rows[row_index]
    cfg = cell_config(table, row, pct, seed, quick, extra)
    fit(cfg, _splits(cfg), run, resume=(run / "checkpoints" / "last.ckpt").is_file(), progress=False)
    return f"{row.name} {pct:g}% seed {seed}"


def run_table(name: str, out: str | Path, seeds: int = 5, quick: bool = False, extra: list[str] | None = None,
              progress: bool = True, jobs: int = 1, fractions: list[float] | None = None,
              models: list[str] | None = None) -> list[dict]:
    """Run (or finish) every cell of table ``name`` into ``out`` and write the aggregate files.

    ``fractions`` / ``models`` restrict the grid to some columns / rows (the other cells stay empty
    unless an earlier invocation ran them). ``jobs > 1`` trains that many cells at once in worker
    processes (the models are small: one run alone leaves a GPU, or a many-core CPU, mostly idle)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    if name not in TABLES:
        raise UserError(f"unknown table {name!r}: use one of {', '.join(TABLES)}")
    table, out = TABLES[name], Path(out)
    if not 1 <= seeds <= 100:
        raise UserError(f"--seeds {seeds}: give a number of seeds between 1 and 100")
    if not 1 <= jobs <= 64:
        raise UserError(f"--jobs {jobs}: give a number of parallel runs between 1 and 64")
    for f in fractions or []:
        if f not in table.fractions:
            raise UserError(f"--fractions {f:g}: {name} has the columns {', '.join(f'{p:g}' for p in table.fractions)}")
    for m in models or []:
        if m not in [r.name for r in table.rows]:
            raise UserError(f"--models {m!r}: {name} has the rows {', '.join(repr(r.name) for r in table.rows)}")
    parse_overrides(extra)  # validate --set early
    cell_config(table, table.rows[0], 100.0, 0, quick, extra)  # bad keys fail before any run
    t0 = time.time()
    todo = [(name, table.rows.index(row), pct, seed, quick, extra, cell_dir(out, row, pct, seed))
            for row, pct, seed in cells(table, seeds, fractions, models)
            if not (cell_dir(out, row, pct, seed) / "metrics.json").is_file()]
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
    write_outputs(table, results, out, seeds, quick, time.time() - t0, extra)
    if table.compare:
        compare_figure(table, out, quick, extra)
    return results


def _stats(vals: list[float]) -> tuple[float, float]:
    t = torch.tensor(vals, dtype=torch.float64)
    return (float(t.mean()), float(t.std(unbiased=False))) if vals else (math.nan, math.nan)


def _logged_seconds(log: Path) -> float:
    """The training time a run's ``log.csv`` ends with (0 when there is none)."""
    if not log.is_file():
        return 0.0
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["seconds"]) if rows and rows[-1].get("seconds") else 0.0


def collect(table: Table, out: Path, seeds: int) -> list[dict]:
    """Mean and std over the finished seeds of each cell (and of the class accuracy, for rows with A), and
    the cell's summed training time (``train_minutes``: the last ``seconds`` of each seed's ``log.csv``)."""
    rows = []
    for row in table.rows:
        for pct in table.fractions:
            if pct == 100.0 and row.name in table.no_full:
                continue
            vals, accs, more, seconds = [], [], {key: [] for key, _, _ in table.also}, 0.0
            for seed in range(seeds):
                m = cell_dir(out, row, pct, seed) / "metrics.json"
                if m.is_file():
                    metrics = json.loads(m.read_text())
                    seconds += _logged_seconds(m.parent / "log.csv")
                    vals.append(metrics[table.metric])
                    if table.accuracy and "A" in row.variant.split("+"):
                        accs.append(100.0 * metrics["attribute_accuracy"][table.accuracy])
                    for key in more:
                        v = _lookup(metrics, key)
                        if v is not None and not (key.startswith("attribute_accuracy") and "A" not in row.variant):
                            more[key].append(100.0 * v if key.startswith("attribute_accuracy") else v)
            mean, std = _stats(vals)
            r = {"model": row.name, "labelled_pct": pct, "mean": mean, "std": std, "seeds": len(vals),
                 "paper": row.paper.get(pct), "train_minutes": seconds / 60}
            for key, v in more.items():
                r[f"{key}_mean"], r[f"{key}_std"] = _stats(v)
            if accs:
                r["accuracy_mean"], r["accuracy_std"] = _stats(accs)
                r["paper_accuracy"] = row.paper_accuracy.get(pct)
            rows.append(r)
    return rows


def _lookup(metrics: dict, key: str):
    """``metrics["a"]["b"]`` for ``"a.b"``; None where absent. Keys may hold dots themselves (``auc@0.08``)."""
    if key in metrics:
        return metrics[key]
    head, _, rest = key.partition(".")
    return _lookup(metrics[head], rest) if rest and isinstance(metrics.get(head), dict) else None


def _pair(ours: str, mean: float, paper: float | None, lower_is_better: bool) -> str:
    """``ours (paper)`` with the better of the two in bold."""
    if paper is None:
        return ours
    if (mean <= paper) == lower_is_better:
        return f"**{ours}** ({paper:.2f})"
    return f"{ours} (**{paper:.2f}**)"


def _md_table(table: Table, results: list[dict], key: str, paper_key: str, lower_is_better: bool,
              rows: list[Row]) -> list[str]:
    lines = ["| model | " + " | ".join(f"{p:g} %" for p in table.fractions) + " |",
             "|---|" + "---|" * len(table.fractions)]
    by = {(r["model"], r["labelled_pct"]): r for r in results}
    for row in rows:
        cellsmd = []
        for pct in table.fractions:
            r = by.get((row.name, pct))
            if r is None or math.isnan(r.get(key, math.nan)):
                cellsmd.append("")
                continue
            ours = f"{r[key]:.2f} +- {r[key.removesuffix('mean') + 'std']:.2f}"
            cellsmd.append(_pair(ours, r[key], r.get(paper_key), lower_is_better))
        lines.append(f"| {row.name} | " + " | ".join(cellsmd) + " |")
    return lines


def write_outputs(table: Table, results: list[dict], out: Path, seeds: int, quick: bool, seconds: float,
                  extra: list[str] | None = None) -> None:
    """``table.csv``, ``table.md`` and ``plot.png`` (+ ``accuracy.csv`` where the table has a class head);
    ``extra`` (the ``--set`` overrides of every cell) is stated in ``table.md``."""
    from sslandmarks.viz import table_plot

    metric = "error" if table.unit == "px" else "nme"
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "labelled_pct", f"{metric}_mean", f"{metric}_std", "seeds"] + ["paper"] * table.has_paper)
        for r in results:
            w.writerow([r["model"], f"{r['labelled_pct']:g}", f"{r['mean']:.4f}", f"{r['std']:.4f}", r["seeds"]]
                       + ["" if r["paper"] is None else r["paper"]] * table.has_paper)
    if table.also:
        with open(out / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "labelled_pct", "seeds", f"{metric}_mean", f"{metric}_std",
                        *[f"{key}_{s}" for key, _, _ in table.also for s in ("mean", "std")]])
            for r in results:
                w.writerow([r["model"], f"{r['labelled_pct']:g}", r["seeds"], f"{r['mean']:.4f}", f"{r['std']:.4f}",
                            *[f"{r[f'{key}_{s}']:.4f}" for key, _, _ in table.also for s in ("mean", "std")]])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'x86'})"
    lines = [f"# {table.title}", "",
             f"Ours: mean +- std over {seeds} seed(s){' (--quick: short runs, not a result)' if quick else ''}"
             + ("; paper in brackets; **bold** = the better of the pair." if table.has_paper else "."), "",
             f"Device: {device}; torch {torch.__version__}; wall time of this invocation: {seconds / 60:.1f} min "
             f"(the cells' training loops: {sum(r['train_minutes'] for r in results):.1f} min in all).", ""]
    if extra:
        lines += ["Every cell ran with these changes to the configs (`--set`): "
                  + ", ".join(f"`{item}`" for item in extra) + ".", ""]
    if table.note:
        lines += [table.note, ""]
    lines += _md_table(table, results, "mean", "paper", True, list(table.rows))
    for key, label, lower in table.also:
        names = {r["model"] for r in results if not math.isnan(r.get(f"{key}_mean", math.nan))}
        if names:
            rows = [row for row in table.rows if row.name in names]
            lines += ["", f"Test {label}:", "", *_md_table(table, results, f"{key}_mean", "", lower, rows)]
    acc = [r for r in results if "accuracy_mean" in r]
    if acc:
        with open(out / "accuracy.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["model", "labelled_pct", "accuracy_mean", "accuracy_std", "seeds", "paper"])
            for r in acc:
                w.writerow([r["model"], f"{r['labelled_pct']:g}", f"{r['accuracy_mean']:.2f}",
                            f"{r['accuracy_std']:.2f}", r["seeds"],
                            "" if r["paper_accuracy"] is None else r["paper_accuracy"]])
        names = {r["model"] for r in acc}
        lines += ["", f"Test {table.accuracy} accuracy (%, higher is better; the paper's Table S3 in brackets):", "",
                  *_md_table(table, results, "accuracy_mean", "paper_accuracy", False,
                             [row for row in table.rows if row.name in names])]
    if table.compare:
        a, b, pct = table.compare
        lines += ["", f"![{a} vs {b} at {pct:g} %](figure.png)"]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    table_plot(results, table, out / "plot.png")


def compare_figure(table: Table, out: Path, quick: bool, extra: list[str] | None, n: int = 12) -> None:
    """``figure.png`` (like the paper's Fig. 7): ground truth and the two ``table.compare`` rows (seed 0)
    on the first ``n`` test images; skipped while either run is unfinished."""
    from sslandmarks.checkpoint import model_from_checkpoint
    from sslandmarks.evaluate import predict_all
    from sslandmarks.viz import prediction_grid

    a, b, pct = table.compare
    rows = {r.name: r for r in table.rows}
    runs = {name: cell_dir(out, rows[name], pct, 0) for name in (a, b)}
    if not all((r / "metrics.json").is_file() for r in runs.values()):
        return
    test = _splits(cell_config(table, rows[a], pct, 0, quick, extra)).test
    images = test.images[:n]
    preds = {f"{name} ({pct:g} %)": predict_all(model_from_checkpoint(r / "checkpoints" / "best.ckpt")[0], images)[0]
             for name, r in runs.items()}
    prediction_grid(images, test.landmarks[:n], preds, out / "figure.png")
