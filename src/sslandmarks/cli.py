"""The command line: a dict of subcommand -> function. Exit codes: 0 ok, 2 bad input or usage, 1 other."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sslandmarks import __version__
from sslandmarks.errors import UserError
from sslandmarks.pretrained import resolve
from sslandmarks.tables import FIGURES, TABLES

# Workflow modules are imported inside the commands: they pull in torch, and `--help` should not wait for it.


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error on one line (exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        if "--box: expected one argument" in message:  # argparse takes "-5,0,90,80" for an option
            message += "; a box whose first value is negative is written --box=-5,0,90,80"
        raise UserError(f"{self.prog}: {message} (see --help)")


def _positive(kind: type):
    """An argparse type: a finite number > 0 of ``kind`` (int or float); anything else is a usage error."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"{text!r}: give a finite number greater than 0")
        return v

    return parse


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more")
    return v


def cmd_train(args: argparse.Namespace) -> int:
    from sslandmarks.config import load_config
    from sslandmarks.data.formats import Problems
    from sslandmarks.data.sources import load_splits
    from sslandmarks.outputs import ensure_writable_dir
    from sslandmarks.train import check_run, fit

    cfg = load_config(args.config, args.set)
    if args.init:
        cfg = replace(cfg, train=replace(cfg.train, init=args.init))
    check_run(cfg, args.out, args.resume)  # before the data are read: refusals come at once
    ensure_writable_dir(args.out)
    problems = Problems(args.skip_bad)
    splits = load_splits(cfg, problems)
    if problems.items:
        print(f"skipped {len(problems.items)} bad sample(s); first: {problems.items[0]}", file=sys.stderr)
    metrics, _ = fit(cfg, splits, args.out, resume=args.resume, progress=not args.quiet,
                     devices=args.devices, num_nodes=args.num_nodes)
    if not metrics:  # a DDP rank other than 0
        return 0
    acc = metrics.get("attribute_accuracy", {})
    extra = "".join(f", {k} accuracy {v:.3f}" for k, v in acc.items())
    if "landmark_consistency" in metrics:
        extra += f", landmark consistency {metrics['landmark_consistency']:.3f}"
    print(f"test: mean error {metrics['mean_error_px']:.3f} px{extra}; wrote {args.out}/metrics.json")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sslandmarks.data.formats import input_files
    from sslandmarks.evaluate import evaluate_checkpoint, guess_format
    from sslandmarks.outputs import ensure_writable_file, refuse_inputs_as_outputs, write_json

    ckpt = resolve(args.checkpoint, args.model)
    inputs = [ckpt, *(input_files(args.data, args.format or guess_format(args.data)) if args.data else [])]
    refuse_inputs_as_outputs([("--out", args.out), *([("--ced", args.ced)] if args.ced else [])], inputs)
    for path in filter(None, (args.out, args.ced)):  # fail on an unwritable output before any work
        ensure_writable_file(path)
    metrics = evaluate_checkpoint(ckpt, args.data, args.split, args.format, args.skip_bad, args.detector,
                                  progress=_progress(args), threads=args.threads, device=args.device,
                                  refine=args.refine)
    if metrics.get("skipped"):
        print(f"skipped {len(metrics['skipped'])} bad sample(s), listed under 'skipped' in {args.out}; "
              f"first: {metrics['skipped'][0]}", file=sys.stderr)
    write_json(metrics, args.out)
    if args.ced:
        from sslandmarks.viz import ced_plot

        ced_plot({args.model or Path(ckpt).stem: metrics["per_image_nme"]}, metrics["normalizer"], args.ced)
    print(
        f"{metrics['n_images']} images: mean error {metrics['mean_error_px']:.3f} px, "
        f"NME {metrics['nme']:.2f} % of {metrics['normalizer']}; wrote {args.out}"
    )
    for k, v in metrics.get("attribute_accuracy", {}).items():
        print(f"  {k} accuracy: {v:.3f}")
    if "detector" in metrics:
        d = metrics["detector"]
        print(f"  the detector found {d['found']} of {d['faces']} faces (scored above); missed: "
              f"{len(d['missed'])}, listed under 'detector' in {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sslandmarks.boxes import parse_box
    from sslandmarks.predict import predict_files

    box = parse_box(args.box) if args.box is not None else None  # before the model loads: a typo fails at once
    video = {"every": args.detect_every, "smooth": args.smooth, "draw": not args.no_video}
    n = predict_files(resolve(args.checkpoint, args.model), args.images, args.out, progress=_progress(args),
                      min_score=args.min_score, threads=args.threads, device=args.device,
                      all_attributes=args.all_attributes, video=video, box=box, boxes_file=args.boxes,
                      refine=args.refine)
    print(f"wrote landmarks of {n} file(s) to {args.out}/predictions.json")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sslandmarks.demo import run_demo

    run_demo(args.out, quick=args.quick, progress=not args.quiet)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from sslandmarks.outputs import ensure_writable_dir
    from sslandmarks.runner import run_shapes_figure3, run_table

    if args.report_only and args.table not in FIGURES and not (Path(args.out) / "runs").is_dir():
        raise UserError(f"{args.out}: nothing to report on ({Path(args.out) / 'runs'} does not exist); give --out the "
                        f"folder that 'sslandmarks reproduce {args.table}' trained into")
    ensure_writable_dir(args.out)
    if args.publish:
        if args.table in FIGURES:
            raise UserError(f"--publish applies to tables, not to {args.table}")
        ensure_writable_dir(args.publish)
    if args.table == "shapes-figure3":
        run_shapes_figure3(args.out, quick=args.quick, extra=args.set, progress=not args.quiet)
        print((Path(args.out) / "figure3.md").read_text())
        return 0
    if (args.fractions or args.models) and args.table in FIGURES:
        raise UserError(f"--fractions/--models apply to tables, not to {args.table}")
    run_table(args.table, args.out, seeds=args.seeds, quick=args.quick, extra=args.set, progress=not args.quiet,
              jobs=args.jobs, fractions=args.fractions, models=args.models, protocol=args.protocol, fresh=args.fresh,
              report_only=args.report_only)
    print((Path(args.out) / "table.md").read_text())
    if args.publish:
        from sslandmarks.report import publish

        written = publish(Path(args.out), Path(args.publish), args.table.replace("-", "_"))
        print("published " + ", ".join(str(p) for p in written))
    figure = ", figure.png" if (Path(args.out) / "figure.png").is_file() else ""
    print(f"wrote {args.out}/table.csv, table.md, plot.png{figure}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sslandmarks.export import PARITY_LIMIT_PX, export_onnx

    if args.calibration and not args.int8:
        raise UserError("--calibration is for --int8")
    res = export_onnx(resolve(args.checkpoint, args.model), args.onnx, mirror=args.mirror, int8=args.int8,
                      calibration=args.calibration)
    kind = ("fused mirror: each image and its mirror averaged" if args.mirror else "one pass") + (
        ", int8" if args.int8 else "")
    print(f"wrote {res['path']} ({kind}; input 'images' (B, C, H, W) in [0, 1]; outputs {', '.join(res['outputs'])})")
    print(f"parity with PyTorch{' (mirrored)' if args.mirror else ''} on 5 random images, float32 graph: max landmark "
          f"difference {res['max_landmark_diff_px']:.2g} px (limit {PARITY_LIMIT_PX} px)")
    if args.int8:
        q = res["int8"]
        print(f"int8 against float32 on {q['checked_faces']} held-out calibration faces ({q['calibration_faces']} "
              f"calibrated): landmarks move by {q['mean_diff_px']:.3f} px on average, at most {q['max_diff_px']:.2f} "
              f"px (limit on the average: {q['limit_px']:.2f} px, 1 % of the input width)")
    print(f"latency on this machine: {res['latency_ms']:.2f} ms per image (median; p90 {res['latency_p90_ms']:.2f} ms; "
          f"batch 1, ONNX Runtime, {res['latency_threads']} threads)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sslandmarks.bench import BENCH_MODELS, format_table, run_bench
    from sslandmarks.outputs import ensure_writable_file, write_json

    if args.time_to_accuracy and args.latency:
        raise UserError("give --time-to-accuracy or --latency, not both")
    if not args.latency and (args.data or args.calibration or args.runs):
        raise UserError("--data, --calibration and --runs are for --latency")
    if args.time_to_accuracy:
        return _time_to_accuracy(args)
    if args.latency:
        return _latency(args)
    if args.threads:
        raise UserError("--threads is for --latency or --time-to-accuracy")
    if args.out:
        ensure_writable_file(args.out)
    unknown = [m for m in args.models or [] if m not in BENCH_MODELS]
    if unknown:
        raise UserError(f"--models {unknown[0]!r} is unknown: use {', '.join(BENCH_MODELS)}")
    res = run_bench(args.device, args.seconds, args.models)
    print(format_table(res))
    if args.out:
        write_json(res, args.out)
        print(f"wrote {args.out}")
    return 0


def _time_to_accuracy(args: argparse.Namespace) -> int:
    from sslandmarks.time_to_accuracy import format_markdown, run_time_to_accuracy

    if args.threads and len(args.threads) > 1:
        raise UserError("--time-to-accuracy takes one --threads count (per side)")
    out = Path(args.out or "runs/time-to-accuracy")
    res = run_time_to_accuracy(out, args.workloads, threads=args.threads[0] if args.threads else 1)
    text = format_markdown(res)
    (out / "time_to_accuracy.md").write_text(text + "\n")
    print(text)
    print(f"wrote {out}/time_to_accuracy.json and time_to_accuracy.md")
    return 0


def _latency(args: argparse.Namespace) -> int:
    from sslandmarks.latency import format_latency, run_latency
    from sslandmarks.outputs import ensure_writable_file, write_json

    if args.out:
        ensure_writable_file(args.out)
    res = run_latency(args.models, args.threads, args.runs or 300, args.data, args.calibration)
    print(format_latency(res))
    if args.out:
        write_json(res, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sslandmarks.pretrained import PRETRAINED, available, model_card

    if args.name:
        print(model_card(args.name))
        return 0
    have = available()
    width = max(map(len, PRETRAINED))
    for name, about in PRETRAINED.items():
        print(f"{name:<{width}}  {'bundled' if name in have else 'not yet'}  {about}")
    print("\nUse one with --model NAME (evaluate, predict, export); `sslandmarks models NAME` shows its card.")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a .ckpt written by train (RUN/checkpoints/best.ckpt), or a bundled model's "
                   "name")
    g.add_argument("--model", help="a bundled pretrained model by name (`sslandmarks models` lists them)")


def _train_args(sub) -> None:
    t = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train from a config; writes config.yaml, checkpoints/{last,best}.ckpt, "
                       "log.csv, metrics.json and predictions.png into --out.")
    t.add_argument("--config", required=True, help="YAML file, e.g. configs/blocks.yaml, or a packaged config by "
                   "name (blocks.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loss.variant=L --set train.steps=500 (repeatable)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--init", metavar="CKPT_OR_MODEL", help="fine-tune: start from a checkpoint's weights or a "
                   "bundled model's (e.g. face68) with a fresh optimiser and schedule; tensors whose shape differs "
                   "(another landmark count) start fresh (same as --set train.init=...)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--skip-bad", action="store_true", help="skip bad samples (reported) instead of stopping")
    t.add_argument("--devices", type=_positive(int), default=1,
                   help="processes (GPUs, or CPU processes with --set train.device=cpu) per node; >1 uses DDP")
    t.add_argument("--num-nodes", type=_positive(int), default=1, help="nodes for multi-node DDP (torchrun or SLURM)")


def _evaluate_args(sub) -> None:
    e = sub.add_parser("evaluate", help="score a checkpoint on a dataset",
                       description="Write n_images, mean_error_px, nme (+normalizer), per-landmark error and "
                       "attribute accuracy to a JSON file.")
    _model_args(e)
    e.add_argument("--data", help="annotated files (a folder of .pts, an MTFL list, a CSV manifest) or a synthetic "
                   "dataset name; default: the checkpoint's own synthetic dataset")
    e.add_argument("--format", choices=["pts", "mtfl", "csv", "ljson", "coco"],
                   help="annotation format (default: from the path)")
    e.add_argument("--skip-bad", action="store_true", help="skip bad samples and list them instead of stopping")
    e.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="without --data: which of the checkpoint's own splits to score (a synthetic dataset's, or "
                   "for a model trained on files the same held-out validation or test faces as in training)")
    e.add_argument("--out", required=True, help="JSON file to write")
    e.add_argument("--ced", help="also draw the cumulative error distribution (per-image NME) to this PNG")
    e.add_argument("--detector", choices=["dlib"], help="crop each face from dlib's detector box, as predict does, "
                   "instead of from its ground-truth landmarks (the paper's protocol); needs the 'detect' extra")
    _refine_arg(e, "with --detector")
    _runtime_args(e)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal, unless --quiet (none in logs and pipes)."""
    return not args.quiet and sys.stderr.isatty()


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive(int), default=1,
                   help="torch intra-op threads (default 1: the fastest on a busy machine, where idle threads spin)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is no terminal)")


def _refine_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--refine", type=_non_negative_int, metavar="N",
                   help=f"{what}: N more passes on each face, each cropped from the box of the previous pass's "
                   "landmarks, as training crops were framed (default 1 for face models, whose detector boxes "
                   "frame faces less tightly; 0 otherwise); each pass costs one more run of the model per face")


def _predict_args(sub) -> None:
    r = sub.add_parser("predict", help="predict landmarks on image and video files",
                       description="Face models (trained on crops) find faces with dlib's HOG detector (the "
                       "'detect' extra) and predict on each; --box or --boxes gives the boxes instead. Models "
                       "without a detector (hands, any crop model whose layout is not a face's) need a box: "
                       "without one, the whole image is the box. Whole-image models see the image (or the "
                       "box) resized. Writes "
                       "predictions.json (landmarks in image pixels, detector scores) and one overlay PNG per photo "
                       "with a face; a video (.mp4, .mov, .avi, .mkv, .webm; the 'video' extra) gets NAME.json and "
                       "NAME.csv (landmarks per frame) and NAME_landmarks.mp4. A rerun into the same --out replaces "
                       "the files of the previous run.")
    _model_args(r)
    r.add_argument("images", nargs="+", help="image or video files, or folders of them")
    r.add_argument("--out", required=True, help="output folder")
    b = r.add_mutually_exclusive_group()
    b.add_argument("--box", metavar="X0,Y0,X1,Y1",
                   help="one box (left, top, right, bottom in pixels of the image as displayed) for every input, "
                   "instead of the detector: for a face model framed like the detector's face box, for a model "
                   "without a detector (a hand model) drawn around the object; on a video, the box in the first "
                   "frame (a lost track restarts from it). Negative values: --box=-5,0,120,90")
    b.add_argument("--boxes", metavar="FILE.json",
                   help='boxes per image: {"a.jpg": [[x0, y0, x1, y1], ...], ...}, each image named by its path '
                   "as given (photos/a.jpg) or its basename; [] means no object. Inputs without an entry get the "
                   "detector (or the whole image); names that match no input are reported and ignored")
    r.add_argument("--min-score", type=float, default=0.0, help="drop detections scoring below this (dlib's SVM "
                   "margin: 0 is its own threshold, real faces mostly score over 0.5; negative finds more)")
    r.add_argument("--all-attributes", action="store_true",
                   help="also report attribute heads the model card marks as uninformative (hidden by default)")
    r.add_argument("--detect-every", type=_positive(int), default=10, metavar="N",
                   help="video: run the detector every N frames (and when a track is lost); in between, faces are "
                   "tracked from their landmarks (with --box/--boxes or no detector, only a lost track restarts)")
    r.add_argument("--smooth", type=float, default=0.0, metavar="W",
                   help="video: smooth landmarks over frames, W in [0, 1) the weight of the past (default 0: off)")
    r.add_argument("--no-video", action="store_true", help="video: landmarks only, no annotated video")
    _refine_arg(r, "from a detector's or a given box")
    _runtime_args(r)


def _demo_export_models_args(sub) -> None:
    d = sub.add_parser("demo", help="Seq-MT (L) vs (L+ELT+A) on Blocks with 5 %% labelled landmarks",
                       description="Trains both models (about 5 minutes on a 2-core CPU with bfloat16 units, more "
                       "on one without), prints test errors and writes summary.json and predictions.png into --out.")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quick", action="store_true", help="a few steps only (a smoke test, not a result)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    o = sub.add_parser("export", help="export a checkpoint to ONNX, checked against PyTorch",
                       description="Writes an ONNX model with a dynamic batch axis and prints the landmark "
                       "difference between ONNX Runtime and PyTorch (must be below 1e-3 px) and the latency of one "
                       "call. --mirror fuses test-time mirroring into the graph; --int8 quantises it (checked against "
                       "float32 with a looser limit, below).")
    _model_args(o)
    o.add_argument("--onnx", required=True, help="file to write")
    o.add_argument("--mirror", action="store_true", help="fused test-time mirroring: the graph runs each image and "
                   "its left-right mirror as one batch and returns their averaged landmarks (as evaluate and predict "
                   "mirror); checked against PyTorch's mirrored answer within 1e-3 px")
    o.add_argument("--int8", action="store_true", help="int8 static quantisation (the convolutions; the soft-argmax "
                   "stays float32), calibrated on training-like faces; checked against the float32 graph on held-out "
                   "faces: the landmarks may move by 1%% of the input width on average (the bundled face models: "
                   "0.08-0.14 px, HELEN test NME +0.03 points at most; `sslandmarks bench --latency --data DIR` "
                   "measures it)")
    o.add_argument("--calibration", metavar="PATH", help="with --int8: annotated faces to calibrate on (a folder "
                   "of .pts, a CSV manifest, ...; never the test set); default: the checkpoint's training data")
    m = sub.add_parser("models", help="list the bundled pretrained models, or show one's model card",
                       description="Pretrained models ship inside the package and load by name with --model.")
    m.add_argument("name", nargs="?", help="show this model's card (data, protocol, metrics, licence)")


def _bench_args(sub) -> None:
    b = sub.add_parser("bench", help="training and inference speed against the hardware ceiling",
                       description="For each paper model: end-to-end L+ELT+A training images/s, the ceiling (the "
                       "same layers, same passes, random tensors), inference images/s, TFLOP/s and the share of a "
                       "measured matmul peak. --latency: per-face latency of face models (and dlib's predictor); "
                       "--time-to-accuracy: training time to a target error.")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--out", help="JSON file to write")
    b.add_argument("--seconds", type=_positive(float), default=2.0, help="minimum timing per measurement")
    b.add_argument("--models", nargs="+", help="subset of models (default: all); with --latency, bundled models or "
                   "checkpoints (default: face68-fast face68)")
    b.add_argument("--time-to-accuracy", action="store_true",
                   help="instead: train fixed workloads twice side by side (the recipe before the speed work and "
                   "today's) and report the seconds until the validation error reaches a target; --out is a folder")
    b.add_argument("--workloads", nargs="+", metavar="NAME", help="with --time-to-accuracy: blocks, faces, hands "
                   "(default: all; faces and hands need ../shared/data)")
    b.add_argument("--threads", type=_positive(int), nargs="+", metavar="N",
                   help="with --time-to-accuracy: intra-op threads per side (default 1: both sides run at once); "
                   "with --latency: each count in turn (default: 1 2)")
    b.add_argument("--latency", action="store_true",
                   help="instead: per-face latency (batch 1) of face models every way they can run, side by side in "
                   "one run: PyTorch, ONNX Runtime (optimisation levels, thread spinning, a saved optimised graph), "
                   "int8 static and dynamic, the face + mirror pair as a batch of 2 and as a fused graph, and dlib's "
                   "68-point shape predictor from a box (optional: pip install dlib-bin face-recognition-models)")
    b.add_argument("--runs", type=_positive(int), help="with --latency: timed calls per variant and thread count "
                   "(default 300)")
    b.add_argument("--data", metavar="DIR", help="with --latency: annotated test faces (e.g. "
                   "../shared/data/300w-partial/helen/testset): each variant's NME there (crops from the landmarks, "
                   "as evaluate), int8's change against float32, and the timed face")
    b.add_argument("--calibration", metavar="PATH", help="with --latency: annotated faces for int8 calibration "
                   "(default: each model's training data; without it, no int8 rows)")


def _reproduce_args(sub) -> None:
    x = sub.add_parser("reproduce", help="reproduce a table of the paper (a grid of runs)",
                       description="Runs every (model, labelled fraction, seed) cell, skipping finished ones, and "
                       "writes table.csv (every metric of every cell: mean, std, seeds), table.md (ours beside the "
                       "paper, the protocol, the CPU-hours) and plot.png into --out; tables with a comparison also "
                       "draw figure.png. Interrupted? Run the same command again: cells resume from their last "
                       "checkpoint.")
    x.add_argument("table", choices=sorted([*TABLES, *FIGURES]), help="which table or figure of the paper")
    x.add_argument("--out", required=True, help="results folder: runs/<row>/<pct>pct-seed<n>/ per cell, and "
                   "the aggregate beside them (keep it to resume)")
    x.add_argument("--protocol", help="how the cells train: 'cpu' (the default where a table has it: sized for a "
                   "2-core CPU, as in results/), 'paper' (the configs as they are, 5 seeds: a GPU's job), or hgr1's "
                   "'cpu-long' (its two 5 %% claim rows trained 3,000 steps instead of 800, 3 seeds)")
    x.add_argument("--seeds", type=int, help="seeds per cell, in every column (default: the protocol's)")
    x.add_argument("--report-only", action="store_true",
                   help="train nothing: write table.csv/md and plot.png from the cells finished so far")
    x.add_argument("--publish", metavar="DIR", help="also copy the aggregate to DIR as TABLE.csv, TABLE.md and "
                   "TABLE.png (e.g. --publish results: results/blocks_table1.csv, .md, .png)")
    x.add_argument("--fresh", action="store_true",
                   help="retrain cells that were trained with another config (default: refuse to mix them)")
    x.add_argument("--quick", action="store_true", help="short runs: a smoke test of the whole grid, not a result")
    x.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value in every cell")
    x.add_argument("--jobs", type=_positive(int), default=1,
                   help="cells trained at once in worker processes (GPU: 4-16)")
    x.add_argument("--fractions", type=float, nargs="+", metavar="PCT",
                   help="run only these labelled-%% columns (e.g. --fractions 5 10); the rest stay as they are")
    x.add_argument("--models", nargs="+", metavar="ROW",
                   help="run only these rows, named as in the table (e.g. --models 'Seq-MT (L)' 'Seq-MT (L+A)')")
    x.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sslandmarks", description="Semi-supervised landmark localisation (Seq-MT, soft-argmax, ELT).")
    p.add_argument("--version", action="version", version=f"sslandmarks {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_train_args, _evaluate_args, _predict_args, _demo_export_models_args, _bench_args, _reproduce_args):
        add(sub)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "demo": cmd_demo,
    "reproduce": cmd_reproduce,
    "export": cmd_export,
    "bench": cmd_bench,
    "models": cmd_models,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sslandmarks`` and ``python -m sslandmarks``."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # anything unexpected: one line, the traceback only on request
        if os.environ.get("SSLANDMARKS_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set SSLANDMARKS_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

