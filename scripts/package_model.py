"""Bundle a finished run as a pretrained model: ``src/sslandmarks/weights/NAME.{ckpt,md}``.

    python scripts/package_model.py RUN_DIR NAME --command "the command that trained it" [--extra FILE.md]

The checkpoint keeps the best weights and the full config (no optimiser state). The model card is
written from the run's config and from its best weights scored afresh on the config's validation and test
splits with this version's metrics (so the card's figures are what `evaluate --model NAME` prints),
plus an optional hand-written markdown section (e.g. latency measured separately)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from sslandmarks.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from sslandmarks.config import to_dict
from sslandmarks.data.detect import FACE_LAYOUTS
from sslandmarks.data.sources import load_splits
from sslandmarks.inference import evaluate_data
from sslandmarks.pretrained import PRETRAINED, UNINFORMATIVE, WEIGHTS


def _metrics_line(m: dict) -> str:
    cells = [f"NME {m['nme']:.2f} % ({m['normalizer']})"]
    cells += [f"NME {v:.2f} % ({k})" for k, v in m.get("nme_by", {}).items() if k != m["normalizer"]]
    for t in ("0.08", "0.10"):
        if f"auc@{t}" in m:
            cells.append(f"AUC@{t} {m[f'auc@{t}']:.3f}, failure rate@{t} {100 * m[f'failure_rate@{t}']:.1f} %")
    for k, v in m.get("attribute_accuracy", {}).items():
        cells.append(f"{k} accuracy {100 * v:.1f} %")
    return f"{m['n_images']} images: " + "; ".join(cells)


def _init_note(init: str, name: str) -> str:
    """How the weights started when the run was a fine-tune (``train.init``) of the model bundled as ``name``."""
    if not init:
        return ""
    if init in PRETRAINED and not Path(init).exists():
        return f", starting from the weights of the {init} bundled " + ("before it" if init == name else "then")
    if not Path(init).is_file():
        return f", starting from the weights of {init}"
    state = load_checkpoint(init)
    t = state["config"]["train"]
    return (f", starting from the best weights ({state['step']:,} of {t['steps']:,} steps, lr {t['lr']:g} "
            f"{t['schedule']}) of the run it continues")


def _framing_note(spec: str) -> str:
    """How the card's figures crop versus how ``predict`` crops, for a face layout or another one."""
    if spec in FACE_LAYOUTS:
        return ("Faces are cropped from their ground-truth landmark box (the paper's protocol); "
                "`sslandmarks predict` crops from dlib's detector box mapped to the same framing instead.")
    return ("Crops are cut from the ground-truth landmark box (the paper's protocol). There is no detector: "
            "`sslandmarks predict` crops from the box you give (`--box x0,y0,x1,y1`, or `--boxes FILE.json` for a "
            "folder), drawn tightly around the object, or from the whole image when none is given.")


def _files(d, paths: tuple[str, ...], values: tuple[str, ...]) -> str:
    """Annotation files, and the ``data.split_column`` values a split keeps of them."""
    return ", ".join(paths) + (f" ({d.split_column} {', '.join(values)})" if d.split_column and values else "")


def _split_note(d) -> tuple[str, str, bool]:
    """The card's words for the training and validation data, and whether validation was held out of training
    (a final model may train on its validation subjects too: then the validation figure is not held out)."""
    if not d.val_path:
        return _files(d, d.train_path, d.train_values), f"{d.val_fraction:.0%} held out for validation", True
    shared = set(d.val_path) & set(d.train_path) and (
        not d.split_column or not d.val_values or not d.train_values or set(d.val_values) & set(d.train_values))
    val = f"validation: {_files(d, d.val_path, d.val_values)}" + (", which is also training data" if shared else "")
    return _files(d, d.train_path, d.train_values), val, not shared


def _chosen(held_out: bool, state: dict, cfg) -> str:
    """Which weights were kept."""
    if held_out:
        return "best validation checkpoint"
    return "the final weights" if state["step"] == cfg.train.steps else "best on validation images it trained on"


def _licence_note(paths: tuple[str, ...]) -> str:
    """The research-only caveat naming the data the model learnt from."""
    if any("hgr1" in p for p in paths):
        return ("Trained on HGR1's photos (research use only; check the dataset's terms before any other use) with "
                "**MediaPipe Hands' points as landmarks: machine-made reference points, not human annotation**, so "
                "the figures above measure agreement with MediaPipe Hands.")
    return ("Trained on research-only data (300-W / iBUG, MTFL and their source collections): use for research "
            "only, and check the datasets' terms before any other use.")


def _extra_rows(d) -> list[str]:
    """Card rows for the extra training faces (``data.extra_sources``) and the detector-box jitter, if any."""
    rows = []
    for s in d.extra_sources:
        use = (f"supervised on its {s.spec} points (weight {s.weight:g})" if s.labelled
               else "its landmarks unused: images for ELT")
        labels = f"; labels the {', '.join(s.attributes)} heads" if s.attributes else ""
        rows.append(f"| more training faces | {', '.join(s.train_path)} ({s.format}, {s.batch} per step, {use}"
                    f"{labels}) |")
    j = d.box_jitter
    if max(*j.shift, j.scale) > 0:
        rows.append(f"| crop boxes | jittered as a face detector's boxes scatter: shift std x {j.shift[0]:g}, "
                    f"y {j.shift[1]:g} of the box side, log-scale std {j.scale:g} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("name", choices=sorted(PRETRAINED))
    p.add_argument("--command", required=True, help="the command line that trained the run")
    p.add_argument("--extra", type=Path, help="markdown appended to the card")
    p.add_argument("--uninformative", nargs="+", metavar="HEAD", default=[],
                   help="attribute heads no better than the majority class on test: marked on the card, and hidden "
                   "by predict and sslandmarks.load unless asked for (mtfl5: gender glasses)")
    p.add_argument("--mirror", action="store_true",
                   help="bundle with test-time mirroring (data.test_flip) if it lowers the *validation* error")
    args = p.parse_args()

    state = load_checkpoint(args.run / "checkpoints" / "best.ckpt")
    model, cfg = model_from_checkpoint(args.run / "checkpoints" / "best.ckpt")
    splits = load_splits(cfg, extra=False)  # val and test only: extra sources are training faces
    train_data, val_data, held_out = _split_note(cfg.data)
    if args.mirror and not held_out:
        p.error("--mirror is chosen on validation, but this run trained on its validation images")
    if args.mirror:  # decided on the validation split only, from the single pass whatever the run's setting
        cfg, mirrored_cfg = (replace(cfg, data=replace(cfg.data, test_flip=flip)) for flip in (False, True))
    val, mirror_note = evaluate_data(model, splits.val, cfg), ""
    if args.mirror:
        mirrored = evaluate_data(model, splits.val, mirrored_cfg)
        mirror_note = (f"Test-time mirroring (`data.test_flip`) is {'on' if mirrored['nme'] < val['nme'] else 'off'}: "
                       f"chosen on validation (NME {val['nme']:.2f} % without, {mirrored['nme']:.2f} % with).")
        if mirrored["nme"] < val["nme"]:
            cfg, val = mirrored_cfg, mirrored
    metrics = {"val": val, "test": evaluate_data(model, splits.test, cfg)}
    params = sum(p.numel() for p in model.parameters())
    slim = {"model": {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()},
            "config": to_dict(cfg), "name": args.name, "step": state["step"],
            "metrics": {s: {k: v for k, v in metrics[s].items() if not isinstance(v, list)} for s in ("val", "test")}}
    WEIGHTS.mkdir(exist_ok=True)
    save_checkpoint(WEIGHTS / f"{args.name}.ckpt", slim)
    d, m = cfg.data, cfg.model
    heads = ", ".join(f"{h.name} ({h.classes} classes)" if h.kind == "class" else f"{h.name} ({h.dims} values)"
                      for h in m.heads) or "none"
    card = [
        f"# {args.name}", "", PRETRAINED[args.name] + ".", "",
        "| | |", "|---|---|",
        f"| architecture | `{m.name}`, {params:,} parameters, width {m.width}"
        + (f", {m.levels} poolings, first conv stride {m.stem_stride}" if m.name.startswith("rcn") else "") + " |",
        f"| input | {m.input_size[1]}x{m.input_size[0]} {'grey' if m.in_channels == 1 else 'RGB'} crop of the square "
        f"box around the landmarks, enlarged by {d.crop_margin:.0%} per side |",
        f"| output | {m.num_landmarks} landmarks (`{d.spec}` layout) in input pixels; attribute heads: {heads} |",
        f"| training data | {train_data} ({d.labelled_pct:g} % labelled; {val_data}) |",
        *_extra_rows(d),
        f"| augmentation | rotation +-{d.augment_rotation_deg:g} deg, scale {d.augment_scale[0]:g}-"
        f"{d.augment_scale[1]:g}, shift +-{d.augment_translate:.0%}, mirror p={d.augment_flip:g} |",
        f"| loss | {cfg.loss.variant} (lambda {cfg.loss.lam:g}, alpha {cfg.loss.alpha:g}, ELT on {cfg.loss.elt_on}"
        f"{'; landmark misses charged their distance' if cfg.loss.distance == 'euclidean' else ''}) |",
        f"| training | {state['step']:,} of {cfg.train.steps:,} Adam steps ({_chosen(held_out, state, cfg)}), batches "
        f"{cfg.train.batch_labelled} + {cfg.train.batch_unlabelled}, lr {cfg.train.lr:g} {cfg.train.schedule}"
        f"{f', weights kept as their moving average (ema {cfg.train.ema:g})' if cfg.train.ema else ''}"
        f"{_init_note(cfg.train.init, args.name)} |",
        *([f"{UNINFORMATIVE} {', '.join(args.uninformative)} (no better than the majority class on the test set; "
           "`predict` hides them unless `--all-attributes`) |"] if args.uninformative else []),
        "", "## Measured", "",
        f"- validation{'' if held_out else ' (not held out: these images were trained on)'}: "
        f"{_metrics_line(metrics['val'])}",
        f"- test ({_files(d, d.test_path, d.test_values)}): {_metrics_line(metrics['test'])}",
        *([f"- {mirror_note}"] if mirror_note else []),
        "", _framing_note(d.spec),
        "", "Trained with:", "", "```", args.command, "```", "",
        "## Licence caveat", "", _licence_note(d.train_path), ""]
    if args.extra:
        card += [args.extra.read_text().strip(), ""]
    (WEIGHTS / f"{args.name}.md").write_text("\n".join(card))
    size = (WEIGHTS / f"{args.name}.ckpt").stat().st_size
    print(f"wrote {WEIGHTS / args.name}.ckpt ({size / 1e6:.2f} MB) and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
