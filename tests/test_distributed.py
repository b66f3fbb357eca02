"""DDP through Lightning Fabric on CPU (gloo): what 2 processes compute, against 1 process.

The semantics (README, "Many GPUs"): each rank takes every world-th row of the global batch; BatchNorm
normalises by the statistics of the global batch (models/syncbn.py); every loss term is a mean over the
rank's rows and the ranks' gradients are averaged. With equal numbers of terms per rank (ddp_worker.py
arranges it) this is exactly the one-process computation, up to the order of floating-point sums.
"""

import subprocess
import sys

import pytest
import torch

from conftest import ENV, ROOT
from ddp_worker import OVERRIDES
from sslandmarks.config import load_config


def start_worker(out, devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), str(devices)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def reduction_order_bound() -> float:
    """How far 2 processes may leave 1 process in float64, from the computation alone (no machine in it).

    Each gradient entry is a sum of at most n = (images per step, ELT copies included) x H x W products;
    summed in another order (another split over ranks, other SIMD widths), it differs by at most about
    n * u times the sum of its terms' magnitudes (u = 2^-53; the terms are O(1): the losses are means).
    Adam's step is lr * m / (sqrt(v) + eps): a gradient error d moves it by at most lr * d / eps, the worst
    case being a parameter whose true gradient is 0 (each heatmap's bias: the spatial softmax ignores a
    constant shift, so Adam normalises pure rounding noise). Over k steps: k * lr * n * u / eps.
    Measured on this project's machine: 1.7e-7 for the heatmap biases, 2e-13 for every other parameter; per-rank
    BatchNorm statistics instead of global ones give 4e-3, and float32 2e-3 (the failure this test replaced)."""
    cfg = load_config(ROOT / "configs" / "blocks.yaml", OVERRIDES)
    t, (h, w) = cfg.train, cfg.model.input_size
    images = t.batch_labelled + 2 * t.batch_unlabelled  # ELT (on unlabelled rows) adds a warped copy of each
    adam_eps = torch.optim.Adam([torch.zeros(1)]).defaults["eps"]
    return t.steps * t.lr * images * h * w * 2.0**-53 / adam_eps


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_cpu_processes_hold_the_same_weights_as_one_process(tmp_path):
    two, one = start_worker(tmp_path / "ddp", 2), start_worker(tmp_path / "single", 1)
    finish(two)
    finish(one)
    r0, r1 = torch.load(tmp_path / "ddp" / "rank0.pt"), torch.load(tmp_path / "ddp" / "rank1.pt")
    single = torch.load(tmp_path / "single" / "rank0.pt")
    # the ranks apply the same all-reduced gradients to the same broadcast weights: bit for bit the same
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    assert r0["localizer.0.weight"].dtype == torch.float64
    bound = reduction_order_bound()
    assert bound < 1e-5  # the bound is tight enough to tell global from per-rank BatchNorm (4e-3)
    worst = max((float((r0[k] - single[k]).abs().max()), k) for k in single if single[k].is_floating_point())
    assert worst[0] <= bound, f"{worst[1]}: 2 processes differ from one process by {worst[0]:.3g} > {bound:.3g}"
    assert list(r0) == list(single)  # the synchronised BatchNorm keeps every name
    # only rank 0 wrote the run's files, and they are complete
    assert (tmp_path / "ddp" / "metrics.json").is_file() and (tmp_path / "ddp" / "checkpoints" / "best.ckpt").is_file()
    assert not list((tmp_path / "ddp").glob("**/.*.tmp*"))
