"""Shared helpers and fixtures: where the project and the real data live, a tiny Blocks config for fast
end-to-end runs, and running the command line in a fresh process.

Test files import the helpers with ``from conftest import ROOT, sets, ...`` (pytest puts ``tests/`` on
``sys.path``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]  # the project: configs/, src/, tests/
SHARED_DATA = ROOT.parent / "shared" / "data"  # the real datasets, beside the project (optional)
BLOCKS = str(ROOT / "configs" / "blocks.yaml")
# subprocesses run with the thread count of this process (set above), whatever the caller's OMP_NUM_THREADS:
# a run killed in a subprocess and resumed here must take the same arithmetic path to be bit-identical
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2"}

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (../shared/data)"
)


def sets(items: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [a for item in items for a in ("--set", item)]


def run_module(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m sslandmarks ARGS`` in a fresh process (exit code, stdout and stderr captured)."""
    return subprocess.run([sys.executable, "-m", "sslandmarks", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=ROOT)


TINY_OVERRIDES = (  # ``--set`` items that make a Blocks run take seconds
    "data.n_train=96", "data.n_val=32", "data.n_test=32", "data.labelled_pct=25",
    "model.width=4", "model.depth=2", "model.kernel=5", "model.pointwise=[4]", "model.mlp_hidden=[16]",
    "train.batch_labelled=4", "train.batch_unlabelled=4", "train.eval_every=5", "train.log_every=5",
    "train.checkpoint_every=5",
)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """``predict``/``evaluate`` in this process set torch's thread count (``--threads``, default 1); later tests
    (bit-exact resume, DDP bounds) must run with the count they expect."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_overrides() -> list[str]:
    """:data:`TINY_OVERRIDES` as a fresh list."""
    return list(TINY_OVERRIDES)


def tiny_face_checkpoint(path: Path, size: int = 32) -> Path:
    """An untrained 68-point face model (300-W layout, with its flip permutation; RCN+ at width 4 on ``size`` px
    crops), saved as a checkpoint at ``path``: seconds to export and time, no data needed."""
    from sslandmarks.checkpoint import save_checkpoint
    from sslandmarks.config import load_config, to_dict
    from sslandmarks.models import build_model

    cfg = load_config(ROOT / "configs" / "300w_fast.yaml",
                      ["model.width=4", "model.levels=2", f"model.input_size=[{size},{size}]"])
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg)})
    return path


def write_faces(folder: Path, n: int = 6, size: int = 48) -> Path:
    """``n`` random photos with 68 random landmarks each (iBUG ``.pts`` beside each image) in ``folder``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"f{i}.png")
        pts = rng.uniform(0.25 * size, 0.75 * size, (68, 2))
        body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)  # iBUG is 1-based
        (folder / f"f{i}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return folder
