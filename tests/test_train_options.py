"""Training options: train.ema (update rule, warm-up, checks), precision auto (which CPUs train in bfloat16), and
log.csv's cpu_seconds (what table reports count)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from conftest import BLOCKS
from sslandmarks.config import load_config
from sslandmarks.errors import UserError
from sslandmarks.train import ema_update


def test_ema_follows_its_recurrence_with_the_decay_warm_up():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    avg = AveragedModel(net, multi_avg_fn=ema_update(0.9), use_buffers=True)
    expected = {k: v.clone().float() for k, v in net.state_dict().items()}
    for n in range(6):
        net.train()
        net(torch.randn(8, 3))  # moves the BatchNorm statistics and its batch count
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        avg.update_parameters(net)
        d = min(0.9, (1 + n) / (10 + n))  # n = updates before this one; the first copies
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected[k] = v.clone() if n == 0 else d * expected[k] + (1 - d) * v
    got = avg.module.state_dict()
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-6)
        else:  # num_batches_tracked: copied, not averaged
            assert torch.equal(got[k], v)
    assert not torch.allclose(got["0.weight"], net.state_dict()["0.weight"])  # an average, not the weights


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_ema_outside_its_range_is_refused(value):
    with pytest.raises(UserError, match="train.ema"):
        load_config(BLOCKS, [f"train.ema={value}"])


@pytest.mark.parametrize("isa, expected", [("AVX2", "32-true"), ("AVX512_CORE_BF16", "32-true"),
                                           ("AVX512_CORE_AMX", "bf16-mixed"), ("ALL", "bf16-mixed")])
def test_precision_auto_follows_what_onednn_may_use(monkeypatch, isa, expected):
    import sslandmarks.train as train_mod

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert train_mod.resolve_precision("auto", "cpu") == expected
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert train_mod.resolve_precision("auto", "cpu") == "32-true"
    assert train_mod.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_log_counts_cpu_seconds_and_reports_prefer_them(tmp_path, tiny_overrides):
    import csv

    from conftest import sets
    from sslandmarks.cli import main
    from sslandmarks.report import _logged_seconds, log_rows

    out = tmp_path / "run"
    assert main(["train", "--config", BLOCKS, "--out", str(out), "--quiet",
                 *sets(tiny_overrides + ["train.steps=10", "train.device=cpu"])]) == 0
    rows = list(csv.DictReader((out / "log.csv").open(newline="")))
    cpu = [float(r["cpu_seconds"]) for r in rows]
    assert all(b >= a > 0 for a, b in zip(cpu, cpu[1:]))  # CPU time of the run, growing row by row
    assert _logged_seconds(log_rows(out / "log.csv")) == cpu[-1]
    old = tmp_path / "old.csv"  # a log written before the column: its wall-clock seconds
    old.write_text("step,seconds\n5,1.5\n10,3.25\n")
    assert _logged_seconds(log_rows(old)) == 3.25


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_asked_on_a_cpu_that_emulates_it_is_warned_about(monkeypatch, tmp_path, capsys, native):
    """bfloat16 on a CPU without AMX-BF16 is emulated (20x float32's time on an AVX2 EPYC): training says so and
    how to avoid it; where it is native, nothing is said. metrics.json records the precision that ran."""
    import json

    import sslandmarks.train as train_mod
    from conftest import TINY_OVERRIDES, sets
    from sslandmarks.cli import main

    monkeypatch.setattr(train_mod, "cpu_bf16_native", lambda: native)
    out = tmp_path / "run"
    assert main(["train", "--config", BLOCKS, "--out", str(out), "--quiet",
                 *sets([*TINY_OVERRIDES, "train.steps=1", "train.precision=bf16-mixed"])]) == 0
    warned = "bfloat16 is emulated here" in capsys.readouterr().err
    assert warned != native
    assert json.loads((out / "metrics.json").read_text())["precision"] == "bf16-mixed"
