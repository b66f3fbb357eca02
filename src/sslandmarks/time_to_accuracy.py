"""``sslandmarks bench --time-to-accuracy``: wall-clock seconds until the *validation* error reaches a target.

Each workload is one training run from a fixed seed, trained twice in the same invocation: with today's
recipe (the packaged config) and with the recipe from before the speed work (``baseline``: the values the
configs had on main at commit 5a18a6c, given as overrides so that they stay fixed while the configs move).
Both sides run at the same time, each in its own process with ``threads`` intra-op threads, so the ratio
of their times comes from one run on one machine under the same load, never from two days' figures.

Both sides evaluate on the same validation set at the same cadence (``eval_every``) for the same number of
steps; the time to the target is read from each run's ``log.csv`` (``seconds`` counts training and
evaluation alike), and the final validation error at that budget is reported beside it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sslandmarks.config import CONFIGS, load_config
from sslandmarks.errors import UserError
from sslandmarks.hardware import machine


@dataclass(frozen=True)
class Workload:
    config: str  # packaged config file
    sets: tuple[str, ...]  # what the workload is (variant, labelled fraction, budget): both sides
    baseline: tuple[str, ...]  # the training recipe before the speed work
    today: tuple[str, ...]  # the recipe after it
    target: float  # on the validation metric
    column: str  # log.csv column holding the validation metric
    unit: str
    needs_shared_data: bool = False


# Each side's recipe. ``baseline``: what main at 5a18a6c trained with (configs/blocks.yaml: Adam lr 1e-3,
# cosine, no warm-up, float32; configs/300w_fast.yaml: lr 2e-3 after 100 warm-up steps, float32).
# ``today``: the recipe of the speed work (chosen on validation, see the configs' comments).
WORKLOADS: dict[str, Workload] = {
    "blocks": Workload(
        "blocks.yaml",
        ("loss.variant=L+ELT+A", "data.labelled_pct=5", "train.steps=2000", "train.eval_every=100",
         "train.log_every=50", "train.checkpoint_every=500"),
        ("train.lr=0.001", "train.warmup_steps=0", "train.precision=32-true"),
        ("train.lr=0.003", "train.warmup_steps=100", "train.precision=auto"),
        2.0, "val_score", "px (validation mean error)"),
    "faces": Workload(  # the config's own 6,000 steps: at 3,000 neither side reached 5.0 % (5.09 and 5.12 %)
        "300w_fast.yaml",
        ("loss.variant=L+ELT", "data.labelled_pct=100", "train.steps=6000", "train.eval_every=250",
         "train.log_every=50", "train.checkpoint_every=500"),
        ("train.lr=0.002", "train.warmup_steps=100", "train.precision=32-true", "train.ema=0"),
        # the faces' CPU recipe (configs/300w_fast.yaml): lr 3e-3 and the weights' moving average
        ("train.lr=0.003", "train.warmup_steps=100", "train.precision=auto", "train.ema=0.998"),
        5.0, "val_nme", "% (validation NME, inter-ocular)", needs_shared_data=True),
    "hands": Workload(  # the CPU-sized hands Seq-MT: Table S8's 9x9 stack at width 16 instead of 64
        "hgr1.yaml",
        ("loss.variant=L+ELT+A", "data.labelled_pct=5", "model.width=16", "train.steps=1500",
         "train.eval_every=100", "train.log_every=50", "train.checkpoint_every=500"),
        ("train.lr=0.001", "train.warmup_steps=0", "train.precision=32-true"),
        ("train.lr=0.003", "train.warmup_steps=100", "train.precision=auto"),  # the hands table's CPU recipe
        # with 23 labelled hands the validation NME stays high: an exploration run of this recipe (validation
        # subjects only) was at 83.6, 75.4, 80.2 and 79.5 % at steps 250-1,000, so the target is 80 %
        80.0, "val_nme", "% (validation NME, palm width; MediaPipe Hands' points)", needs_shared_data=True),
}


def read_curve(log: Path, column: str) -> list[tuple[int, float, float]]:
    """``(step, seconds, value)`` of every evaluated row of a run's ``log.csv``."""
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(int(r["step"]), float(r["seconds"]), float(r[column])) for r in rows if r.get(column)]


def time_to_target(curve: list[tuple[int, float, float]], target: float) -> dict:
    """First evaluation at or below ``target`` (None when never reached) and the final/best values."""
    hit = next(((s, t) for s, t, v in curve if v <= target), None)
    return {"steps_to_target": hit[0] if hit else None, "seconds_to_target": hit[1] if hit else None,
            "final": curve[-1][2] if curve else math.nan, "best": min((v for *_, v in curve), default=math.nan),
            "seconds": curve[-1][1] if curve else math.nan, "steps": curve[-1][0] if curve else 0}


def _launch(workload: Workload, side: str, out: Path, threads: int, configs: Path) -> subprocess.Popen:
    sets = [*workload.sets, *(workload.baseline if side == "baseline" else workload.today), "train.device=cpu"]
    cmd = [sys.executable, "-m", "sslandmarks", "train", "--config", str(configs / workload.config),
           "--out", str(out), "--quiet", *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(out.parent / f"{out.name}.stderr", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_time_to_accuracy(out: str | Path, workloads: list[str] | None = None, threads: int = 1,
                         sides: tuple[str, ...] = ("baseline", "today"), configs: Path | None = None) -> dict:
    """Train every workload's sides at the same time; return (and write ``out/time_to_accuracy.json``)
    per workload and side the time and steps to the target, and the final and best validation errors."""
    out = Path(out)
    names = workloads or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise UserError(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}")
    results: dict = {"machine": {**machine(), "threads_per_side": threads}, "workloads": {}}
    for name in names:
        w = WORKLOADS[name]
        missing = [p for p in load_config((configs or CONFIGS) / w.config).data.train_path if not Path(p).exists()]
        if w.needs_shared_data and missing:
            raise UserError(f"workload {name} needs the real data: {missing[0]} does not exist (run from the project "
                            "root, next to ../shared/data), or choose --workloads blocks")
        runs = {side: out / name / side for side in sides}
        for run in runs.values():
            if run.exists():
                raise UserError(f"{run} exists: choose a new --out for a fresh side-by-side run")
            run.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        procs = {side: _launch(w, side, run, threads, configs or CONFIGS) for side, run in runs.items()}
        print(f"time-to-accuracy: {name} ({', '.join(sides)} side by side, {threads} thread(s) each) ...",
              file=sys.stderr, flush=True)
        codes = {side: p.wait() for side, p in procs.items()}
        failed = [s for s, c in codes.items() if c != 0]
        if failed:
            raise RuntimeError(f"workload {name}: the {failed[0]} run failed; see {runs[failed[0]]}.stderr")
        entry = {side: time_to_target(read_curve(run / "log.csv", w.column), w.target) for side, run in runs.items()}
        entry.update({"target": w.target, "unit": w.unit, "config": w.config, "sets": list(w.sets),
                      "baseline_sets": list(w.baseline),
                      "today_sets": list(w.today), "wall_seconds": round(time.time() - t0, 1)})
        b, t = entry.get("baseline", {}), entry.get("today", {})
        if b.get("seconds_to_target") and t.get("seconds_to_target"):
            entry["speedup"] = b["seconds_to_target"] / t["seconds_to_target"]
        results["workloads"][name] = entry
    (out / "time_to_accuracy.json").write_text(json.dumps(results, indent=2))
    return results


def format_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"{m['cpu']} ({', '.join(m['isa'])}; {m['cores']} cores), torch {m['torch']}; both sides at once, "
             f"{m['threads_per_side']} thread(s) each", "",
             "| workload | target | side | time to target | steps to target | final val | best val | total time |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in res["workloads"].items():
        for side in ("baseline", "today"):
            if side not in e:
                continue
            s = e[side]
            tt = "not reached" if s["seconds_to_target"] is None else f"{s['seconds_to_target']:.0f} s"
            st = "-" if s["steps_to_target"] is None else f"{s['steps_to_target']:,}"
            lines.append(f"| {name} | {e['target']} {e['unit']} | {side} | {tt} | {st} | {s['final']:.3f} | "
                         f"{s['best']:.3f} | {s['seconds']:.0f} s |")
        if "speedup" in e:
            lines.append(f"| {name} | | **speed-up** | **{e['speedup']:.2f}x** | | | | |")
    return "\n".join(lines)
