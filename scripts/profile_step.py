"""Profile one training step per op (torch.profiler, self CPU time), float32 against bfloat16 autocast.

    python scripts/profile_step.py --config configs/300w_fast.yaml [--set key=value ...] [--steps 5] [--top 8]

The step is the one ``sslandmarks bench`` times (``sslandmarks.bench.train_step_fn``: random images of the
config's size, augmentation, ELT warp, losses, backward, Adam) with the config's batch sizes, on the CPU with
the current intra-op threads (set OMP_NUM_THREADS). Prints, per precision, the milliseconds of a whole step
and the top ops by self CPU time with their share of the step.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from sslandmarks.bench import train_step_fn
from sslandmarks.config import load_config


def profile_step(cfg, bf16: bool, steps: int, top: int) -> None:
    bl, bu = cfg.train.batch_labelled, cfg.train.batch_unlabelled
    _, step = train_step_fn(cfg, torch.device("cpu"), bl, bu, bf16=bf16)
    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_step = (time.perf_counter() - t0) / steps * 1e3
    ops = prof.key_averages()
    rows = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    total = sum(e.self_cpu_time_total for e in ops)
    print(f"\n{'bfloat16 autocast' if bf16 else 'float32'}: {per_step:.0f} ms per step (profiled, {steps} steps, "
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
    for bf16 in (False, True):
        profile_step(cfg, bf16, args.steps, args.top)


if __name__ == "__main__":
    main()
