"""Convolutions through the FFT (train.conv): the same function and gradients as nn.Conv2d, the same parameters,
direct in evaluation, and how training chooses, records and resumes the choice."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import BLOCKS, TINY_OVERRIDES, sets
from sslandmarks import fftconv
from sslandmarks.config import load_config
from sslandmarks.errors import UserError
from sslandmarks.fftconv import FFTConv2d, choose_convolutions, fft_capable, fft_conv2d, fft_size, set_fft

SHAPES = [(2, 1, 16, 13, 20, 9), (3, 4, 5, 11, 11, 5), (1, 6, 3, 17, 9, 7)]  # B, C, O, H, W, k


def bound(x, w, k, h, wd):
    """Rounding bound of a convolution through the FFT: a few units of float64 rounding per butterfly level
    (log2 of the padded size) times the largest sum of |x| |w| products that an output adds up."""
    levels = math.log2(fft_size(h + k - 1) * fft_size(wd + k - 1))
    return 8 * torch.finfo(torch.float64).eps * levels * F.conv2d(x.abs(), w.abs(), padding=k // 2).max()


def test_fft_sizes_are_5_smooth_and_big_enough():
    for n in range(1, 200):
        m = fft_size(n)
        assert m >= n and all(fft_size(j) > j or j == m for j in range(n, m))
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1


def test_fft_chunks_cover_the_batch_within_the_budget():
    for batch, channels in [(48, 68), (48, 16), (80, 16), (7, 500), (1, 10**6)]:
        chunks = fftconv._chunks(batch, channels, 2664)
        assert [i for part in chunks for i in range(batch)[part]] == list(range(batch))
        sizes = [len(range(batch)[part]) for part in chunks]
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]  # equal chunks, the last one maybe smaller
        assert all(n == 1 or n * channels * 2664 * 8 <= fftconv.CHUNK_BYTES for n in sizes)
        assert len(sizes) == -(-batch * channels * 2664 * 8 // fftconv.CHUNK_BYTES) or sizes == [1] * batch
    assert fftconv._chunks(0, 16, 2664) == []


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("b, c, o, h, w, k", SHAPES)
def test_fft_convolution_is_the_direct_one_with_its_gradients(b, c, o, h, w, k, chunked, monkeypatch):
    """Whole, and with the batch in chunks of one image (each chunk's own spectra, the kernel's gradient summed
    over the chunks)."""
    if chunked:
        if b == 1:
            pytest.skip("one image: one chunk")
        monkeypatch.setattr(fftconv, "CHUNK_BYTES", 1)  # less than one image's spectra: a chunk per image
        assert fftconv._chunks(b, max(c, o), 2 * (h + k)) == [slice(i, i + 1) for i in range(b)]
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(o, c, k, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, dtype=torch.float64, requires_grad=True)
    g = torch.randn(b, o, h, w, dtype=torch.float64)
    direct = F.conv2d(x, wt, bias, padding=k // 2)
    fft = fft_conv2d(x, wt, bias)
    assert fft.shape == direct.shape
    assert (fft - direct).abs().max() <= bound(x, wt, k, h, w)
    grads_direct = torch.autograd.grad(direct, (x, wt, bias), g)
    grads_fft = torch.autograd.grad(fft, (x, wt, bias), g)
    for a, e in zip(grads_fft, grads_direct):  # backward sums over the same products: same order of rounding
        assert (a - e).abs().max() <= 1e-9 * e.abs().max()
    assert not torch.allclose(fft_conv2d(x, wt.flip(-1), bias), direct)  # a cross-correlation, not a convolution
    if chunked:
        few = (x[:, :, :6, :5], wt[:2], bias[:2])  # a corner and two output maps: gradcheck perturbs every element
        assert torch.autograd.gradcheck(fft_conv2d, tuple(t.detach().requires_grad_() for t in few))


def test_fft_convolution_of_an_input_without_gradient_and_a_channels_last_one():
    """A network's first layer: the image needs no gradient (only the kernel's is computed); inside a
    channels-last network the layer sees strided input and output gradients: same values and gradients."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 12, 10, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(5, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 5, 12, 10, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    direct, fft = F.conv2d(x, wt, padding=3), fft_conv2d(x, wt, None)
    assert (fft - direct).abs().max() <= bound(x, wt, 7, 12, 10)
    (expected,), (got,) = torch.autograd.grad(direct, wt, g), torch.autograd.grad(fft, wt, g)
    assert (got - expected).abs().max() <= 1e-9 * expected.abs().max()
    assert torch.autograd.gradcheck(fft_conv2d, (x[:1, :, :6, :5].detach().requires_grad_(), wt[:2], None))


def test_fft_layer_keeps_the_parameters_and_is_direct_in_evaluation():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 9, padding=4)
    keys = list(conv.state_dict())
    x = torch.randn(2, 3, 24, 24)
    expected = conv(x)
    conv.__class__ = FFTConv2d
    assert list(conv.state_dict()) == keys
    assert torch.equal(conv.eval()(x), expected)  # evaluation: the direct convolution, bit for bit
    trained = conv.train()(x)
    assert not torch.equal(trained, expected)  # another algorithm ...
    eps = torch.finfo(torch.float32).eps  # ... the same function, to float32 rounding of 3 * 81 products
    assert (trained - expected).abs().max() <= 8 * eps * math.log2(32 * 32) * F.conv2d(
        x.abs(), conv.weight.abs(), padding=4).max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=4))  # autocast: direct


def test_which_layers_can_go_through_the_fft_and_the_modes():
    net = nn.Sequential(nn.Conv2d(1, 4, 9, padding=4), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Conv2d(4, 4, 9, padding=4, stride=2), nn.Conv2d(4, 4, 7, padding=0),
                        nn.Conv2d(4, 4, 5, padding=2, groups=2), nn.Conv2d(4, 4, 5, padding=2))
    assert [fft_capable(m) for m in net] == [True, False, False, False, False, True]
    names, timings = choose_convolutions(net, torch.zeros(2, 1, 32, 32), "fft")
    assert names == ["0", "5"] and timings == {}
    assert [type(m) for m in net][0] is FFTConv2d and type(net[1]) is nn.Conv2d
    assert choose_convolutions(net, torch.zeros(2, 1, 32, 32), "direct")[0] == []
    assert all(type(m) is nn.Conv2d for m in net)
    set_fft(net, ["5"])
    assert type(net[5]) is FFTConv2d and type(net[0]) is nn.Conv2d


def test_auto_keeps_small_networks_direct_and_times_large_ones(monkeypatch):
    import sslandmarks.fftconv as fftconv
    from sslandmarks.models import build_model

    model = build_model(load_config(BLOCKS, list(TINY_OVERRIDES)).model)
    small = torch.zeros(8, 1, 60, 60)
    names, timings = choose_convolutions(model, small, "auto")
    assert names == [] and timings == {}  # below MIN_GFLOP: not even timed
    monkeypatch.setattr(fftconv, "MIN_GFLOP", 0.0)
    state = torch.get_rng_state()
    names, timings = choose_convolutions(model, small, "auto", reps=1)
    assert torch.equal(torch.get_rng_state(), state)  # timing leaves the run's random stream alone
    assert set(timings) == {"direct_ms", "fft_ms"} and min(timings.values()) > 0
    assert (names != []) == (timings["fft_ms"] <= fftconv.MARGIN * timings["direct_ms"])
    assert [type(m) is FFTConv2d for m in model.modules() if fft_capable(m)] == [bool(names)] * 2


@pytest.mark.parametrize("config", ["blocks.yaml", "blocks_commmt.yaml", "blocks_heatmapmt.yaml"])
def test_auto_times_every_model_kind(monkeypatch, config):
    """The timed pass backpropagates through whatever a model outputs (Comm-MT's maps are constant zeros)."""
    import sslandmarks.fftconv as fftconv
    from sslandmarks.models import build_model

    monkeypatch.setattr(fftconv, "MIN_GFLOP", 0.0)
    cfg = load_config(config, list(TINY_OVERRIDES)).model
    _, timings = choose_convolutions(build_model(cfg), torch.zeros(2, cfg.in_channels, *cfg.input_size), "auto", 1)
    assert set(timings) == {"direct_ms", "fft_ms"}


def test_auto_leaves_short_runs_direct_untimed(monkeypatch):
    """A run shorter than MIN_STEPS (a --quick smoke run) is not worth the timing; a long one is timed."""
    import sslandmarks.fftconv as fftconv
    from sslandmarks.models import build_model
    from sslandmarks.train import conv_algorithms

    class Fabric:  # the two attributes conv_algorithms reads
        device, world_size = torch.device("cpu"), 1

    timed = []
    monkeypatch.setattr(fftconv, "MIN_GFLOP", 0.0)
    monkeypatch.setattr(fftconv, "_ms", lambda model, x, reps: timed.append(x.shape) or 1.0)
    for steps in (fftconv.MIN_STEPS - 1, fftconv.MIN_STEPS):
        cfg = load_config(BLOCKS, [*TINY_OVERRIDES, f"train.steps={steps}", "train.precision=32-true"])
        conv_algorithms(cfg, build_model(cfg.model), Fabric())
    assert len(timed) == 2  # direct and FFT, for the long run only


def test_a_bad_conv_mode_is_refused():
    with pytest.raises(UserError, match="train.conv"):
        load_config(BLOCKS, ["train.conv=winograd"])


def test_training_through_the_fft_records_it_and_matches_direct_training(tmp_path):
    """The first step's losses (before any update) agree to float32 rounding; metrics.json and the
    checkpoint name the layers that went through the FFT, and a resumed run keeps them."""
    import csv

    from sslandmarks.checkpoint import load_checkpoint
    from sslandmarks.cli import main

    totals = {}
    for conv in ("direct", "fft"):
        out = tmp_path / conv
        assert main(["train", "--config", BLOCKS, "--out", str(out), "--quiet",
                     *sets([*TINY_OVERRIDES, "train.steps=2", "train.log_every=1", f"train.conv={conv}"])]) == 0
        totals[conv] = float(next(csv.DictReader((out / "log.csv").open()))["total"])
        fft_layers = json.loads((out / "metrics.json").read_text())["fft_layers"]
        assert fft_layers == ([] if conv == "direct" else ["localizer.0", "localizer.3"])
        assert load_checkpoint(out / "checkpoints" / "last.ckpt")["fft_layers"] == fft_layers
    assert totals["fft"] == pytest.approx(totals["direct"], rel=1e-4)
    # resumed with train.conv=auto, the run keeps the choice it began with (auto alone would keep this net direct)
    out = tmp_path / "fft"
    assert main(["train", "--config", BLOCKS, "--out", str(out), "--quiet", "--resume",
                 *sets([*TINY_OVERRIDES, "train.steps=4", "train.log_every=1", "train.conv=auto"])]) == 0
    assert json.loads((out / "metrics.json").read_text())["fft_layers"] == fft_layers
