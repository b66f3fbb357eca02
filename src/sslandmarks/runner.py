"""Paper tables as single commands: a grid of (model row x labelled fraction x seed) training runs.

Each cell trains in ``OUT/runs/<row>/<pct>pct-seed<seed>`` and is skipped when its ``metrics.json``
exists, so a stopped reproduction is rerun without redoing finished cells (an interrupted cell resumes
from its last checkpoint). The tables are data (:mod:`~sslandmarks.tables`); the aggregate is written by
:mod:`~sslandmarks.report` as ``table.csv``, ``table.md`` and ``plot.png``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from tqdm import tqdm

from sslandmarks.config import (
    CONFIGS,
    Config,
    config_diff,
    load_config,
    merge,
    parse_overrides,
    read_saved_config,
    to_dict,
    with_overrides,
)
from sslandmarks.data.dataset import Splits
from sslandmarks.data.sources import load_splits
from sslandmarks.errors import UserError
from sslandmarks.models import check_config, model_entry
from sslandmarks.outputs import RunDirBusy, run_dir_busy
from sslandmarks.report import collect, write_outputs
from sslandmarks.tables import PAPER, TABLES, Protocol, Row, Table, cell_dir, cells, under
from sslandmarks.train import PREDICTIONS, fit
from sslandmarks.viz import prediction_grid

SHAPES_QUICK = {"data": {"n_train": 400, "n_val": 100, "n_test": 200},
                "train": {"steps": 30, "eval_every": 15, "checkpoint_every": 15}}


def run_shapes_figure3(out: str | Path, quick: bool = False, extra: list[str] | None = None,
                       progress: bool = True) -> dict:
    """Sec. 4.1 / Fig. 3: Seq-MT trained on Shapes with class labels only; writes ``figure3.png`` and
    ``figure3.md`` (class accuracy and landmark consistency on the test set, the paper's 99 % beside)."""
    cfg = load_config(CONFIGS / "shapes.yaml", extra)
    if quick:
        cfg = with_overrides(cfg, SHAPES_QUICK)
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


def _model_key(item: str) -> str | None:
    """``"model.kernel=3"`` -> ``"kernel"``; None for an item outside the model section."""
    key = item.partition("=")[0].strip()
    return key.removeprefix("model.") if key.startswith("model.") else None


def cell_config(table: Table, row: Row, pct: float, seed: int, quick: bool, extra: list[str] | None = None,
                protocol: Protocol = PAPER) -> Config:
    """The config of one cell: the row's file and variant, the protocol's overrides (those of every row, then
    those of the row's config file), ``--set`` items (which win over the protocol), its fraction and seed (and
    the table's short-run overrides with ``quick``). A ``model.*`` item applies to the rows whose model reads
    that key (Seq-MT's ``depth`` means nothing to RCN+)."""
    items = [f"loss.variant={row.variant}", *(extra or [])]
    reads = model_entry(load_config(CONFIGS / row.config, items).model.name).reads
    cfg = load_config(CONFIGS / row.config, [f"loss.variant={row.variant}"])
    sets = parse_overrides([i for i in extra or [] if _model_key(i) in (None, *reads)])
    cell = {"data": {"labelled_pct": pct}, "train": {"seed": seed}}
    chosen = merge(protocol.overrides, protocol.by_config.get(row.config, {}))
    return with_overrides(cfg, merge(merge(merge(chosen, sets), cell), table.quick if quick else {}))


AUTO_PRECISIONS = ("auto", "bf16-mixed", "32-true")  # train.precision=auto, and what it resolves to


def protocol_diff(saved: Config, expected: Config) -> list[str]:
    """The keys in which a cell's recorded config differs from the protocol's, less the arithmetic: where the
    protocol asks for ``train.precision=auto`` (bfloat16 on CPUs with AMX-BF16, float32 elsewhere), a cell
    trained in either matches, so a grid can go on on another kind of CPU; each cell's ``metrics.json`` records
    its precision and machine, and ``table.md`` counts them. ``train.conv`` (the convolution algorithm: the same
    function either way) never clashes."""
    diff = [d for d in config_diff(saved, expected) if not d.startswith("train.conv ")]
    if expected.train.precision == "auto" and saved.train.precision in AUTO_PRECISIONS:
        diff = [d for d in diff if not d.startswith("train.precision ")]
    return diff


def cell_state(run: Path, expected: Config) -> tuple[str, list[str]]:
    """What a cell folder holds, read without changing it: ``done`` (finished with ``expected``), ``resume``
    (a checkpoint of ``expected``), ``clash`` (finished or checkpointed with another config: the differing keys
    come second), ``restart`` (cut off without a checkpoint, as committed result folders keep them), ``busy``
    (another process is training it) or ``new``."""
    saved = run / "config.yaml"
    if run_dir_busy(run):
        return "busy", []
    if not saved.is_file():
        return ("restart" if run.exists() else "new"), []
    diff = protocol_diff(read_saved_config(saved), expected)
    done, ckpt = (run / "metrics.json").is_file(), (run / "checkpoints" / "last.ckpt").is_file()
    if diff and (done or ckpt):
        return "clash", diff
    return ("done" if done else "resume" if ckpt else "restart"), diff


def refuse_clashes(cells_: list[tuple[Row, float, int]], out: Path, config_of) -> None:
    """A table never mixes protocols: refuse when a cell was finished or checkpointed under another config."""
    clashes = [f"{cell_dir(out, *c)}: {', '.join(d[:4])}{' ...' if len(d) > 4 else ''}" for c in cells_
               for state, d in [cell_state(cell_dir(out, *c), config_of(*c))] if state == "clash"]
    if clashes:
        raise UserError(f"{len(clashes)} cell(s) in {out} were trained with another config, e.g. {clashes[0]}; "
                        "rerun with the same --protocol/--set, or pass --fresh to retrain them")


def plan_cells(cells_: list[tuple[Row, float, int]], out: Path, config_of) -> list[tuple[Row, float, int]]:
    """The cells to train: cells of another config (left only with ``--fresh``) and cut-off cells without a
    checkpoint are removed and start again; checkpointed ones resume; finished and busy ones are left."""
    states = [(c, cell_state(cell_dir(out, *c), config_of(*c))[0]) for c in cells_]
    for c, state in states:
        if state in ("clash", "restart"):
            shutil.rmtree(cell_dir(out, *c))
    busy = [c for c, state in states if state == "busy"]
    if busy:
        print(f"{len(busy)} cell(s) are being trained by another process, e.g. {cell_dir(out, *busy[0])}: "
              "left to it", file=sys.stderr)
    return [c for c, state in states if state not in ("done", "busy")]


_SPLITS: dict[str, Splits] = {}  # loaded datasets, shared by the cells a process runs


def _splits(cfg: Config) -> Splits:
    """The cell's data splits, loaded once per process for all cells with the same data and input."""
    d, m = to_dict(cfg)["data"], cfg.model
    d.pop("labelled_pct")  # applied by fit, not by loading
    key = repr((d, m.input_size, m.in_channels, m.num_landmarks, m.heads))
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(cfg)
    return _SPLITS[key]


def _run_cell(table_name: str, protocol: str, row_index: int, pct: float, seed: int, quick: bool,
              extra: list[str] | None, run: Path, threads: int = 0) -> str:
    """Train one cell (resuming an interrupted one); runs in this process or in a worker process."""
    if threads:
        torch.set_num_threads(threads)
    table = under(TABLES[table_name], TABLES[table_name].protocols[protocol])
    row = table.rows[row_index]
    cfg = cell_config(table, row, pct, seed, quick, extra, table.protocols[protocol])
    name = f"{row.name} {pct:g}% seed {seed}"
    if (run / "metrics.json").is_file() or run_dir_busy(run):  # another invocation took it since the plan
        return f"{name}: left to another process"
    try:
        fit(cfg, _splits(cfg), run, resume=(run / "checkpoints" / "last.ckpt").is_file(), progress=False)
    except RunDirBusy:
        return f"{name}: left to another process"
    return name


def _die_with_parent() -> None:
    """Worker initialiser: on Linux the kernel sends SIGTERM to a worker whose parent dies (even by SIGKILL),
    so a stopped ``reproduce --jobs N`` leaves no orphans training on."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent died before the call: nobody will collect our work
            os._exit(1)


def _check_request(name: str, protocol: str | None, seeds: int | None, jobs: int, fractions, models,
                   quick: bool, extra) -> tuple[Table, str]:
    """Refuse a bad request before any run: table, protocol, counts, selection, ``--set`` items and every
    row's config. Returns the table and the protocol's name (the table's first when none is given)."""
    if name not in TABLES:
        raise UserError(f"unknown table {name!r}: use one of {', '.join(TABLES)}")
    table = TABLES[name]
    protocol = protocol or next(iter(table.protocols))
    if protocol not in table.protocols:
        raise UserError(f"--protocol {protocol!r}: {name} has the protocols {', '.join(table.protocols)}")
    table = under(table, table.protocols[protocol])  # the rows and columns this protocol trains
    if seeds is not None and not 1 <= seeds <= 100:
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
    configs = [cell_config(table, row, 100.0, 0, quick, extra, table.protocols[protocol]) for row in table.rows]
    for cfg in configs:  # bad keys, or what a row's model cannot do, fail before any run
        check_config(cfg)
    for key in filter(None, map(_model_key, extra or [])):
        if not any(key in model_entry(cfg.model.name).reads for cfg in configs):
            raise UserError(f"--set model.{key}: no model of {name} reads it")
    return table, protocol


def run_table(name: str, out: str | Path, seeds: int | None = None, quick: bool = False,
              extra: list[str] | None = None, progress: bool = True, jobs: int = 1,
              fractions: list[float] | None = None, models: list[str] | None = None,
              protocol: str | None = None, fresh: bool = False, report_only: bool = False) -> list[dict]:
    """Run (or finish) every cell of table ``name`` into ``out`` and write the aggregate files.

    ``protocol`` names one of the table's protocols (steps, schedule, seeds per column; default: the
    table's first); ``seeds`` overrides its seed counts. ``fractions`` / ``models`` restrict the grid to some
    columns / rows (the other cells stay as they are). A finished cell is reused only when its recorded
    config is the one asked for (``fresh``: retrain those that differ). ``jobs > 1`` trains that many cells
    at once in worker processes (the models are small: one run alone leaves a many-core machine idle).
    ``report_only``: train nothing, write the aggregate of the cells finished so far."""
    table, protocol = _check_request(name, protocol, seeds, jobs, fractions, models, quick, extra)
    proto, out = table.protocols[protocol], Path(out)
    plan = seeds if seeds is not None else proto

    def config_of(row: Row, pct: float, seed: int) -> Config:
        return cell_config(table, row, pct, seed, quick, extra, proto)

    t0 = time.time()
    if not fresh and not report_only:  # the cells outside the selection are checked too
        refuse_clashes(cells(table, plan), out, config_of)
    # seed 0 of every cell first, then the further seeds: a grid stopped early still has every cell once
    selected = sorted(cells(table, plan, fractions, models), key=lambda c: (c[2], table.fractions.index(c[1])))
    todo = [] if report_only else [
        (name, protocol, table.rows.index(row), pct, seed, quick, extra, cell_dir(out, row, pct, seed))
        for row, pct, seed in plan_cells(selected, out, config_of)]
    bar = tqdm(total=len(todo), desc=name, unit="run", disable=not progress)
    if jobs == 1:
        for args in todo:
            bar.set_postfix_str(_run_cell(*args))
            bar.update()
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            for done in as_completed([pool.submit(_run_cell, *args, threads) for args in todo]):
                bar.set_postfix_str(done.result())
                bar.update()
    bar.close()
    planned = cells(table, plan)
    finished = [c for c in planned if cell_state(cell_dir(out, *c), config_of(*c))[0] == "done"]
    results = collect(table, out, finished)
    write_outputs(table, results, out, proto, quick, time.time() - t0 if todo else None, extra, planned)
    if table.compare:
        compare_figure(table, out, quick, extra, proto)
    return results


def compare_figure(table: Table, out: Path, quick: bool, extra: list[str] | None, protocol: Protocol = PAPER) -> None:
    """``figure.png`` (like the paper's Fig. 7): ground truth and the two ``table.compare`` rows (seed 0) on the
    first test images, drawn from the landmarks each run kept in ``test_predictions.json`` (so a committed result
    folder, which keeps no checkpoints, draws it too); skipped while either run is unfinished."""
    a, b, pct = table.compare
    rows = {r.name: r for r in table.rows}
    files = {name: cell_dir(out, rows[name], pct, 0) / PREDICTIONS for name in (a, b)}
    if not all(f.is_file() for f in files.values()):
        return
    preds = {f"{name} ({pct:g} %)": torch.tensor(json.loads(f.read_text())["landmarks"]) for name, f in files.items()}
    n = min(len(p) for p in preds.values())
    test = _splits(cell_config(table, rows[a], pct, 0, quick, extra, protocol)).test
    prediction_grid(test.images[:n], test.landmarks[:n], {k: p[:n] for k, p in preds.items()}, out / "figure.png",
                    gt_label=table.reference)
