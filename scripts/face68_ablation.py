"""face68 trained the paper's way, as an ablation (issue 18): which faces and which boxes help face68.

usage: PYTHONPATH=src .venv/bin/python scripts/face68_ablation.py [--steps 3000] [--rows a,b] [--report-only]

Every row continues the ``face68`` bundled before this ablation (RCN+ 80x80, trained on the 1,086 labelled 300-W
faces; the rows' commands say ``--init face68``, which named it when they ran) for the same number of steps
with configs/300w_face68_mixed.yaml, and differs from the row above it by one thing:

1. ``300-W``: 300-W faces only, crops from their landmark boxes (as face68 was trained): more steps alone;
2. ``+ dlib-box jitter``: the crop box jittered as dlib's boxes scatter around the landmark box;
3. ``+ MTFL ELT``: MTFL's 10,567 faces as unlabelled faces, ELT on them;
4. ``+ MTFL 5-point``: the same faces supervised on the 5 points the 68-point layout determines;
5. ``+ attributes``: pose and smile heads on the predicted landmarks (Seq-MT), labelled by MTFL's faces;

and, off the ladder, ``res112``: row 2 at 112x112 input instead of 80x80 (the weights carry over: the net is
fully convolutional), and ``euclid``: row 4 with each landmark's miss charged its distance instead of its
squared distance (``loss.distance=euclidean``).

Each row is trained into ``results/face68-ablation/runs/ROW/`` (config.yaml, log.csv and metrics.json are
committed; checkpoints are not) and scored on the 300-W validation faces and on HELEN test, crops from the
landmark boxes and from dlib's detector boxes (``sslandmarks evaluate --split val|test [--detector dlib]``),
into ``eval_KEY.json`` (one per score). A row that has its metrics.json is not trained again (a missing score is
computed); a cut-off row resumes from its last checkpoint. The table, of every finished row whichever rows a call
trains, goes to ``results/face68_ablation.md``. Run it from the checkout's root, with ../shared/data beside it.
The bundled face68 is now the row chosen on validation through dlib's boxes, so the starting weights are taken
from git history (``git show STARTED_FROM:src/sslandmarks/weights/face68.ckpt``) into ``--start``'s file.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
from pathlib import Path

from sslandmarks.config import read_saved_config
from sslandmarks.report import ran_on

CONFIG = "configs/300w_face68_mixed.yaml"
MTFL = "../shared/data/mtfl/training.txt, ../shared/data/mtfl/testing.txt"
NO_HEADS = ["loss.variant=L+ELT", "model.heads=[]"]
NO_MTFL = ["data.extra_sources=[]"]
NO_JITTER = ["data.box_jitter={shift: [0, 0], scale: 0}"]
BUNDLED = "euclid"  # the row the bundled face68 continues for a second cycle (results/face68-cycle2)
STARTED_FROM = "c886f2e"  # the last commit whose bundled face68 is the one every row continues


def _mtfl(labelled: bool, attributes: str) -> str:
    return (f"data.extra_sources=[{{format: mtfl, train_path: [{MTFL}], spec: mtfl-5, batch: 32, weight: 1.0, "
            f"labelled: {str(labelled).lower()}, attributes: {attributes}}}]")


# row -> (label, the --set items that make it from configs/300w_face68_mixed.yaml)
ROWS: dict[str, tuple[str, list[str]]] = {
    "300w": ("300-W only, landmark boxes", [*NO_MTFL, *NO_JITTER, *NO_HEADS]),
    "jitter": ("+ dlib-box jitter", [*NO_MTFL, *NO_HEADS]),
    "mtfl-elt": ("+ MTFL faces, ELT only", [_mtfl(False, "[]"), *NO_HEADS]),
    "mtfl-5pt": ("+ MTFL 5-point supervision", [_mtfl(True, "[]"), *NO_HEADS]),
    "attributes": ("+ pose and smile heads (Seq-MT)", []),
    # not a step of the ladder: the jitter row at 112x112 (one pass costs ~2x the 80x80 one, about what 80x80
    # with test-time mirroring costs today), to see whether resolution is what the MTFL faces cannot give
    "res112": ("dlib-box jitter, 112x112 input (300-W only)", [*NO_MTFL, *NO_HEADS, "model.input_size=[112, 112]"]),
    # not a step of the ladder either: row 4 (the bundled face68's recipe) charging each miss its distance
    # instead of its squared distance (loss.distance), i.e. training on what NME measures
    "euclid": ("+ MTFL 5-point, euclidean landmark loss", [_mtfl(True, "[]"), *NO_HEADS, "loss.distance=euclidean"]),
}
LADDER = ("300w", "jitter", "mtfl-elt", "mtfl-5pt", "attributes")  # rows 1-5, each adding one thing
CANDIDATES = (*LADDER, "euclid")  # the rows with face68's input and graph, so its latency (res112's is ~2x)
# key -> (split, detector, --refine): dlib boxes as `predict` runs them (a second pass cropped from the first
# pass's landmarks), and in one pass, straight from the detector's box
SCORES = {"val": ("val", None, None), "val_dlib": ("val", "dlib", None), "val_dlib_1pass": ("val", "dlib", 0),
          "test": ("test", None, None), "test_dlib": ("test", "dlib", None), "test_dlib_1pass": ("test", "dlib", 0)}


def _run(cmd: list[str]) -> None:
    """Run an ``sslandmarks ...`` command with this Python (stops the script if it fails)."""
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "sslandmarks", *cmd[1:]], check=True)


def start_weights(path: Path) -> Path:
    """The face68 the rows continue, written to ``path`` from git history unless it is there."""
    if not path.is_file():
        blob = subprocess.run(["git", "show", f"{STARTED_FROM}:src/sslandmarks/weights/face68.ckpt"],
                              capture_output=True)
        if blob.returncode:
            sys.exit(f"face68_ablation: the starting face68 is not in {path} and git cannot give it "
                     f"({blob.stderr.decode().strip()}): run from a full clone (git fetch --unshallow) or pass --start")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")  # whole or absent: a cut-off write is not taken for the weights
        part.write_bytes(blob.stdout)
        part.replace(path)
    return path


def train_row(out: Path, row: str, steps: int, lr: float, start: Path) -> list[str]:
    """Train one row (resuming a cut-off one; bfloat16 where the CPU has AMX-BF16, else float32: each row's
    metrics.json records which); returns its train command."""
    run = out / "runs" / row
    resume = (run / "checkpoints" / "last.ckpt").is_file()
    # a cut-off row goes on with the --init its config.yaml recorded (train refuses another on --resume)
    init = read_saved_config(run / "config.yaml").train.init if resume else str(start_weights(start))
    cmd = ["sslandmarks", "train", "--config", CONFIG, "--init", init, "--out", str(run), "--quiet",
           *[a for item in [*ROWS[row][1], f"train.steps={steps}", f"train.lr={lr}", "train.precision=auto",
                            "data.test_flip=true", "train.eval_every=250", "train.checkpoint_every=250"]
             for a in ("--set", item)]]
    _run([*cmd, "--resume"] if resume else cmd)
    return cmd


def scores(folder: Path, model: list[str]) -> dict:
    """Validation and test NME of ``model`` (``--checkpoint CKPT`` or ``--model NAME``) from landmark and
    detector boxes, each kept in ``folder/eval_KEY.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, (split, detector, refine) in SCORES.items():
        path = folder / f"eval_{key}.json"
        if not path.is_file():
            _run(["sslandmarks", "evaluate", *model, "--split", split, *(["--detector", detector] if detector else []),
                  *(["--refine", str(refine)] if refine is not None else []), "--out", str(path), "--quiet"])
        m = json.loads(path.read_text())
        out[key] = {"nme": m["nme"], "n": m["n_images"],
                    **({"found": m["detector"]["found"], "faces": m["detector"]["faces"]} if detector else {})}
    return out


def cpu_hours(out: Path, row: str) -> float:
    rows = list(csv.DictReader((out / "runs" / row / "log.csv").open()))
    return float(rows[-1].get("cpu_seconds") or rows[-1]["seconds"]) / 3600


def report(out: Path, done: dict[str, dict], commands: dict[str, list[str]], steps: int) -> str:
    lines = ["# face68 ablation: which faces and which boxes help (issue 18)", "",
             f"Every row continues the face68 bundled before this ablation (commit {STARTED_FROM}: the commands' "
             "`--init face68` named it when they ran, `--init results/face68-ablation/face68-before.ckpt` is the same "
             f"weights taken from git history) for {steps:,} steps (configs/300w_face68_mixed.yaml with the "
             "row's `--set` items; the best of its validation checkpoints, by NME on landmark-box crops; test-time "
             "mirroring as the bundled face68), and adds "
             "one thing to the row above; the rows below the ladder change one thing in the ladder's row they name "
             "(input size: the jitter row; landmark loss: the 5-point row). Inter-ocular NME (%) on the 300-W "
             "validation faces (10 % of AFW + HELEN "
             "train, held out) and on HELEN test (330 faces), each face cropped from its landmark box (the paper's "
             "protocol) or from dlib's detector box mapped to the same framing, as `predict` runs: a first pass "
             "from that box, a second from the box of the first pass's landmarks (`--refine 1`, the default for "
             "face models; 'one pass': `--refine 0`); faces dlib misses are left out, count beside. CPU-hours as "
             "logged, in the row's arithmetic (bfloat16 with AMX-BF16 takes a fraction of float32's CPU time: "
             "compare hours within one arithmetic). Produced by "
             "`PYTHONPATH=src .venv/bin/python "
             "scripts/face68_ablation.py`.", "",
             "| row | validation, landmark boxes | validation, dlib boxes | validation, dlib boxes, one pass | "
             "HELEN test, landmark boxes | HELEN test, dlib boxes | HELEN test, dlib boxes, one pass | CPU-hours | "
             "trained in |", "|---|---|---|---|---|---|---|---|---|"]
    for row, s in done.items():
        label = ROWS[row][0] if row in ROWS else row
        cells = [f"{s[k]['nme']:.2f}" + (f" ({s[k]['found']}/{s[k]['faces']})" if "found" in s[k] else "")
                 for k in SCORES]
        run = out / "runs" / row
        hours, how = ((f"{cpu_hours(out, row):.2f}", ran_on(run, json.loads((run / "metrics.json").read_text())))
                      if row in ROWS else ("-", "-"))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {hours} | {how} |")
    trained = {row: s["val_dlib"]["nme"] for row, s in done.items() if row in CANDIDATES}
    if trained:
        best = sorted(trained, key=trained.get)
        runner_up = f"; next {ROWS[best[1]][0]}, {trained[best[1]]:.3f} %" if best[1:] else ""
        lines += ["", "Best of the rows with face68's input size (its latency) on the validation faces through dlib's "
                  f"boxes (how the issue chooses): {ROWS[best[0]][0]} ({trained[best[0]]:.3f} %{runner_up}). "
                  f"The bundled face68 is the {ROWS[BUNDLED][0]} row's best checkpoint continued for a second cycle "
                  "of the same recipe (results/face68-cycle2/README.md)."]
    lines += ["", "Commands (then `sslandmarks evaluate --checkpoint RUN/checkpoints/best.ckpt --split val|test "
              "[--detector dlib [--refine 0]] --out RUN/eval_KEY.json` for each):", "", "```"]
    lines += [shlex.join(cmd) for cmd in commands.values()] + ["```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (face68's last stage used 3e-4)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows of {', '.join(ROWS)}")
    p.add_argument("--out", default="results/face68-ablation", help="folder of the rows' runs (default: %(default)s)")
    p.add_argument("--md", default="results/face68_ablation.md", help="the table (default: %(default)s)")
    p.add_argument("--report-only", action="store_true", help="write the table from the rows already scored")
    p.add_argument("--start", type=Path, default=Path("results/face68-ablation/face68-before.ckpt"),
                   help=f"the face68 every row continues (default: %(default)s, written from commit {STARTED_FROM}'s "
                   "bundled face68 when missing)")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"face68_ablation: unknown row(s) {', '.join(unknown)}: use {', '.join(ROWS)}", file=sys.stderr)
        return 2
    bundled = out / "bundled"  # its scores are kept; computing them again needs the starting weights
    cached = all((bundled / f"eval_{key}.json").is_file() for key in SCORES)
    before = [] if cached else ["--checkpoint", str(start_weights(args.start))]
    done: dict[str, dict] = {"face68 before this ablation (the starting point)": scores(bundled, before)}
    commands = {}
    to_train = [] if args.report_only else [r for r in rows if not (out / "runs" / r / "metrics.json").is_file()]
    for row in to_train:  # a finished row keeps its command
        cmd = train_row(out, row, args.steps, args.lr, args.start)
        (out / "runs" / row / "command.json").write_text(json.dumps(cmd) + "\n")
    for row in ROWS:  # the table: every finished row, not only those this call trained
        run = out / "runs" / row
        if (run / "metrics.json").is_file():
            commands[row] = json.loads((run / "command.json").read_text())
            done[row] = scores(run, ["--checkpoint", str(run / "checkpoints" / "best.ckpt")])
    Path(args.md).write_text(report(out, done, commands, args.steps))
    print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
