"""One readable training loop: ``compute_losses`` gives named terms, ``fit`` sums them (Eq. 2).

A step draws ``batch_labelled`` images that keep their landmarks and ``batch_unlabelled`` that keep
only their attributes (global batch sizes), so every step sees labelled images even at 1 %. ELT warps
the chosen images with random affines ``T`` and compares ``L(T I)`` with ``T L(I)`` in one network pass.

Everything random in a step is a function of ``(seed, step)`` (batches and transforms) or is saved in
the checkpoint (the torch RNG, for dropout), so a resumed run continues exactly like an uninterrupted
one. Lightning Fabric owns devices, precision and DDP: with ``world`` processes, rank ``r`` takes rows
``r, r + world, ...`` of every global batch.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from sslandmarks.checkpoint import load_checkpoint, save_checkpoint
from sslandmarks.config import Config, LossConfig, save_config, to_dict, variant_terms
from sslandmarks.coords import inside_image
from sslandmarks.data.augment import augment
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.splits import IndexStream, labelled_subset
from sslandmarks.errors import UserError
from sslandmarks.geometry import AffineRanges, apply_points, sample_affine, warp_images
from sslandmarks.losses import attribute_losses, combine, elt_loss, heatmap_ce_loss, l2_penalty, landmark_loss
from sslandmarks.models import build_model

LOG_TERMS = ("total", "landmark", "attribute", "elt", "l2")


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the last good state was saved before raising."""


def to_input(images: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float in ``[0, 1]`` (float input is passed through)."""
    return images.float().div_(255.0) if not images.is_floating_point() else images


def compute_losses(
    model: nn.Module,
    batch: LandmarkData,
    loss_cfg: LossConfig,
    transforms: Tensor | None = None,
    channels_last: bool = False,
) -> dict[str, Tensor]:
    """Unweighted loss terms of Eq. 2 for one batch.

    Images whose landmarks are all NaN count as unlabelled. ``transforms (B, 3, 3)`` holds one ELT
    transform per row of the batch (only the rows ELT applies to are used). Returns ``landmark``,
    ``attribute`` (sum over heads) and ``attribute/<head>``, ``elt`` and ``l2`` as the variant asks.
    """
    terms = variant_terms(loss_cfg.variant)
    x = to_input(batch.images)
    n, (h, w) = x.shape[0], x.shape[-2:]
    use_elt = "ELT" in terms and loss_cfg.alpha > 0 and transforms is not None
    if use_elt:
        labelled = batch.landmark_mask.any(-1)
        rows = torch.arange(n, device=x.device) if loss_cfg.elt_on == "all" else torch.nonzero(~labelled)[:, 0]
        t = transforms.to(x.device)[rows]
        x = torch.cat([x, warp_images(x[rows], t)])  # one pass over originals and warped copies
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = model(x)
    pred = out.landmarks[:n]
    losses: dict[str, Tensor] = {}
    if "L" in terms and getattr(model, "landmark_loss", "l2") == "heatmap_ce":
        losses["landmark"] = heatmap_ce_loss(out.heatmaps[:n], batch.landmarks, batch.landmark_mask)
    elif "L" in terms:
        losses["landmark"] = landmark_loss(pred, batch.landmarks, batch.landmark_mask)
    if "A" in terms and batch.kinds:
        per_head = attribute_losses({k: v[:n] for k, v in out.attributes.items()}, batch.attributes, batch.kinds)
        losses["attribute"] = torch.stack(list(per_head.values())).sum()
        losses.update({f"attribute/{k}": v for k, v in per_head.items()})
    if use_elt:
        target = apply_points(t, pred[rows])
        losses["elt"] = elt_loss(pred[rows], out.landmarks[n:], t, inside_image(target, h, w))
    if loss_cfg.gamma > 0:
        losses["l2"] = l2_penalty(model.parameters())
    return losses


def total_loss(losses: dict[str, Tensor], loss_cfg: LossConfig) -> Tensor:
    return combine(losses, loss_cfg.alpha, loss_cfg.lam, loss_cfg.gamma, loss_cfg.attribute)


@dataclass
class Splits:
    train: LandmarkData  # full ground truth; fit() hides the landmarks outside the labelled fraction
    val: LandmarkData
    test: LandmarkData


def semi_supervised(train: LandmarkData, cfg: Config) -> LandmarkData:
    """Keep the landmarks of a class-balanced ``labelled_pct`` % of ``train`` (none for variants without L)."""
    n = len(train)
    if "L" not in variant_terms(cfg.loss.variant):
        return train.without_landmarks(torch.zeros(n, dtype=torch.bool))
    classes = next((v for k, v in train.attributes.items() if train.kinds[k] == "class"), None)
    keep = labelled_subset(classes, n, cfg.data.labelled_pct, cfg.train.seed)
    return train.without_landmarks(keep & train.landmark_mask.any(-1))


def selection_score(metrics: dict, cfg: Config) -> float:
    """What picks ``best.ckpt`` (lower is better): the validation landmark error in pixels, or, where
    landmarks are evaluation-only (Shapes), the validation classification error (1 - mean accuracy)."""
    from sslandmarks.data.sources import hidden_landmarks

    if hidden_landmarks(cfg):
        acc = list(metrics.get("attribute_accuracy", {}).values())
        return 1.0 - sum(acc) / len(acc) if acc else math.inf
    return metrics["mean_error_px"]


def rank_transforms(n: int, rows: Tensor, ranges: AffineRanges, size: tuple[int, int],
                    seed: int) -> tuple[Tensor, Tensor]:
    """One transform ``(3, 3)`` and mirror flag per row of the global batch (``n`` rows) from ``seed``,
    of which this rank takes ``rows``: every rank, and a resumed run, draws the same ones."""
    t, flipped = sample_affine(n, ranges, size, torch.Generator().manual_seed(seed))
    return t[rows], flipped[rows]


def _schedule(cfg: Config):
    steps, warm = cfg.train.steps, cfg.train.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


def _start_log(path: Path, columns: list[str], resume_step: int | None) -> None:
    """New log, or on resume keep only the rows up to the checkpoint's step (later ones are redone)."""
    rows = []
    if resume_step is not None and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f)][1:]
        rows = [r for r in rows if r and r[0].isdigit() and int(r[0]) <= resume_step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *rows])


def init_weights(model: nn.Module, source: str, verbose: bool = True) -> list[str]:
    """Copy into ``model`` every tensor of ``source`` (a checkpoint path or a bundled model name) whose
    name and shape match; returns the names left at their fresh initialisation (reported on stderr)."""
    from sslandmarks.pretrained import PRETRAINED, pretrained_path

    path = pretrained_path(source) if source in PRETRAINED else source
    if not Path(path).is_file():
        raise UserError(f"train.init={source!r} is neither a checkpoint file nor a bundled model name "
                        "(`sslandmarks models` lists them)")
    theirs = load_checkpoint(path)["model"]
    ours = model.state_dict()
    keep = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    if all(k.endswith("num_batches_tracked") for k in keep):
        raise UserError(f"train.init={source!r}: none of its weights fit this config's model "
                        "(a different architecture or width)")
    model.load_state_dict(keep, strict=False)
    fresh = [k for k in ours if k not in keep]
    if verbose:
        extra = f"; fresh: {', '.join(fresh[:4])}{' ...' if len(fresh) > 4 else ''}" if fresh else ""
        print(f"init: {len(keep)} of {len(ours)} tensors from {path}{extra}", file=sys.stderr)
    return fresh


def fit(
    cfg: Config,
    splits: Splits,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    devices: int = 1,
    num_nodes: int = 1,
) -> tuple[dict, nn.Module]:
    """Train ``cfg`` on ``splits`` into ``out``. Returns the final metrics (also written to
    ``metrics.json``; empty on ranks other than 0) and the trained model (best checkpoint on rank 0)."""
    from lightning.fabric import Fabric

    from sslandmarks.data.sources import flip_permutation
    from sslandmarks.evaluate import evaluate_data, mirror_perm
    from sslandmarks.outputs import ensure_writable_dir, write_json
    from sslandmarks.viz import save_figures

    tc, out = cfg.train, Path(out)
    ckpt_dir, last = out / "checkpoints", out / "checkpoints" / "last.ckpt"
    accelerator = "auto" if tc.device == "auto" else tc.device
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                    precision=tc.precision)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    for name in ("batch_labelled", "batch_unlabelled"):
        if getattr(tc, name) % world:
            raise UserError(f"train.{name}={getattr(tc, name)} is not divisible by the {world} processes")
    # every rank checks (so that all stop together); only rank 0 writes
    if resume and not last.is_file():
        raise UserError(f"--resume: {last} does not exist; start without --resume")
    if not resume and last.is_file():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose a new --out")
    if rank == 0:
        ensure_writable_dir(out)
        save_config(cfg, out / "config.yaml")
    fabric.barrier()

    torch.manual_seed(tc.seed + rank)
    model = build_model(cfg.model)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    start, best = 0, math.inf
    if resume:
        state = load_checkpoint(last)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise UserError(f"{last} does not fit this config's model ({str(e).splitlines()[0][:120]}); "
                            "resume with the run's own config.yaml") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["step"], state["best_val_score"]
        rng = state["rng"]
        if rng.shape[0] == world:
            torch.set_rng_state(rng[rank].clone())
    elif tc.init:
        init_weights(model, tc.init, verbose=rank == 0)
    model, optimizer = fabric.setup(model, optimizer)
    device = fabric.device

    train = semi_supervised(splits.train, cfg).to(device)
    val = splits.val.to(device)
    terms = variant_terms(cfg.loss.variant)
    labelled = train.landmark_mask.any(-1).cpu()
    lab_idx, unl_idx = torch.nonzero(labelled)[:, 0], torch.nonzero(~labelled)[:, 0]
    if "L" in terms and len(lab_idx) == 0:
        raise UserError("no training image keeps its landmarks: raise data.labelled_pct")
    streams = [IndexStream(lab_idx, tc.batch_labelled if "L" in terms else 0, tc.seed)]
    streams.append(IndexStream(unl_idx, tc.batch_unlabelled if terms & {"A", "ELT"} else 0, tc.seed + 1))
    steps_per_epoch = max(math.ceil(len(s) / s.batch) for s in streams if s.batch and len(s))
    elt_ranges = AffineRanges(cfg.loss.elt_rotation_deg, cfg.loss.elt_scale, cfg.loss.elt_translate)
    d = cfg.data
    aug_ranges = AffineRanges(d.augment_rotation_deg, d.augment_scale, d.augment_translate * max(cfg.model.input_size),
                              d.augment_flip)
    flip_perm = flip_permutation(cfg, "data.augment_flip") if d.augment_flip > 0 else None
    mirror_perm(cfg)  # a data.test_flip without a flip permutation fails now, not at the first validation
    use_aug = aug_ranges != AffineRanges()
    use_elt = "ELT" in terms and cfg.loss.alpha > 0

    columns = ["step", "lr", *LOG_TERMS, *[f"attribute/{k}" for k in train.kinds], "val_score", "seconds"]
    if rank == 0:
        _start_log(out / "log.csv", columns, start if resume else None)
    sums: dict[str, Tensor] = {}
    count, t0 = 0, time.time()

    def checkpoint(step: int, path: Path) -> None:
        rng = fabric.all_gather(torch.get_rng_state()).reshape(world, -1).cpu()
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "best_val_score": best, "config": to_dict(cfg), "rng": rng,
        }
        if rank == 0:
            save_checkpoint(path, state)
        fabric.barrier()

    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, desc=f"train {cfg.loss.variant}",
               disable=not progress or rank != 0, dynamic_ncols=True)
    for step in bar:
        model.train()
        parts = [s.batch_at(step) for s in streams]
        global_idx = torch.cat(parts)  # labelled rows, then unlabelled ones
        # this rank's share: every world-th row of each stream (as rows of the global batch)
        ends = torch.tensor([len(p) for p in parts]).cumsum(0).tolist()
        rows = torch.cat([torch.arange(a, b)[rank::world] for a, b in zip([0, *ends[:-1]], ends)])
        batch = train.subset(global_idx[rows].to(device))
        size, seed = cfg.model.input_size, tc.seed * 1_000_003 + step
        if use_aug:  # fresh jitter every step
            batch = augment(batch, *rank_transforms(len(global_idx), rows, aug_ranges, size, seed + 7919 * tc.steps),
                            flip_perm)
        transforms = rank_transforms(len(global_idx), rows, elt_ranges, size, seed)[0] if use_elt else None
        losses = compute_losses(model, batch, cfg.loss, transforms, tc.channels_last)
        loss = total_loss(losses, cfg.loss)
        finite = fabric.all_reduce(torch.isfinite(loss).float(), reduce_op="min")
        if finite.item() < 1:
            bad = [k for k, v in losses.items() if not torch.isfinite(v)] or ["total"]
            checkpoint(step, last)  # the parameters are still those of the last good step
            raise NonFiniteLoss(f"non-finite loss term {bad[0]!r} at step {step + 1}; saved the last good state "
                                f"(step {step}) to {last}; lower train.lr and continue with --resume")
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        scheduler.step()
        for k, v in {"total": loss, **losses}.items():
            sums[k] = sums.get(k, 0.0) + v.detach()
        count += 1
        done = step + 1
        score = None
        if done % tc.eval_every == 0 or done == tc.steps:
            score = selection_score(evaluate_data(model, val, cfg), cfg)
            if score < best or not math.isfinite(best):
                best = score
                checkpoint(done, ckpt_dir / "best.ckpt")
        if done % tc.log_every == 0 or score is not None:
            means = {k: float(fabric.all_reduce(v / count, reduce_op="mean")) for k, v in sums.items()}
            row = {"step": done, "lr": scheduler.get_last_lr()[0], **means, "seconds": round(time.time() - t0, 2)}
            row["val_score"] = "" if score is None else score
            if rank == 0:
                with open(out / "log.csv", "a", newline="") as f:
                    csv.writer(f).writerow([row.get(c, "") for c in columns])
            bar.set_postfix(loss=f"{means['total']:.3g}", val=f"{best:.3f}" if math.isfinite(best) else "-")
            sums, count = {}, 0
        if done % tc.checkpoint_every == 0 or done % steps_per_epoch == 0 or done == tc.steps:
            checkpoint(done, last)
    bar.close()

    if rank != 0:
        return {}, model
    model.load_state_dict(load_checkpoint(ckpt_dir / "best.ckpt")["model"])
    metrics = {"val": evaluate_data(model, val, cfg), "test": evaluate_data(model, splits.test.to(device), cfg)}
    metrics = {**metrics["test"], **metrics, "best_val_score": best, "steps": tc.steps}
    write_json(metrics, out / "metrics.json")
    save_figures(model, splits.test, cfg, out)
    return metrics, model
