"""Faults: a SIGKILLed run resumes to the same result, unsafe checkpoints are refused, NaN stops cleanly."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BLOCKS, ENV, ROOT, sets
from sslandmarks.cli import main
from sslandmarks.config import load_config
from sslandmarks.data.sources import load_splits


def train_args(out: Path, overrides: list[str]) -> list[str]:
    return ["train", "--config", BLOCKS, "--out", str(out), "--quiet", *sets(overrides)]


@pytest.mark.parametrize("ema", ["0", "0.9"])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_overrides, ema):
    overrides = tiny_overrides + ["train.steps=30", "train.device=cpu", f"train.ema={ema}"]
    assert main(train_args(tmp_path / "straight", overrides)) == 0
    expected = json.loads((tmp_path / "straight" / "metrics.json").read_text())

    out = tmp_path / "killed"
    # killed in the forward pass of step 18: the last checkpoint on disk is step 15's (every 5 steps)
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_worker.py"), "18", *train_args(out, overrides)],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["step"] == 15
    assert not list(out.glob("**/.*.tmp*"))  # no torn or stray temporary file
    assert main(train_args(out, overrides) + ["--resume"]) == 0
    got = json.loads((out / "metrics.json").read_text())
    assert got["test"] == expected["test"] and got["val"] == expected["val"]
    steps = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(5, 31, 5))  # no duplicated or missing rows after the resume
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("model", "train_model") if ema != "0" else ("model",):  # with train.ema: the average and the weights
        assert all(torch.equal(straight[key][k], resumed[key][k]) for k in straight[key])
    if ema != "0":
        assert resumed["ema_updates"] == 30
        assert not torch.equal(resumed["model"]["localizer.0.weight"], resumed["train_model"]["localizer.0.weight"])


class _Evil:
    def __reduce__(self):
        return (open, (f"/tmp/sslandmarks-pwned-{os.getpid()}", "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_with_pickled_objects_is_refused_and_nothing_runs(tmp_path, capsys):
    bad = tmp_path / "evil.ckpt"
    marker = Path(f"/tmp/sslandmarks-pwned-{os.getpid()}")
    marker.unlink(missing_ok=True)
    with open(bad, "wb") as f:
        pickle.dump({"model": _Evil(), "config": {}}, f)
    torch.save({"model": {}, "config": {}, "payload": _Evil()}, tmp_path / "evil2.ckpt")
    for path in (bad, tmp_path / "evil2.ckpt"):
        assert main(["evaluate", "--checkpoint", str(path), "--out", str(tmp_path / "e.json")]) == 2
        err = capsys.readouterr().err
        assert "not a loadable sslandmarks checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists(), "unpickling ran code"
    assert not (tmp_path / "e.json").exists()


def test_non_finite_loss_stops_with_term_and_step_and_saves_last_good_state(tmp_path, tiny_overrides, monkeypatch):
    import sslandmarks.train as train_mod

    real = train_mod.compute_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8:
            losses["elt"] = losses["elt"] * float("nan")
        return losses

    monkeypatch.setattr(train_mod, "compute_losses", poisoned)
    cfg = load_config(BLOCKS, tiny_overrides + ["train.steps=20", "train.checkpoint_every=100", "train.eval_every=100"])
    with pytest.raises(train_mod.NonFiniteLoss, match="'elt' at step 8"):
        train_mod.fit(cfg, load_splits(cfg), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["step"] == 7
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_exit_code_through_cli(tmp_path, tiny_overrides, capsys, monkeypatch):
    import sslandmarks.train as train_mod

    monkeypatch.setattr(train_mod, "total_loss", lambda losses, cfg: torch.tensor(float("inf"), requires_grad=True))
    assert main(train_args(tmp_path / "r", tiny_overrides + ["train.steps=5"])) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite loss" in err[0] and "--resume" in err[0]
