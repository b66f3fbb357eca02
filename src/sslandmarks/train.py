"""One readable training loop: ``compute_losses`` gives named terms, ``fit`` sums them (Eq. 2).

A step draws ``batch_labelled`` images that keep their landmarks and ``batch_unlabelled`` that keep
only their attributes, so every step sees labelled images even at 1 %. ELT warps the chosen images
with random affines ``T`` and compares ``L(T I)`` with ``T L(I)`` in one network pass.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sslandmarks.config import Config, LossConfig, save_config, to_dict, variant_terms
from sslandmarks.coords import inside_image
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.splits import IndexStream, labelled_subset
from sslandmarks.errors import UserError
from sslandmarks.geometry import AffineRanges, apply_points, sample_affine, warp_images
from sslandmarks.losses import attribute_losses, combine, elt_loss, l2_penalty, landmark_loss
from sslandmarks.models import build_model

LOG_TERMS = ("total", "landmark", "attribute", "elt", "l2")


def to_input(images: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float in ``[0, 1]`` (optionally channels-last)."""
    x = images.float().div_(255.0) if not images.is_floating_point() else images
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def compute_losses(
    model: nn.Module,
    batch: LandmarkData,
    loss_cfg: LossConfig,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> dict[str, Tensor]:
    """Unweighted loss terms of Eq. 2 for one batch.

    Images whose landmarks are all NaN count as unlabelled. Returns ``landmark``, ``attribute`` (sum over
    heads) and ``attribute/<head>``, ``elt`` and ``l2`` for the terms the variant switches on.
    """
    terms = variant_terms(loss_cfg.variant)
    x = to_input(batch.images)
    n, (h, w) = x.shape[0], x.shape[-2:]
    labelled = batch.landmark_mask.any(-1)
    use_elt = "ELT" in terms and loss_cfg.alpha > 0
    if use_elt:
        elt_rows = torch.arange(n, device=x.device) if loss_cfg.elt_on == "all" else torch.nonzero(~labelled)[:, 0]
        ranges = AffineRanges(loss_cfg.elt_rotation_deg, loss_cfg.elt_scale, loss_cfg.elt_translate)
        t, _ = sample_affine(len(elt_rows), ranges, (h, w), generator, device=x.device)
        x = torch.cat([x, warp_images(x[elt_rows], t)])  # one pass over originals and warped copies
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = model(x)
    pred = out.landmarks[:n]
    losses: dict[str, Tensor] = {}
    if "L" in terms:
        losses["landmark"] = landmark_loss(pred, batch.landmarks, batch.landmark_mask)
    if "A" in terms and batch.kinds:
        per_head = attribute_losses({k: v[:n] for k, v in out.attributes.items()}, batch.attributes, batch.kinds)
        losses["attribute"] = torch.stack(list(per_head.values())).sum()
        losses.update({f"attribute/{k}": v for k, v in per_head.items()})
    if use_elt:
        target = apply_points(t, pred[elt_rows])
        losses["elt"] = elt_loss(pred[elt_rows], out.landmarks[n:], t, inside_image(target, h, w))
    if loss_cfg.gamma > 0:
        losses["l2"] = l2_penalty(model.parameters())
    return losses


def total_loss(losses: dict[str, Tensor], loss_cfg: LossConfig) -> Tensor:
    return combine(losses, loss_cfg.alpha, loss_cfg.lam, loss_cfg.gamma, loss_cfg.attribute)


@dataclass
class Splits:
    train: LandmarkData  # landmarks of images outside the labelled fraction are NaN
    val: LandmarkData
    test: LandmarkData


def semi_supervised(train: LandmarkData, cfg: Config) -> LandmarkData:
    """Keep the landmarks of a class-balanced ``labelled_pct`` % of ``train`` (none for variants without L)."""
    n = len(train)
    if "L" not in variant_terms(cfg.loss.variant):
        return train.without_landmarks(torch.zeros(n, dtype=torch.bool))
    classes = next((v for k, v in train.attributes.items() if train.kinds[k] == "class"), None)
    return train.without_landmarks(labelled_subset(classes, n, cfg.data.labelled_pct, cfg.train.seed))


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``weights_only=True``: nothing in it can run code."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} does not exist: pass RUN_DIR/checkpoints/best.ckpt")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated file, not a checkpoint at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p}: not a loadable sslandmarks checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{p}: not an sslandmarks checkpoint (no model weights or config inside)")
    return state


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild the model a checkpoint was trained with, in eval mode, and its config."""
    from sslandmarks.config import from_dict

    state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    model = build_model(cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not match the model in its config ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), cfg


# ----------------------------------------------------------------------------- the loop

def _schedule(cfg: Config):
    steps, warm = cfg.train.steps, cfg.train.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


def selection_score(metrics: dict, cfg: Config) -> float:
    """What picks ``best.ckpt`` (lower is better): the validation landmark error in pixels, or, where
    landmarks are evaluation-only (Shapes), the validation classification error (1 - mean accuracy)."""
    from sslandmarks.data.sources import source

    if source(cfg.data.name).hidden_landmarks:
        acc = list(metrics.get("attribute_accuracy", {}).values())
        return 1.0 - sum(acc) / len(acc) if acc else math.inf
    return metrics["mean_error_px"]


def _writable_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {str(out)!r} ({e.strerror}): choose another --out") from None


def fit(cfg: Config, splits: Splits, out: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` on ``splits`` into ``out``; returns the final metrics (also in ``metrics.json``)."""
    from lightning.fabric import Fabric

    from sslandmarks.evaluate import evaluate_data, write_metrics
    from sslandmarks.viz import save_predictions

    out = Path(out)
    _writable_dir(out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume and not last.is_file():
        raise UserError(f"--resume: {last} does not exist; start without --resume")
    if not resume and last.is_file():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose a new --out")
    save_config(cfg, out / "config.yaml")

    tc = cfg.train
    torch.manual_seed(tc.seed)
    accelerator = "auto" if tc.device == "auto" else tc.device
    fabric = Fabric(accelerator=accelerator, devices=1, precision=tc.precision)
    device = fabric.device
    model = build_model(cfg.model)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    start, best = 0, math.inf
    if resume:
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["step"], state["best_val_score"]
        torch.set_rng_state(state["rng"])
    model, optimizer = fabric.setup(model, optimizer)

    train = semi_supervised(splits.train, cfg).to(device)
    val = splits.val.to(device)
    terms = variant_terms(cfg.loss.variant)
    labelled = train.landmark_mask.any(-1).cpu()
    lab_idx, unl_idx = torch.nonzero(labelled)[:, 0], torch.nonzero(~labelled)[:, 0]
    needs_unlabelled = bool(terms & {"A", "ELT"})
    if "L" in terms and len(lab_idx) == 0:
        raise UserError("no training image keeps its landmarks: raise data.labelled_pct")
    streams = [IndexStream(lab_idx, tc.batch_labelled if "L" in terms else 0, tc.seed)]
    streams.append(IndexStream(unl_idx, tc.batch_unlabelled if needs_unlabelled else 0, tc.seed + 1))

    log_path = out / "log.csv"
    columns = ["step", "lr", *LOG_TERMS, *[f"attribute/{k}" for k in train.kinds], "val_error_px", "seconds"]
    if not resume or not log_path.is_file():
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(columns)
    gen = torch.Generator(device=device)
    sums: dict[str, Tensor] = {}
    count, t0 = 0, time.time()

    def checkpoint(step: int, path: Path) -> None:
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "best_val_score": best, "config": to_dict(cfg), "rng": torch.get_rng_state(),
        }
        if fabric.is_global_zero:
            save_checkpoint(path, state)

    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc=f"train {cfg.loss.variant}",
               disable=not progress, dynamic_ncols=True)
    for step in bar:
        model.train()
        idx = torch.cat([s.batch_at(step) for s in streams]).to(device)
        gen.manual_seed(tc.seed * 1_000_003 + step)
        losses = compute_losses(model, train.subset(idx), cfg.loss, gen, tc.channels_last)
        loss = total_loss(losses, cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        scheduler.step()
        for k, v in {"total": loss, **losses}.items():
            sums[k] = sums.get(k, 0.0) + v.detach()
        count += 1
        done = step + 1
        val_err = None
        if done % tc.eval_every == 0 or done == tc.steps:
            val_err = selection_score(evaluate_data(model, val, cfg, batch_size=256), cfg)
            if val_err < best or not math.isfinite(best):
                best = val_err
                checkpoint(done, ckpt_dir / "best.ckpt")
        if done % tc.log_every == 0 or val_err is not None:
            means = {k: float(v) / count for k, v in sums.items()}
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"non-finite loss term {bad[0]!r} at step {done}; lower train.lr")
            row = {"step": done, "lr": scheduler.get_last_lr()[0], **means, "seconds": round(time.time() - t0, 2)}
            row["val_error_px"] = "" if val_err is None else val_err
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in columns])
            bar.set_postfix(loss=f"{means['total']:.3g}", val_px=f"{best:.2f}" if math.isfinite(best) else "-")
            sums, count = {}, 0
        if done % tc.checkpoint_every == 0 or done == tc.steps:
            checkpoint(done, last)
    bar.close()

    best_path = ckpt_dir / "best.ckpt"
    if best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path)["model"])
    metrics = {
        "val": evaluate_data(model, val, cfg),
        "test": evaluate_data(model, splits.test.to(device), cfg),
        "best_val_score": best,
        "steps": tc.steps,
    }
    metrics = {**metrics["test"], **metrics}
    write_metrics(metrics, out / "metrics.json")
    save_predictions(model, splits.test, cfg, out / "predictions.png")
    return metrics
