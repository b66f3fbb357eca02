"""Shared fixtures: a tiny Blocks config for fast end-to-end runs, and where the real data lives."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tiny_overrides() -> list[str]:
    """``--set`` items that make a Blocks run take seconds."""
    return [
        "data.n_train=96", "data.n_val=32", "data.n_test=32", "data.labelled_pct=25",
        "model.width=4", "model.depth=2", "model.kernel=5", "model.pointwise=[4]", "model.mlp_hidden=[16]",
        "train.batch_labelled=4", "train.batch_unlabelled=4", "train.eval_every=5", "train.log_every=5",
        "train.checkpoint_every=5",
    ]

