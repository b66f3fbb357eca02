"""The aggregate of a reproduction: mean and std over seeds of every cell, written as ``table.csv``,
``table.md`` (ours beside the paper's figures) and ``plot.png``. Reads the cells' ``metrics.json`` and
``log.csv``; trains nothing."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import torch

from sslandmarks.config import read_saved_config
from sslandmarks.hardware import describe, machine
from sslandmarks.outputs import atomic_path
from sslandmarks.tables import Protocol, Row, Table, cell_dir
from sslandmarks.viz import table_plot


def _stats(vals: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator) of one cell's seeds; the std is NaN (not
    known, left blank in the reports) for a single seed, and both are NaN for none."""
    t = torch.tensor(vals, dtype=torch.float64)
    return (float(t.mean()) if vals else math.nan, float(t.std()) if len(vals) > 1 else math.nan)


def _mean_std(mean: float, std: float) -> str:
    """``"m +- s"``, or the mean alone where one seed leaves the std unknown."""
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} +- {std:.2f}"


def log_rows(log: Path) -> list[dict]:
    """The rows of a run's ``log.csv`` (none when there is no log), read once for every summary below."""
    if not log.is_file():
        return []
    with log.open(newline="") as f:
        return list(csv.DictReader(f))


def _logged_seconds(rows: list[dict]) -> float:
    """The training time a run's log (``log_rows``) ends with (0 when there is none): its CPU time
    (``cpu_seconds``), or, in logs written before that column, its wall-clock ``seconds``."""
    last = rows[-1] if rows else {}
    return float(last.get("cpu_seconds") or last.get("seconds") or 0.0)


def best_at_last(rows: list[dict]) -> bool | None:
    """Whether a run's lowest validation score (``val_score`` of its log, ``log_rows``) came at its last validation:
    a run perhaps still improving when its steps ran out. None when the log has fewer than two validations."""
    scores = [float(r["val_score"]) for r in rows if r.get("val_score")]
    return min(range(len(scores)), key=scores.__getitem__) == len(scores) - 1 if len(scores) > 1 else None


PRECISION_NAMES = {"bf16-mixed": "bfloat16 autocast", "32-true": "float32", "64-true": "float64"}


def ran_on(run: Path, metrics: dict) -> str:
    """How a cell ran, as its ``metrics.json`` records it: arithmetic and machine (cells finished before these
    were recorded: the precision their ``config.yaml`` asked for, machine not recorded)."""
    precision = metrics.get("precision") or read_saved_config(run / "config.yaml").train.precision
    where = describe(metrics["machine"]) if "machine" in metrics else "a machine not recorded"
    return f"{PRECISION_NAMES.get(precision, precision)} on {where}"


def collect(table: Table, out: Path, finished: list[tuple[Row, float, int]]) -> list[dict]:
    """Mean and std over the ``finished`` seeds of each cell (and of the class accuracy, for rows with A), and
    the cell's summed training time (``train_minutes``: the last ``seconds`` of each seed's ``log.csv``)."""
    rows = []
    for row in table.rows:
        for pct in table.fractions:
            if pct == 100.0 and row.name in table.no_full:
                continue
            vals, accs, more, seconds = [], [], {key: [] for key, _, _ in table.also}, 0.0
            last: list[bool | None] = []  # per seed: best validation at the last one
            how: dict[str, list[float]] = {}  # ran_on -> [cells, CPU seconds]
            for seed in sorted(s for r, p, s in finished if r == row and p == pct):
                m = cell_dir(out, row, pct, seed) / "metrics.json"
                if m.is_file():
                    metrics = json.loads(m.read_text())
                    log = log_rows(m.parent / "log.csv")
                    cell_seconds = _logged_seconds(log)
                    last.append(best_at_last(log))
                    seconds += cell_seconds
                    tally = how.setdefault(ran_on(m.parent, metrics), [0, 0.0])
                    tally[0], tally[1] = tally[0] + 1, tally[1] + cell_seconds
                    vals.append(metrics[table.metric])
                    if table.accuracy and "A" in row.variant.split("+"):
                        accs.append(100.0 * metrics["attribute_accuracy"][table.accuracy])
                    for key in more:
                        v = _lookup(metrics, key)
                        if v is not None and not (key.startswith("attribute_accuracy") and "A" not in row.variant):
                            more[key].append(100.0 * v if key.startswith("attribute_accuracy") else v)
            mean, std = _stats(vals)
            r = {"model": row.name, "labelled_pct": pct, "mean": mean, "std": std, "seeds": len(vals),
                 "paper": row.paper.get(pct), "train_minutes": seconds / 60, "ran_on": how,
                 "best_at_last": sum(x is True for x in last), "validated": sum(x is not None for x in last)}
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
            ours = _mean_std(r[key], r[key.removesuffix("mean") + "std"])
            cellsmd.append(_pair(ours, r[key], r.get(paper_key), lower_is_better))
        lines.append(f"| {row.name} | " + " | ".join(cellsmd) + " |")
    return lines


def _fmt(value, spec: str) -> str:
    """``value`` formatted, or an empty field where the cell has none (no seed finished, no class head)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _write_csv(table: Table, results: list[dict], out: Path) -> None:
    """``table.csv``: one line per cell with the tabulated metric (mean, std, seeds, the paper's figure), then
    the table's further metrics (``also``) and, for tables with a class head, its accuracy (empty for rows
    trained without A)."""
    metric = "error" if table.unit == "px" else "nme"
    head = ["model", "labelled_pct", f"{metric}_mean", f"{metric}_std", "seeds"] + ["paper"] * table.has_paper
    head += [f"{key}_{s}" for key, _, _ in table.also for s in ("mean", "std")]
    head += ["accuracy_mean", "accuracy_std", "paper_accuracy"] if table.accuracy else []
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in results:
            line = [r["model"], f"{r['labelled_pct']:g}", f"{r['mean']:.4f}", _fmt(r["std"], ".4f"), r["seeds"]]
            line += [_fmt(r["paper"], "")] * table.has_paper
            line += [_fmt(r.get(f"{key}_{s}"), ".4f") for key, _, _ in table.also for s in ("mean", "std")]
            if table.accuracy:
                line += [_fmt(r.get("accuracy_mean"), ".2f"), _fmt(r.get("accuracy_std"), ".2f"),
                         _fmt(r.get("paper_accuracy"), "")]
            w.writerow(line)


def _ran_on_line(results: list[dict]) -> str:
    """Where and in which arithmetic the finished cells ran: cells and CPU-hours of each kind."""
    total: dict[str, list[float]] = {}
    for r in results:
        for how, (n, seconds) in r.get("ran_on", {}).items():
            t = total.setdefault(how, [0, 0.0])
            t[0], t[1] = t[0] + n, t[1] + seconds
    return "; ".join(f"{int(n)} cell(s) in {how} ({seconds / 3600:.2f} CPU-hours)"
                     for how, (n, seconds) in sorted(total.items(), key=lambda kv: -kv[1][0]))


def _hours_by_row(table: Table, results: list[dict]) -> str:
    per_row = {row.name: sum(r["train_minutes"] for r in results if r["model"] == row.name) / 60 for row in table.rows}
    total, cores = sum(per_row.values()), os.cpu_count() or 1
    return (", ".join(f"{name} {h:.2f}" for name, h in per_row.items()) + f"; in all {total:.2f}, that is "
            f"{total / cores:.2f} hours of this {cores}-core machine with every core busy")


def _best_at_last_line(table: Table, results: list[dict]) -> list[str]:
    """How many finished runs had their best validation at their last one (per row), or nothing when no run
    logged two validations: a protocol whose runs mostly end at their best is limited by its steps."""
    per_row = [(row.name, sum(r.get("best_at_last", 0) for r in results if r["model"] == row.name),
                sum(r.get("validated", 0) for r in results if r["model"] == row.name)) for row in table.rows]
    late, runs = sum(k for _, k, _ in per_row), sum(n for _, _, n in per_row)
    if not runs:
        return []
    return [f"Runs whose best validation came at their last one (perhaps still improving when their steps ran out): "
            f"{late} of {runs} ({', '.join(f'{name} {k} of {n}' for name, k, n in per_row if n)}).", ""]


def _claim_lines(table: Table, results: list[dict]) -> list[str]:
    """One line per claim of ``table``: the fractions where it held on the cells' means, and, where it did not,
    both cells' mean +- std over their seeds; cells not computed yet are named as such."""
    if not table.claims:
        return []
    by = {(r["model"], r["labelled_pct"]): r for r in results if r["seeds"]}
    lines = ["", "The paper's orderings, on the means over the seeds (lower is better):", ""]
    names = {row.name for row in table.rows}
    for c in (c for c in table.claims if {c.a, c.b} <= names):  # the claims on rows this protocol trains
        held, failed, missing = [], [], []
        for pct in c.fractions:
            a, b = by.get((c.a, pct)), by.get((c.b, pct))
            if a is None or b is None:
                missing.append(f"{pct:g}")
            elif c.holds(a["mean"], b["mean"]):
                held.append(f"{pct:g}")
            else:
                n_a, n_b = a["seeds"], b["seeds"]
                seeds = f"{n_a} seed(s) each" if n_a == n_b else f"{n_a} and {n_b} seeds"
                failed.append(f"{pct:g} % ({_mean_std(a['mean'], a['std'])} vs {_mean_std(b['mean'], b['std'])}, "
                              f"{seeds})")
        rel = "<" if c.factor == 1.0 else f"<= {c.factor:g} x"
        parts = ([f"held at {', '.join(held)} %"] if held else []) + ([f"not at {'; '.join(failed)}"] if failed else [])
        parts += [f"not computed yet at {', '.join(missing)} %"] if missing else []
        lines.append(f"- {c.a} {rel} {c.b}: " + "; ".join(parts) + ".")
    return lines


def _hours_to_go(results: list[dict], planned: list[tuple[Row, float, int]]) -> str:
    """``", ~H CPU-hours at the finished runs' pace"``: the runs still to go, each at the mean logged time of
    its row's finished runs (of all finished runs, for a row with none yet); empty before any run finished."""
    minutes, runs = Counter(), Counter()
    for r in results:
        minutes[r["model"]] += r["train_minutes"]
        runs[r["model"]] += r["seeds"]
    if not runs.total():
        return ""
    overall = minutes.total() / runs.total()
    to_go = Counter(row.name for row, _, _ in planned)
    to_go.subtract(runs)
    hours = sum(n * (minutes[name] / runs[name] if runs[name] else overall) for name, n in to_go.items() if n > 0) / 60
    return f", ~{hours:.1f} CPU-hours at the finished runs' pace"


def _markdown(table: Table, results: list[dict], protocol: Protocol, quick: bool, seconds: float | None,
              extra: list[str] | None, planned: list[tuple[Row, float, int]] | None = None) -> list[str]:
    """The lines of ``table.md``: what ran where and how, the notes, then one table per metric. ``planned``: the
    runs (row, fraction, seed) the grid has in all; while fewer have finished, a line says how many are to go."""
    counts = sorted({r["seeds"] for r in results if r["seeds"]})
    seeds = " or ".join(map(str, counts)) if counts else "no"
    done = sum(r["seeds"] for r in results)
    lines = [f"# {table.title}", "",
             f"Ours: mean +- sample std over {seeds} seed(s) per cell (the `seeds` column of table.csv; a cell of one "
             "seed shows its value alone)"
             f"{' (--quick: short runs, not a result)' if quick else ''}"
             + ("; paper in brackets; **bold** = the better of the pair." if table.has_paper else "."), ""]
    if planned is not None and done < len(planned):
        lines += [f"**Unfinished grid: {done} of {len(planned)} runs so far** ({len(planned) - done} to go"
                  f"{_hours_to_go(results, planned)}; a cell's mean is over the seeds finished so far, and the claims "
                  "below are provisional).", ""]
    lines += [f"Protocol: {protocol.note}", "",
              f"This invocation: {describe(machine())}, torch {torch.__version__}"
              + (f"; wall time of this invocation: {seconds / 60:.1f} min. " if seconds is not None else ". ")
              + "Training hours of the cells (their logs' CPU time, evaluation included; wall-clock for cells logged "
              "before log.csv had cpu_seconds), per row: "
              f"{_hours_by_row(table, results)}.", ""]
    if any(r.get("ran_on") for r in results):
        lines += [f"Where the cells ran: {_ran_on_line(results)}.", ""]
    lines += _best_at_last_line(table, results)
    if extra:
        lines += ["Every cell ran with these changes to the configs (`--set`): "
                  + ", ".join(f"`{item}`" for item in extra) + "."
                  + (" A `model.*` item applies to the rows whose model reads that key." if any(
                      item.startswith("model.") for item in extra) else ""), ""]
    if table.note:
        lines += [table.note, ""]
    lines += _md_table(table, results, "mean", "paper", True, list(table.rows))
    lines += _claim_lines(table, results)
    for key, label, lower in table.also:
        names = {r["model"] for r in results if not math.isnan(r.get(f"{key}_mean", math.nan))}
        if names:
            rows = [row for row in table.rows if row.name in names]
            lines += ["", f"Test {label}:", "", *_md_table(table, results, f"{key}_mean", "", lower, rows)]
    names = {r["model"] for r in results if "accuracy_mean" in r}
    if names:
        lines += ["", f"Test {table.accuracy} accuracy (%, higher is better; the paper's Table S3 in brackets):", "",
                  *_md_table(table, results, "accuracy_mean", "paper_accuracy", False,
                             [row for row in table.rows if row.name in names])]
    if table.compare:
        a, b, pct = table.compare
        lines += ["", f"![{a} vs {b} at {pct:g} %](figure.png)"]
    return lines


def write_outputs(table: Table, results: list[dict], out: Path, protocol: Protocol, quick: bool,
                  seconds: float | None, extra: list[str] | None = None,
                  planned: list[tuple[Row, float, int]] | None = None) -> None:
    """``table.csv`` (every metric of every cell), ``table.md`` and ``plot.png``; ``extra`` (the ``--set``
    overrides of every cell) is stated in ``table.md``; ``seconds``: this invocation's wall time
    (None when it trained nothing, as with --report-only); ``planned``: the grid's runs in all (row, fraction, seed)."""
    _write_csv(table, results, out)
    lines = _markdown(table, results, protocol, quick, seconds, extra, planned)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    table_plot(results, table, out / "plot.png")


def publish(out: Path, dest: Path, stem: str) -> list[Path]:
    """Copy a table's aggregate from ``out`` to ``dest`` under one name: ``STEM.csv``, ``STEM.md`` (its image
    links renamed to match), ``STEM.png`` (the plot) and ``STEM_figure.png``
    where it exists. Returns the files written."""
    names = {"table.csv": f"{stem}.csv", "plot.png": f"{stem}.png", "figure.png": f"{stem}_figure.png"}
    written = []
    for src, name in names.items():
        if (out / src).is_file():
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(out / src, tmp)
            written.append(dest / name)
    md = (out / "table.md").read_text()
    for src in ("plot.png", "figure.png"):
        md = md.replace(f"]({src})", f"]({names[src]})")
    if (out / "plot.png").is_file() and f"]({stem}.png)" not in md:
        md += f"\n![test error vs labelled %]({stem}.png)\n"
    with atomic_path(dest / f"{stem}.md") as tmp:
        tmp.write_text(md)
    return [*written, dest / f"{stem}.md"]

