"""One readable training loop: ``compute_losses`` gives named terms, ``fit`` sums them (Eq. 2).

A step draws ``batch_labelled`` images that keep their landmarks and ``batch_unlabelled`` that keep
only their attributes (global batch sizes), so every step sees labelled images even at 1 %. ELT warps
the chosen images with random affines ``T`` and compares ``L(T I)`` with ``T L(I)`` in one network pass.

Everything random in a step is a function of ``(seed, step)`` (batches and transforms) or is saved in
the checkpoint (the torch RNG, for dropout), so a resumed run continues exactly like an uninterrupted
one. Lightning Fabric owns devices, precision and DDP: with ``world`` processes, rank ``r`` takes rows
``r, r + world, ...`` of every global batch, BatchNorm statistics are those of the global batch
(:mod:`~sslandmarks.models.syncbn`) and the ranks' gradients are averaged.

``fit`` reads top to bottom: set-up (:func:`check_run`, :func:`setup`, :class:`Batches`, :class:`TrainLog`),
then per step :func:`train_step`, validation, logging and :func:`save_state`, then :func:`finish`.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from sslandmarks.checkpoint import init_weights, load_checkpoint, save_checkpoint
from sslandmarks.config import Config, LossConfig, config_diff, read_saved_config, save_config, to_dict, variant_terms
from sslandmarks.coords import inside_image
from sslandmarks.data.augment import augment
from sslandmarks.data.dataset import LandmarkData, Splits, to_input
from sslandmarks.data.mix import mix_sources
from sslandmarks.data.sources import hidden_landmarks
from sslandmarks.data.splits import IndexStream, semi_supervised
from sslandmarks.errors import UserError
from sslandmarks.fftconv import MIN_STEPS, choose_convolutions, set_fft
from sslandmarks.geometry import AffineRanges, apply_points, sample_affine, sample_box_jitter, warp_images
from sslandmarks.hardware import machine
from sslandmarks.inference import evaluate_data, predict_all, predict_maps
from sslandmarks.losses import (
    attribute_losses,
    combine,
    elt_loss,
    heatmap_ce_loss,
    l2_penalty,
    landmark_loss,
    mapped_landmark_loss,
)
from sslandmarks.models import build_model, check_config, model_entry, sync_batchnorm
from sslandmarks.outputs import RunDirBusy, busy_message, locked_run_dir, run_dir_busy, write_json
from sslandmarks.specs import flip_permutation, mirror_perm
from sslandmarks.viz import prediction_grid, shapes_figure

# what a resumed run may change (the new values are applied from the checkpoint's step on, and recorded in
# config.yaml): how long it trains, how often it evaluates, logs and saves, and its arithmetic (a run started
# in bfloat16 on a GPU or an AMX CPU may go on elsewhere, and its convolution algorithm); anything else is refused
RESUME_MAY_CHANGE = ("train.steps", "train.eval_every", "train.log_every", "train.checkpoint_every", "train.precision",
                     "train.conv")
LOG_TERMS = ("total", "landmark", "attribute", "elt", "l2")
FIGURE_IMAGES = 12  # the first test images, drawn in predictions.png
PREDICTIONS = "test_predictions.json"  # their predicted landmarks (K, 2) each, in input pixels


class NonFiniteLoss(FloatingPointError):
    """Training produced NaN or inf; the last good state was saved before raising."""


def compute_losses(
    model: nn.Module,
    batch: LandmarkData,
    loss_cfg: LossConfig,
    landmark_loss_kind: str,
    transforms: Tensor | None = None,
    channels_last: bool = False,
) -> dict[str, Tensor]:
    """Unweighted loss terms of Eq. 2 for one batch.

    Images whose landmarks are all NaN count as unlabelled; rows of a batch mixed from several sources
    (``batch.source``) are compared in their own layouts (:func:`mapped_landmark_loss`).
    ``landmark_loss_kind`` is the model's (``MODELS[name].landmark_loss``: ``"l2"`` or ``"heatmap_ce"``).
    ``transforms (B, 3, 3)`` holds one ELT transform per row of the batch (only the rows ELT applies to are
    used). Returns ``landmark``, ``attribute`` (sum over heads) and ``attribute/<head>``, ``elt`` and ``l2``
    as the variant asks.
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
    if "L" in terms and landmark_loss_kind == "heatmap_ce":
        losses["landmark"] = heatmap_ce_loss(out.heatmaps[:n], batch.landmarks, batch.landmark_mask)
    elif "L" in terms and batch.source is not None:
        lay, src = batch.layouts, batch.source
        maps, weights = lay.maps[src], lay.weights[src]
        losses["landmark"] = mapped_landmark_loss(pred, batch.landmarks, maps, weights, loss_cfg.distance)
    elif "L" in terms:
        losses["landmark"] = landmark_loss(pred, batch.landmarks, batch.landmark_mask, loss_cfg.distance)
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


def selection_score(metrics: dict, cfg: Config) -> float:
    """What picks ``best.ckpt`` (lower is better): the validation landmark error in pixels, or, where
    landmarks are evaluation-only (Shapes), the validation classification error (1 - mean accuracy)."""
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


def lr_factor(cfg: Config):
    """The learning-rate multiplier of step ``i``: linear warm-up, then constant or a cosine to zero."""
    steps, warm = cfg.train.steps, cfg.train.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


# ----------------------------------------------------------------------------- set-up


def check_run(cfg: Config, out: str | Path, resume: bool) -> None:
    """Refuse, before any work, what would fail later: what the model cannot do (ELT on an arg-max
    model, keys it ignores), mirroring without a flip permutation, and a run folder that does not fit
    ``resume`` (a fresh run never overwrites one)."""
    check_config(cfg)
    if cfg.data.augment_flip > 0:
        flip_permutation(cfg.data.spec, "data.augment_flip")
        for i, source in enumerate(cfg.data.extra_sources):
            flip_permutation(source.spec or cfg.data.spec, f"data.augment_flip (for data.extra_sources[{i}])")
    mirror_perm(cfg.data.spec, cfg.data.test_flip)
    if run_dir_busy(out):  # first: whatever the folder holds, another process is writing it right now
        raise RunDirBusy(busy_message(out))
    last, saved = Path(out) / "checkpoints" / "last.ckpt", Path(out) / "config.yaml"
    if resume and not last.is_file():
        raise UserError(f"--resume: {last} does not exist; start without --resume")
    if not resume and last.is_file():
        raise UserError(f"{out} already holds a run: pass --resume to continue it, or choose a new --out")
    diff = config_diff(read_saved_config(saved), cfg) if resume and saved.is_file() else []
    refused = [d for d in diff if d.split(" ")[0] not in RESUME_MAY_CHANGE]
    if refused:  # config.yaml must always say what ran
        raise UserError(f"--resume: the config differs from {saved}: {', '.join(refused[:5])}"
                        f"{' ...' if len(refused) > 5 else ''}; resume with --config {saved}, or start a new --out")
    if diff:
        print(f"--resume: applying {', '.join(diff)} from here on (recorded in {saved})", file=sys.stderr)


@dataclass
class Run:
    """The state of one training run: what a checkpoint saves, plus where it goes."""

    cfg: Config
    out: Path
    fabric: Any  # lightning.fabric.Fabric
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    start: int = 0  # steps already done (resume)
    best: float = math.inf  # best validation score so far
    ema: AveragedModel | None = None  # the moving average of the weights (train.ema > 0)
    fft_layers: tuple[str, ...] = ()  # the convolutions that train through the FFT (train.conv)

    @property
    def scored(self) -> nn.Module:
        """The weights that validation scores and the checkpoints' ``model`` holds: the average when on."""
        return self.model if self.ema is None else self.ema.module

    @property
    def last(self) -> Path:
        return self.out / "checkpoints" / "last.ckpt"

    @property
    def rank(self) -> int:
        return self.fabric.global_rank


def resolve_precision(precision: str, device: str = "auto") -> str:
    """``auto`` -> ``bf16-mixed`` where bfloat16 is native (CUDA with bf16, or a CPU with AMX-BF16 that
    oneDNN may use, where the convolutions run ~2-4x faster), else ``32-true``; other values are returned
    as they are. ``ONEDNN_MAX_CPU_ISA`` below AMX (e.g. ``AVX2``, to run as on an AVX2 CPU) means float32."""
    if precision != "auto":
        return precision
    if device != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_bf16_native() else "32-true"


def cpu_bf16_native() -> bool:
    """Whether oneDNN may multiply bfloat16 natively on this CPU (AMX-BF16, not capped by ``ONEDNN_MAX_CPU_ISA``).
    Elsewhere bfloat16 convolutions are emulated: on a 2-core AVX2 EPYC a Blocks step took 20x float32's time."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return amx and ("AMX" in isa or isa in ("ALL", "DEFAULT")) and torch.backends.mkldnn.is_available()


def launch(cfg: Config, devices: int, num_nodes: int):
    """Start Lightning Fabric (DDP when there is more than one process) and check the batch split."""
    from lightning.fabric import Fabric  # slow to import: only when training

    tc = cfg.train
    strategy = "ddp" if devices * num_nodes > 1 else "auto"
    fabric = Fabric(accelerator="auto" if tc.device == "auto" else tc.device, devices=devices, num_nodes=num_nodes,
                    strategy=strategy, precision=resolve_precision(tc.precision, tc.device))
    fabric.launch()
    slow_bf16 = tc.precision == "bf16-mixed" and fabric.device.type == "cpu" and not cpu_bf16_native()
    if slow_bf16 and fabric.global_rank == 0:
        print("train.precision=bf16-mixed on a CPU without AMX-BF16: bfloat16 is emulated here, many times slower "
              "than float32; train.precision=auto picks float32 on such a CPU", file=sys.stderr)
    sizes = {f"train.{k}": getattr(tc, k) for k in ("batch_labelled", "batch_unlabelled")}
    sizes.update({f"data.extra_sources[{i}].batch": s.batch for i, s in enumerate(cfg.data.extra_sources)})
    for name, size in sizes.items():
        if size % fabric.world_size:
            raise UserError(f"{name}={size} is not divisible by the {fabric.world_size} processes")
    return fabric


def ema_update(decay: float):
    """``AveragedModel``'s update of every tensor group (one device and dtype): ``avg += (1 - d)(w - avg)``
    with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates; integer buffers (BatchNorm's batch
    count) are copied."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], n: Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        torch._foreach_lerp_(averaged, current, 1 - d)

    return update


def setup(cfg: Config, out: Path, resume: bool, fabric) -> Run:
    """The run folder (rank 0 writes ``config.yaml``), the model (its BatchNorm synchronised when there are
    several processes), Adam and the schedule: fresh, from ``train.init`` weights, or from ``last.ckpt``."""
    tc, rank, world = cfg.train, fabric.global_rank, fabric.world_size
    if rank == 0:  # every rank checked the folder (check_run), so that all stop together; only rank 0 writes
        save_config(cfg, out / "config.yaml")
    fabric.barrier()
    torch.manual_seed(tc.seed + rank)
    model = build_model(cfg.model)
    if world > 1:
        model = sync_batchnorm(model, cpu=fabric.device.type == "cpu")
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    run = Run(cfg, out, fabric, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg)))
    state = load_checkpoint(run.last) if resume else None
    if state is not None:
        try:
            model.load_state_dict(state.get("train_model", state["model"]))
        except RuntimeError as e:
            raise UserError(f"{run.last} does not fit this config's model ({str(e).splitlines()[0][:120]}); "
                            "resume with the run's own config.yaml") from None
        optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.start, run.best = state["step"], state["best_val_score"]
        if state["rng"].shape[0] == world:  # dropout continues as it would have
            torch.set_rng_state(state["rng"][rank].clone())
    elif tc.init:
        init_weights(model, tc.init, verbose=rank == 0)
    run.fft_layers = conv_algorithms(cfg, model, fabric, None if state is None else state.get("fft_layers"))
    if tc.ema > 0:  # from the weights training starts with (fresh, fine-tuned or resumed)
        run.ema = AveragedModel(model, multi_avg_fn=ema_update(tc.ema), use_buffers=True).eval()
        if state is not None:
            run.ema.module.load_state_dict(state["model"])
            run.ema.n_averaged.fill_(state["ema_updates"])
        run.ema = run.ema.to(fabric.device)
    run.model, run.optimizer = fabric.setup(model, optimizer)
    return run


def network_passes(cfg: Config, bl: int, bu: int) -> int:
    """Images through the network per step: each of ``bl + bu`` once, plus a warped copy of every image ELT
    applies to (the unlabelled ones, or all of them with ``loss.elt_on: all``, as on 300-W)."""
    if "ELT" not in cfg.loss.variant.split("+"):
        return bl + bu
    return 2 * (bl + bu) if cfg.loss.elt_on == "all" else bl + 2 * bu


def pass_size(cfg: Config, world: int = 1) -> int:
    """Images in one training pass of the network on each of ``world`` processes: the labelled (with the extra
    sources') and unlabelled rows the variant draws, and the warped copies ELT adds (:func:`network_passes`)."""
    terms, tc = variant_terms(cfg.loss.variant), cfg.train
    bl = (tc.batch_labelled if "L" in terms else 0) + sum(s.batch for s in cfg.data.extra_sources)
    return max(1, network_passes(cfg, bl, tc.batch_unlabelled if terms & {"A", "ELT"} else 0) // world)


def conv_algorithms(cfg: Config, model: nn.Module, fabric, saved: list[str] | None = None) -> tuple[str, ...]:
    """Set how ``model``'s large-kernel convolutions train (``train.conv``; ``auto`` times both algorithms only on
    a CPU in float32 for runs of at least ``fftconv.MIN_STEPS`` steps, elsewhere it keeps the direct convolution)
    and return the names of those that go through the FFT. Timed at the size of a training pass
    (:func:`pass_size`): which algorithm wins depends on it (on a 2-core AVX2 EPYC a 9x9x16 layer at 64x64 was
    faster directly for 8 images, through the FFT for 48).
    ``saved``: the choice a resumed checkpoint recorded, which ``auto`` keeps, so the run goes on as it began."""
    mode = cfg.train.conv
    if mode == "auto" and saved is not None:
        set_fft(model, saved)
        return tuple(saved)
    if mode == "auto" and (fabric.device.type != "cpu" or cfg.train.steps < MIN_STEPS
                           or resolve_precision(cfg.train.precision, "cpu") != "32-true"):
        mode = "direct"
    example = torch.zeros(pass_size(cfg, fabric.world_size), cfg.model.in_channels, *cfg.model.input_size,
                          device=fabric.device)
    if cfg.train.channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    names = choose_convolutions(model, example, mode)[0]
    if fabric.world_size > 1:  # every process trains alike: rank 0's timing decides
        names = fabric.broadcast(names, src=0)
        set_fft(model, names)
    return tuple(names)


class Batches:
    """This rank's rows of every step's global batch: labelled and unlabelled index streams of the main data
    and one stream per extra source (``data.extra_sources[i].batch`` rows each), random augmentation and
    detector-box jitter (fresh each step) and the ELT transforms, all functions of ``(seed, step)``."""

    def __init__(self, train: LandmarkData, cfg: Config, rank: int, world: int) -> None:
        tc, d, terms = cfg.train, cfg.data, variant_terms(cfg.loss.variant)
        labelled = train.landmark_mask.any(-1).cpu()
        source = torch.zeros_like(labelled, dtype=torch.long) if train.source is None else train.source.cpu()
        lab_idx, unl_idx = torch.nonzero(labelled & (source == 0))[:, 0], torch.nonzero(~labelled & (source == 0))[:, 0]
        if "L" in terms and len(lab_idx) == 0:
            raise UserError("no training image keeps its landmarks: raise data.labelled_pct")
        if "ELT" in terms and cfg.loss.alpha > 0 and cfg.loss.elt_on == "unlabelled" and bool(labelled.all()):
            raise UserError(f"loss.variant={cfg.loss.variant} warps images without landmarks "
                            f"(loss.elt_on=unlabelled), but data.labelled_pct={cfg.data.labelled_pct:g} leaves none: "
                            "lower data.labelled_pct, or set loss.elt_on=all")
        self.streams = [IndexStream(lab_idx, tc.batch_labelled if "L" in terms else 0, tc.seed),
                        IndexStream(unl_idx, tc.batch_unlabelled if terms & {"A", "ELT"} else 0, tc.seed + 1)]
        self.streams += [IndexStream(torch.nonzero(source == i + 1)[:, 0], s.batch, tc.seed + 2 + i)
                         for i, s in enumerate(d.extra_sources)]
        self.steps_per_epoch = max(math.ceil(len(s) / s.batch) for s in self.streams if s.batch and len(s))
        self.elt = AffineRanges(cfg.loss.elt_rotation_deg, cfg.loss.elt_scale, cfg.loss.elt_translate)
        self.aug = AffineRanges(d.augment_rotation_deg, d.augment_scale,
                                d.augment_translate * max(cfg.model.input_size), d.augment_flip)
        self.jitter = d.box_jitter if max(*d.box_jitter.shift, d.box_jitter.scale) > 0 else None
        self.flip_perm = flip_permutation(d.spec, "data.augment_flip") if d.augment_flip > 0 else None
        self.use_elt = "ELT" in terms and cfg.loss.alpha > 0
        self.train, self.cfg, self.rank, self.world = train, cfg, rank, world

    def at(self, step: int) -> tuple[LandmarkData, Tensor | None]:
        """Step ``step``'s batch (this rank's rows, augmented) and its ELT transforms ``(B, 3, 3)`` (or None)."""
        parts = [s.batch_at(step) for s in self.streams]
        global_idx = torch.cat(parts)  # labelled rows, then unlabelled ones, then each extra source's
        # this rank's share: every world-th row of each stream (as rows of the global batch)
        ends = torch.tensor([len(p) for p in parts]).cumsum(0).tolist()
        rows = torch.cat([torch.arange(a, b)[self.rank::self.world] for a, b in zip([0, *ends[:-1]], ends)])
        batch = self.train.subset(global_idx[rows].to(self.train.images.device))
        n, size = len(global_idx), self.cfg.model.input_size
        seed = self.cfg.train.seed * 1_000_003 + step
        if self.aug != AffineRanges() or self.jitter is not None:  # fresh jitter every step
            t, flipped = rank_transforms(n, rows, self.aug, size, seed + 7919 * self.cfg.train.steps)
            if self.jitter is not None:  # the crop from a detector-like box first, then the augmentation
                t = t @ self.box_jitter(n, seed + 104_729 * self.cfg.train.steps)[rows]
            perm = self.flip_perm
            if perm is not None and batch.source is not None:  # each row's own layout
                perm = batch.layouts.flips[batch.source]
            batch = augment(batch, t, flipped, perm)
        return batch, rank_transforms(n, rows, self.elt, size, seed)[0] if self.use_elt else None

    def box_jitter(self, n: int, seed: int) -> Tensor:
        """``(n, 3, 3)`` re-crops of the global batch as from detector boxes (``data.box_jitter``), as fractions
        of the landmark box side, which a crop of ``data.crop_margin`` makes ``min(H, W) / (1 + 2 margin)``."""
        d, size = self.cfg.data, self.cfg.model.input_size
        side = min(size) / (1 + 2 * d.crop_margin)
        return sample_box_jitter(n, d.box_jitter.shift, d.box_jitter.scale, side, size,
                                 torch.Generator().manual_seed(seed))


class TrainLog:
    """``log.csv``: every ``log_every`` steps (and at each validation) the mean of every loss term since the
    previous row, over all ranks, with the learning rate, the validation score, the elapsed wall-clock
    ``seconds`` and ``cpu_seconds`` (this process's CPU time, all its threads; a suspended run does not count)."""

    def __init__(self, run: Run, heads: list[str]) -> None:
        self.path, self.fabric, self.rank = run.out / "log.csv", run.fabric, run.rank
        self.columns = ["step", "lr", *LOG_TERMS, *[f"attribute/{k}" for k in heads], "val_score", "val_nme",
                        "seconds", "cpu_seconds"]
        self.sums: dict[str, Tensor] = {}
        self.count, self.t0, self.cpu0 = 0, time.time(), time.process_time()
        if self.rank == 0:  # new, or on resume only the rows up to the checkpoint's step (later ones are redone)
            rows: list[dict] = []
            if run.start and self.path.is_file():
                with open(self.path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if (r.get("step") or "").isdigit()]
                rows = [r for r in rows if int(r["step"]) <= run.start]
            with open(self.path, "w", newline="") as f:  # by name: a log written before a column was added fits
                w = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            if rows and rows[-1].get("seconds"):  # ``seconds`` go on from where the kept rows end: a run's total
                self.t0 -= float(rows[-1]["seconds"])
            if rows and rows[-1].get("cpu_seconds"):
                self.cpu0 -= float(rows[-1]["cpu_seconds"])

    def add(self, losses: dict[str, Tensor]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach()
        self.count += 1

    def write(self, step: int, lr: float, score: float | None, nme: float | None = None) -> dict[str, float]:
        """Append a row (rank 0) and start new sums; returns the means, averaged over the ranks."""
        means = {k: float(self.fabric.all_reduce(v / self.count, reduce_op="mean")) for k, v in self.sums.items()}
        row = {"step": step, "lr": lr, **means, "seconds": round(time.time() - self.t0, 2),
               "cpu_seconds": round(time.process_time() - self.cpu0, 2)}
        row["val_score"] = "" if score is None else score
        row["val_nme"] = "" if nme is None else nme
        if self.rank == 0:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        self.sums, self.count = {}, 0
        return means


# ----------------------------------------------------------------------------- one step, checkpoints, the end


def save_state(run: Run, step: int, path: Path) -> None:
    """Checkpoint after ``step`` steps: weights, optimiser and schedule, the best score, the full config and
    every rank's RNG state (gathered from all ranks; rank 0 writes, atomically)."""
    world = run.fabric.world_size
    rng = run.fabric.all_gather(torch.get_rng_state()).reshape(world, -1).cpu()
    state = {
        "model": run.scored.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "step": step, "best_val_score": run.best,
        "config": to_dict(run.cfg), "rng": rng, "fft_layers": list(run.fft_layers),
    }
    if run.ema is not None:  # the trained weights too, to resume; "model" is the average
        state.update(train_model=run.model.state_dict(), ema_updates=int(run.ema.n_averaged))
    if run.rank == 0:
        save_checkpoint(path, state)
    run.fabric.barrier()


def train_step(run: Run, batch: LandmarkData, transforms: Tensor | None, step: int) -> dict[str, Tensor]:
    """Forward, Eq. 2, backward and one Adam step; returns the loss terms and their weighted ``total``.
    A non-finite total on any rank stops every rank, after saving the last good state."""
    cfg = run.cfg
    run.model.train()
    kind = model_entry(cfg.model.name).landmark_loss
    losses = compute_losses(run.model, batch, cfg.loss, kind, transforms, cfg.train.channels_last)
    loss = total_loss(losses, cfg.loss)
    if run.fabric.all_reduce(torch.isfinite(loss).float(), reduce_op="min").item() < 1:
        bad = [k for k, v in losses.items() if not torch.isfinite(v)] or ["total"]
        save_state(run, step, run.last)  # the parameters are still those of the last good step
        raise NonFiniteLoss(f"non-finite loss term {bad[0]!r} at step {step + 1}; saved the last good state "
                            f"(step {step}) to {run.last}; lower train.lr and continue with --resume")
    run.optimizer.zero_grad(set_to_none=True)
    run.fabric.backward(loss)
    run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:  # from the module Fabric wraps, whose tensors are in the average's order
        run.ema.update_parameters(getattr(run.model, "module", run.model))
    return {"total": loss, **losses}


def finish(run: Run, splits: Splits, val: LandmarkData) -> dict:
    """On rank 0: the best checkpoint's validation and test metrics (``metrics.json``) and the figures
    (``predictions.png``; ``figure3.png`` where landmarks are hidden, as on Shapes)."""
    cfg, model, out = run.cfg, run.model, run.out
    model.load_state_dict(load_checkpoint(out / "checkpoints" / "best.ckpt")["model"])
    test = splits.test
    metrics = {"val": evaluate_data(model, val, cfg), "test": evaluate_data(model, test.to(run.fabric.device), cfg)}
    metrics = {**metrics["test"], **metrics, "best_val_score": run.best, "steps": cfg.train.steps,
               "precision": resolve_precision(cfg.train.precision, cfg.train.device), "machine": machine(),
               "fft_layers": list(run.fft_layers)}
    write_json(metrics, out / "metrics.json")
    pred, _ = predict_all(model, test.images[:FIGURE_IMAGES])  # as the model sees the image: no test-time mirroring
    prediction_grid(test.images[:FIGURE_IMAGES], test.landmarks[:FIGURE_IMAGES].cpu(), {"prediction": pred},
                    out / "predictions.png")
    # kept with the run's committed files, so that figures comparing runs need no checkpoint (git-ignored)
    write_json({"landmarks": torch.round(pred.float() * 1000).div(1000).tolist()}, out / PREDICTIONS)
    if hidden_landmarks(cfg):
        landmarks, probs = predict_maps(model, test.images[:8], cfg.model.beta)
        shapes_figure(test.images[:8], landmarks, probs, out / "figure3.png")
    return metrics


# ----------------------------------------------------------------------------- the loop


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
    out = Path(out)
    check_run(cfg, out, resume)  # on every rank, so that all stop together
    fabric = launch(cfg, devices, num_nodes)
    with locked_run_dir(out, enabled=fabric.global_rank == 0):  # two runs never mix their files in one folder
        return _train(setup(cfg, out, resume, fabric), splits, progress)


def _train(run: Run, splits: Splits, progress: bool) -> tuple[dict, nn.Module]:
    """The loop: a step, and every few steps validation (best checkpoint), a log row and ``last.ckpt``."""
    cfg, fabric, out = run.cfg, run.fabric, run.out
    tc = cfg.train
    train = mix_sources(semi_supervised(splits.train, cfg), splits.extra, cfg).to(fabric.device)
    val = splits.val.to(fabric.device)
    batches = Batches(train, cfg, run.rank, fabric.world_size)
    log = TrainLog(run, list(train.kinds))

    bar = tqdm(range(run.start, tc.steps), initial=run.start, total=tc.steps, desc=f"train {cfg.loss.variant}",
               disable=not progress or run.rank != 0, dynamic_ncols=True)
    for step in bar:
        log.add(train_step(run, *batches.at(step), step))
        done, score, nme = step + 1, None, None
        if done % tc.eval_every == 0 or done == tc.steps:
            with fabric.autocast():  # the average is not wrapped by Fabric: its precision, as for the model
                metrics = evaluate_data(run.scored, val, cfg)
            score, nme = selection_score(metrics, cfg), metrics.get("nme")
            if score < run.best or not math.isfinite(run.best):
                run.best = score
                save_state(run, done, out / "checkpoints" / "best.ckpt")
        if done % tc.log_every == 0 or score is not None:
            means = log.write(done, run.scheduler.get_last_lr()[0], score, nme)
            bar.set_postfix(loss=f"{means['total']:.3g}", val=f"{run.best:.3f}" if math.isfinite(run.best) else "-")
        if done % tc.checkpoint_every == 0 or done % batches.steps_per_epoch == 0 or done == tc.steps:
            save_state(run, done, run.last)
    bar.close()
    return (finish(run, splits, val) if run.rank == 0 else {}), run.model
