"""DDP through Lightning Fabric on CPU (gloo): 2 processes agree with each other and with 1 process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_worker(out: Path, devices: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), str(devices)],
                       capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_cpu_processes_match_each_other_and_one_process(tmp_path):
    run_worker(tmp_path / "ddp", 2)
    run_worker(tmp_path / "single", 1)
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt")
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt")
    one = torch.load(tmp_path / "single" / "rank0.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    moved = sum((one[k] - r0[k]).abs().max().item() for k in one)
    for k in one:
        assert torch.allclose(r0[k], one[k], atol=2e-4, rtol=1e-3), f"{k}: DDP differs from one process"
    assert moved < 1e-2
    # only rank 0 wrote the run's files, and they are complete
    assert (tmp_path / "ddp" / "metrics.json").is_file() and (tmp_path / "ddp" / "checkpoints" / "best.ckpt").is_file()
    assert not list((tmp_path / "ddp").glob("**/.*.tmp*"))
