"""The machine a computation ran on, as recorded beside results: CPU model, the instruction sets that decide
how fast (and in which arithmetic) training runs, cores, GPU and torch version. Read-only; no torch work."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags that matter to oneDNN


def machine() -> dict:
    """``{"cpu", "isa", "cores", "torch"}`` (+ ``"gpu"`` where CUDA is available): what a result records."""
    import torch

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    out = {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": os.cpu_count(),
           "torch": torch.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def describe(m: dict) -> str:
    """One line for a report: ``"CPU AMD EPYC (avx2), 2 cores"``, or the GPU's name."""
    if m.get("gpu"):
        return m["gpu"]
    isa = f" ({', '.join(m['isa'])})" if m.get("isa") else ""
    return f"CPU {m.get('cpu', '?')}{isa}, {m.get('cores', '?')} cores"
