"""``sslandmarks bench``: training and inference speed of the paper's models against a measured ceiling.

Models: Seq-MT per Tables S7 (Blocks), S8 (hands), S9 (300W), and RCN+ (Fig. S3, 300W).

For each model: the end-to-end L+ELT+A training step (uint8 data resident on the device, batched
augmentation and ELT warps, losses, backward, Adam), inference, and the *ceiling*: forward+backward of
the same layers on random tensors for the same number of network passes (ELT passes each unlabelled
image twice). FLOPs come from torch's FlopCounterMode on one real step; the device peak is a measured
large matmul (bf16 on CUDA, float32 on CPU).
"""

from __future__ import annotations

import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sslandmarks.config import CONFIGS, Config, load_config, with_overrides
from sslandmarks.data.augment import augment
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.errors import UserError
from sslandmarks.geometry import AffineRanges, sample_affine
from sslandmarks.models import build_model, model_entry
from sslandmarks.train import compute_losses, network_passes, total_loss

# name -> (config file, overrides): Tables S7 (Blocks), S8 (hands), S9 (300W)
BENCH_MODELS = {
    "blocks-S7": ("blocks.yaml", {}),
    "hands-S8": ("hands.yaml", {}),
    "300w-S9": ("300w.yaml", {"loss": {"variant": "L+ELT"}}),
    "300w-RCN+": ("300w_rcn.yaml", {"loss": {"variant": "L+ELT"}}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, device: torch.device, min_seconds: float, warmup: int = 3) -> float:
    """Seconds per call of ``fn`` (median-free mean over at least ``min_seconds``)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n % 2 == 0:
            _sync(device)
            if time.perf_counter() - t0 >= min_seconds:
                return (time.perf_counter() - t0) / n


def matmul_peak_tflops(device: torch.device, seconds: float = 1.0) -> float:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _timeit(lambda: a @ b, device, seconds) / 1e12


def _fake_data(cfg: Config, n: int, device: torch.device) -> LandmarkData:
    g = torch.Generator().manual_seed(0)
    h, w = cfg.model.input_size
    images = torch.randint(0, 256, (n, cfg.model.in_channels, h, w), generator=g, dtype=torch.uint8)
    lms = torch.rand(n, cfg.model.num_landmarks, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    lms[n // 2 :] = float("nan")  # the second half is unlabelled
    attrs = {hd.name: torch.randint(0, hd.classes, (n,), generator=g) for hd in cfg.model.heads}
    return LandmarkData(images, lms, attrs, {hd.name: hd.kind for hd in cfg.model.heads}).to(device)


def train_step_fn(cfg: Config, device: torch.device, bl: int, bu: int, bf16: bool) -> tuple:
    """``(model, step)``: a channels-last model of ``cfg`` and a closure running one training step of ``bl``
    labelled + ``bu`` unlabelled images of random data (augmentation, ELT warp, losses, backward, Adam), in
    bfloat16 autocast when ``bf16``: what ``bench`` times and ``scripts/profile_step.py`` profiles."""
    kind = model_entry(cfg.model.name).landmark_loss
    model = build_model(cfg.model).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = _fake_data(cfg, 512, device)
    n = len(data)
    lab, unl = torch.arange(0, n // 2, device=device), torch.arange(n // 2, n, device=device)
    size = cfg.model.input_size
    elt = AffineRanges(cfg.loss.elt_rotation_deg, cfg.loss.elt_scale, cfg.loss.elt_translate)
    aug = AffineRanges(cfg.data.augment_rotation_deg, cfg.data.augment_scale, cfg.data.augment_translate * max(size))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    step_no = [0]

    def train_step() -> None:
        s = step_no[0] = step_no[0] + 1
        idx = torch.cat([lab[(s * bl + torch.arange(bl, device=device)) % len(lab)],
                         unl[(s * bu + torch.arange(bu, device=device)) % len(unl)]])
        batch_ = data.subset(idx)
        if aug != AffineRanges():
            batch_ = augment(batch_, sample_affine(bl + bu, aug, size, device=device)[0])
        with autocast:
            losses = compute_losses(model, batch_, cfg.loss, kind, sample_affine(bl + bu, elt, size, device=device)[0],
                                    channels_last=True)
            loss = total_loss(losses, cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, train_step


def bench_model(name: str, device: torch.device, seconds: float = 2.0, batch: tuple[int, int] | None = None,
                infer_batch: int = 256, warmup: int = 3) -> dict:
    """Measure one model; ``batch = (labelled, unlabelled)`` per step (default: the config's); ``warmup``
    untimed calls before each measurement."""
    file, extra = BENCH_MODELS[name]
    cfg = with_overrides(load_config(CONFIGS / file), extra)
    bl, bu = batch or (cfg.train.batch_labelled, cfg.train.batch_unlabelled)
    size = cfg.model.input_size
    cuda = device.type == "cuda"
    model, train_step = train_step_fn(cfg, device, bl, bu, bf16=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    passes = network_passes(cfg, bl, bu)
    ceiling_x = torch.rand(passes, cfg.model.in_channels, *size, device=device).contiguous(
        memory_format=torch.channels_last)
    def ceiling_step() -> None:  # the conv layers that make the maps
        with autocast:
            out = model.heatmaps(ceiling_x)
        out.float().mean().backward()

    infer_x = torch.rand(infer_batch, cfg.model.in_channels, *size, device=device)
    infer_x = infer_x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def infer_step() -> None:
        with autocast:
            model(infer_x)

    with FlopCounterMode(display=False) as counter:
        train_step()
    flops = counter.get_total_flops()
    model.train()
    t_train = _timeit(train_step, device, seconds, warmup)
    t_ceiling = _timeit(ceiling_step, device, seconds, warmup)
    model.eval()
    t_infer = _timeit(infer_step, device, seconds, warmup)
    return {
        "name": name, "input": list(size), "landmarks": cfg.model.num_landmarks, "variant": cfg.loss.variant,
        "batch_labelled": bl, "batch_unlabelled": bu, "network_passes_per_step": passes,
        "train_img_s": (bl + bu) / t_train, "ceiling_train_img_s": (bl + bu) / t_ceiling,
        "train_vs_ceiling": t_ceiling / t_train, "infer_img_s": infer_batch / t_infer,
        "gflop_per_step": flops / 1e9, "tflops": flops / t_train / 1e12,
    }


def run_bench(device: str = "auto", seconds: float = 2.0, models: list[str] | None = None) -> dict:
    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if device == "cuda" and dev.type != "cuda":
        raise UserError("--device cuda: CUDA is not available on this machine")
    peak = matmul_peak_tflops(dev)
    cpu = f"CPU {platform.processor() or platform.machine()}"
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu
    # On a CPU the 9x9x32/64 stacks of S8/S9 take seconds per image: smaller batches keep the bench short.
    small = dev.type == "cpu"
    results = [bench_model(m, dev, seconds, batch=(4, 4) if small and m != "blocks-S7" else None,
                           infer_batch=16 if small else 256) for m in (models or list(BENCH_MODELS))]
    for r in results:
        r["fraction_of_matmul_peak"] = r["tflops"] / peak
    return {"device": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "precision": "bf16-mixed" if dev.type == "cuda" else "float32", "matmul_peak_tflops": peak,
            "models": results}


def format_table(res: dict) -> str:
    lines = [f"{res['device']} ({res['precision']}, torch {res['torch']}); matmul peak "
             f"{res['matmul_peak_tflops']:.2f} TFLOP/s",
             f"{'model':<11}{'train img/s':>12}{'ceiling':>10}{'train/ceil':>11}{'infer img/s':>13}{'TFLOP/s':>9}"
             f"{'of peak':>9}"]
    for r in res["models"]:
        lines.append(f"{r['name']:<11}{r['train_img_s']:>12.1f}{r['ceiling_train_img_s']:>10.1f}"
                     f"{r['train_vs_ceiling']:>10.0%} {r['infer_img_s']:>12.1f}{r['tflops']:>9.3f}"
                     f"{r['fraction_of_matmul_peak']:>9.0%}")
    return "\n".join(lines)

