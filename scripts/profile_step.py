"""Profile one training step per op (torch.profiler, self CPU time): float32 with direct convolutions, float32
with the large-kernel ones through the FFT (train.conv: fft), and bfloat16 autocast where the CPU multiplies
bfloat16 natively.

    python scripts/profile_step.py --config configs/300w_fast.yaml [--set key=value ...] [--steps 5] [--top 8]

The step is the one ``sslandmarks bench`` times (``sslandmarks.bench.train_step_fn``: random images of the
config's size, augmentation, ELT warp, losses, backward, Adam) with the config's batch sizes, on the CPU with
the current intra-op threads (set OMP_NUM_THREADS). Prints, per precision, the milliseconds of a whole step
and the top ops by self CPU time (over as many profiled steps) with their share of the step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sslandmarks.bench import train_step_fn
from sslandmarks.config import load_config
from sslandmarks.fftconv import fft_capable, set_fft
from sslandmarks.train import resolve_precision


def profile_step(cfg, bf16: bool, fft: bool, steps: int, top: int) -> None:
    bl, bu = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    model, step = train_step_fn(cfg, torch.device("cpu"), bl, bu, bf16=bf16)
    set_fft(model, [name for name, m in model.named_modules() if fft and fft_capable(m)])
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        step()
    times = []
    for _ in range(steps):  # unprofiled: the profiler's own cost grows with the number of ops
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = prof.key_averages()
    rows = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    total = sum(e.self_cpu_time_total for e in ops)
    kind = "bfloat16 autocast" if bf16 else "float32, FFT convolutions" if fft else "float32, direct convolutions"
    print(f"\n{kind}: {min(times):.0f} ms per step (best of {steps} unprofiled, median {statistics.median(times):.0f}; "
          f"{bl} + {bu} images, {torch.get_num_threads()} thread(s))")
    print(f"{'op':<44}{'calls/step':>11}{'ms/step':>9}{'share':>7}")
    for e in rows:
        print(f"{e.key[:43]:<44}{e.count / steps:>11.0f}{e.self_cpu_time_total / steps / 1e3:>9.1f}"
              f"{e.self_cpu_time_total / total:>7.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    native_bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"  # emulated elsewhere: ~20x slower, not profiled
    for bf16, fft in ((False, False), (False, True), (True, False))[: 3 if native_bf16 else 2]:
        profile_step(cfg, bf16, fft, args.steps, args.top)


if __name__ == "__main__":
    main()
