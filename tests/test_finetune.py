"""Fine-tuning: ``train --init`` starts from another run's (or a bundled model's) weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from conftest import BLOCKS, sets
from sslandmarks.checkpoint import init_weights, load_checkpoint, save_checkpoint
from sslandmarks.cli import main
from sslandmarks.config import load_config, to_dict
from sslandmarks.models import build_model


def _train(out: Path, overrides: list[str], *extra: str) -> int:
    return main(["train", "--config", BLOCKS, "--out", str(out), "--quiet", *sets(overrides), *extra])


def test_init_starts_from_the_given_weights_and_is_recorded(tmp_path, tiny_overrides, capsys):
    overrides = tiny_overrides + ["train.steps=10", "train.device=cpu"]
    assert _train(tmp_path / "a", overrides) == 0
    src = tmp_path / "a" / "checkpoints" / "best.ckpt"
    # one step at a negligible learning rate: the weights must still be the source's
    assert _train(tmp_path / "b", [*overrides, "train.steps=1", "train.lr=1e-12"], "--init", str(src)) == 0
    assert "init: " in capsys.readouterr().err
    theirs, ours = load_checkpoint(src)["model"], load_checkpoint(tmp_path / "b" / "checkpoints" / "last.ckpt")["model"]
    convs = [k for k in theirs if k.endswith("weight") and theirs[k].dim() == 4]
    assert convs and all(torch.allclose(theirs[k], ours[k], atol=1e-8) for k in convs)
    fresh = build_model(load_config(BLOCKS, overrides).model).state_dict()
    assert not torch.allclose(fresh[convs[0]], theirs[convs[0]])  # the comparison can fail
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["train"]["init"] == str(src)


def test_init_keeps_fresh_only_the_tensors_that_do_not_fit(tmp_path, tiny_overrides):
    cfg = load_config(BLOCKS, tiny_overrides)
    src = build_model(cfg.model)
    save_checkpoint(tmp_path / "src.ckpt", {"model": src.state_dict(), "config": to_dict(cfg)})
    other = dataclasses.replace(cfg.model, num_landmarks=cfg.model.num_landmarks + 3)
    model = build_model(other)
    fresh = init_weights(model, str(tmp_path / "src.ckpt"), verbose=False)
    assert fresh and all(model.state_dict()[k].shape != src.state_dict()[k].shape for k in fresh)
    kept = [k for k in src.state_dict() if k not in fresh]
    assert kept and all(torch.equal(model.state_dict()[k], src.state_dict()[k]) for k in kept)


def test_bad_init_is_a_one_line_error(tmp_path, tiny_overrides, capsys):
    assert _train(tmp_path / "c", tiny_overrides, "--init", str(tmp_path / "missing.ckpt")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.ckpt" in err[0] and "Traceback" not in err[0]
