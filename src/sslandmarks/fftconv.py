"""Large-kernel convolutions trained through the FFT, where that is faster on the machine at hand.

A stride-1 SAME convolution is a product of spectra: ``fft_conv2d`` computes exactly what ``nn.Conv2d``
computes (up to float32 rounding) with O(log) work per pixel instead of ``k * k``. Where oneDNN's float32
9x9 convolutions are slow it trains faster: on an idle 2-core AVX2 EPYC, one thread, a training step of HGR1's
Seq-MT (L+ELT+A) at width 16 (16 + 32 images, 64x64) took 2.7-2.8 s directly and 1.05 s through the FFT
(1.9-2.0 s while autograd derived the backward, before :class:`_FFTConv` wrote it out), MTFL's at depth 5
2.1-2.2 s and 1.06-1.09 s (1.6-1.9 s before; ``scripts/profile_step.py``, best of 6 steps, twice); with 8
channels, few images per pass, or where bfloat16 runs natively, the direct convolution wins. So training
times a pass both ways (``train.conv: auto``) and keeps the faster; evaluation, export and autocast always
use the direct convolution, and the parameters and ``state_dict`` are those of ``nn.Conv2d`` either way.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslandmarks.config import CONV_MODES

# the batch goes through the FFT in chunks with at most this many bytes of complex spectra for the larger of the
# input's and the output's channels: on a 2-core AVX2 EPYC (32 MiB L3) chunks of 10-16 images of 68 maps at 64x64
# (~15-23 MB) ran a 9x9 layer's training pass ~2x faster than the whole batch of 32-48 (32: 477 -> 242 ms, 48:
# 620 -> 327 ms), while batches of 5 or 16 maps within this budget were as fast whole as chunked
CHUNK_BYTES = 20_000_000
MIN_KERNEL = 5  # below this the direct convolution's k * k work per pixel is cheaper than any FFT
MARGIN = 0.9  # auto keeps the FFT only when it took at most this fraction of the direct time (timing noise)
MIN_GFLOP = 1.0  # auto keeps small networks direct without timing: little to save, and runs stay reproducible
# auto keeps runs shorter than this direct without timing: the timing costs about as much as 10-20 training steps
# (a --quick run of 20 steps spent as long timing as training), at most a tenth of a run this long, where the FFT
# may save a quarter
MIN_STEPS = 200


def fft_size(n: int) -> int:
    """The smallest 5-smooth length (2^a 3^b 5^c) >= ``n``: FFTs of such lengths are fast."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _by_frequency(spectra: Tensor, order: tuple[int, int]) -> Tensor:
    """``spectra (M, N, P, Q)`` -> ``(P * Q, M, N)`` (``order (0, 1)``) or ``(P * Q, N, M)`` (``(1, 0)``), contiguous:
    one small matrix per frequency, laid out for ``torch.bmm`` (CPU's complex ``bmm`` copies matrix by matrix
    when handed strided or conjugate views, which cost more than the products)."""
    m, n, p, q = spectra.shape
    return spectra.reshape(m, n, p * q).permute(2, *order).contiguous()


def _spatial(by_freq: Tensor, order: tuple[int, int], p: int, q: int) -> Tensor:
    """``(P * Q, M, N)`` -> a view ``(M, N, P, Q)`` (``order (1, 2)``) or ``(N, M, P, Q)`` (``(2, 1)``), the inverse
    layout of :func:`_by_frequency`, not copied: the inverse transform reads any layout at no extra cost (a copy
    made here first cost as much as the transform)."""
    return by_freq.permute(*order, 0).unflatten(2, (p, q))


def _inverse(spectra: Tensor, size: tuple[int, int], rows: slice, cols: slice, out: Tensor,
             bias: Tensor | None = None) -> None:
    """``out[:] = irfft2(spectra, s=size)[..., rows, cols]`` (+ ``bias (O,)`` per channel): the inverse along dim
    -2 first, then along dim -1 for the kept rows only (a quarter less time than ``irfft2`` for a 64x64 crop of
    72x72 on an AVX2 EPYC), the crop written straight into ``out`` (a contiguous tensor, or a batch slice of one)."""
    half = torch.fft.ifft(spectra, dim=-2)[..., rows, :]
    crop = torch.fft.irfft(half, n=size[1], dim=-1)[..., cols]
    if bias is None:
        out.copy_(crop)
    else:
        torch.add(crop, bias.view(1, -1, 1, 1), out=out)


def _chunks(batch: int, channels: int, frequencies: int) -> list[slice]:
    """Slices of the batch, each with at most ``CHUNK_BYTES`` of complex64 spectra for ``channels`` maps of
    ``frequencies`` (one chunk when the whole batch fits), of near-equal sizes."""
    most = max(1, CHUNK_BYTES // (channels * frequencies * 8))  # images per chunk within the budget (at least one)
    n = -(-batch // most)
    step = max(1, -(-batch // max(1, n)))
    return [slice(b, b + step) for b in range(0, batch, step)]


class _FFTConv(torch.autograd.Function):
    """The cross-correlation ``F.conv2d(x, weight, bias, padding=k // 2)`` through the FFT, with its backward
    written out as two more spectral products (autograd's own backward of ``rfft2``/``irfft2`` and of complex
    ``einsum`` took 2-3x the forward time). With ``X``, ``W`` the spectra of ``x`` and of the flipped kernel,
    zero-padded to ``size`` so that nothing wraps, and ``G`` that of the output gradient placed where the
    output was cropped from: ``Y = sum_c X W``, ``dX = sum_o G conj(W)`` (cropped to the input), and the
    flipped kernel's gradient ``sum_b G conj(X)`` (cropped to ``k x k``). The batch goes through in chunks
    (:func:`_chunks`) whose spectra stay within the cache: a training pass of a 9x9 layer from 16 to 68 maps at
    64x64 on 48 images took 620 ms whole and 327 ms in chunks of 16 (one thread, AVX2 EPYC), and a 300-W Seq-MT
    (L+ELT) training step from 1.43-1.51 s to 0.96-1.09 s (1.37 s in one of four A/B pairs; best of 6 steps)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # (B, C, H, W), (O, C, k, k), (O,)
        b, c, h, w = x.shape
        o, _, k, _ = weight.shape
        p = k // 2
        size = (fft_size(h + k - 1), fft_size(w + k - 1))
        q = size[1] // 2 + 1
        wf = _by_frequency(torch.fft.rfft2(weight.flip(-2, -1), s=size), (1, 0))  # (F, C, O), F = P * (Q // 2 + 1)
        x, xfs = x.contiguous(), []
        y = x.new_empty(b, o, h, w)  # contiguous: a strided crop slowed the batch norm that follows ~2.5x
        chunks = _chunks(b, max(c, o), size[0] * q)
        for part in chunks:
            xf = _by_frequency(torch.fft.rfft2(x[part], s=size), (0, 1))  # (F, b, C)
            yf = _spatial(torch.bmm(xf, wf), (1, 2), size[0], q)
            _inverse(yf, size, slice(p, p + h), slice(p, p + w), y[part], bias)
            xfs.append(xf.conj_physical_())  # backward needs only the conjugates
        ctx.save_for_backward(*xfs, wf.conj_physical_())
        ctx.geometry = (h, w, k, size, chunks, bias is not None)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        *xfs_conj, wf_conj = ctx.saved_tensors
        h, w, k, size, chunks, has_bias = ctx.geometry
        p, q = k // 2, size[1] // 2 + 1
        grad, dvf = grad.contiguous(), None
        dx = grad.new_empty(grad.shape[0], wf_conj.shape[1], h, w) if ctx.needs_input_grad[0] else None
        for part, xf_conj in zip(chunks, xfs_conj):
            padded = F.pad(grad[part], (p, size[1] - w - p, p, size[0] - h - p))
            g = _by_frequency(torch.fft.rfft2(padded), (1, 0))  # (F, O, b)
            if dx is not None:
                dxf = torch.bmm(wf_conj, g)  # (F, C, b)
                _inverse(_spatial(dxf, (2, 1), size[0], q), size, slice(0, h), slice(0, w), dx[part])
            if ctx.needs_input_grad[1]:
                dvf = torch.bmm(g, xf_conj) if dvf is None else dvf.baddbmm_(g, xf_conj)  # (F, O, C)
        dw = None
        if dvf is not None:
            dw = grad.new_empty(dvf.shape[1], dvf.shape[2], k, k)
            _inverse(_spatial(dvf, (1, 2), size[0], q), size, slice(0, k), slice(0, k), dw)
            dw = dw.flip(-2, -1)
        db = grad.sum((0, 2, 3)) if has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def fft_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x (B, C, H, W)``, ``weight (O, C, k, k)`` with odd ``k``, ``bias (O,)`` or None -> ``(B, O, H, W)``:
    what ``F.conv2d(x, weight, bias, padding=k // 2)`` computes (a cross-correlation with zero padding),
    as the linear convolution of ``x`` with the flipped kernel: spectra zero-padded to at least
    ``(H + k - 1, W + k - 1)`` so that nothing wraps around, multiplied and summed over ``C`` per frequency
    (:class:`_FFTConv`, which also writes out the backward)."""
    return _FFTConv.apply(x, weight, bias)


class FFTConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, same ``state_dict``) whose float32 training passes go through
    :func:`fft_conv2d`; in evaluation, under autocast and in other dtypes it is the direct convolution."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.training and x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return fft_conv2d(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


def fft_capable(module: nn.Module) -> bool:
    """Whether ``module`` is a plain convolution that :func:`fft_conv2d` can stand in for: stride 1, no
    dilation or groups, an odd square kernel of at least ``MIN_KERNEL`` with SAME zero padding."""
    if type(module) not in (nn.Conv2d, FFTConv2d):
        return False
    k = module.kernel_size
    return (k[0] == k[1] and k[0] % 2 == 1 and k[0] >= MIN_KERNEL and module.stride == (1, 1)
            and module.dilation == (1, 1) and module.groups == 1 and module.padding_mode == "zeros"
            and module.padding == (k[0] // 2, k[1] // 2))


def set_fft(model: nn.Module, names: set[str] | list[str]) -> None:
    """Make the FFT-capable convolutions called ``names`` train through the FFT, and the others directly."""
    names = set(names)
    for name, m in model.named_modules():
        if fft_capable(m):
            m.__class__ = FFTConv2d if name in names else nn.Conv2d


def _output_sum(out) -> Tensor:
    """The sum of every output tensor that carries a gradient (a model's ``ModelOutput``: the maps, the
    landmarks and the heads), so that a backward pass reaches every layer of any model kind (Comm-MT's
    ``heatmaps`` are constant zeros)."""
    tensors = [out.heatmaps, out.landmarks, *out.attributes.values()]
    return sum(t.float().sum() for t in tensors if t.requires_grad)


def _ms(model: nn.Module, x: Tensor, reps: int) -> float:
    """The fastest of ``reps`` timed training passes (forward, backward of the outputs' sum) after an untimed
    one."""
    best = float("inf")
    for i in range(reps + 1):
        t = time.perf_counter()
        _output_sum(model(x)).backward()
        if i:
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def capable_gflop(model: nn.Module, example: Tensor) -> float:
    """Forward GFLOP of ``model``'s FFT-capable convolutions for a batch shaped like ``example (B, C, H, W)``,
    each counted at the input's resolution (an upper bound where a network pools)."""
    b, _, h, w = example.shape
    return sum(2 * b * h * w * m.weight.numel() for m in model.modules() if fft_capable(m)) / 1e9


def choose_convolutions(model: nn.Module, example: Tensor, mode: str, reps: int = 2) -> tuple[list[str], dict]:
    """Set how the FFT-capable convolutions of ``model`` (a network whose output has ``heatmaps``) train:
    ``mode`` ``direct``, ``fft``, or ``auto``: directly when they do less than ``MIN_GFLOP`` of work per pass
    (:func:`capable_gflop`), else through the FFT when a training pass of a copy of ``model`` on
    random float32 input of ``example``'s shape ``(B, C, H, W)`` and memory format took at most ``MARGIN`` of
    its time with direct convolutions (the fastest of ``reps`` passes each). Whole passes are timed, not layers
    one by one: on a 2-core AVX2 EPYC layers timed alone favoured the direct convolution where whole training
    steps ran 1.2-1.4x faster through the FFT. Returns the names of the layers that train through the FFT and
    the timings (``direct_ms``, ``fft_ms``; empty unless ``auto`` timed them)."""
    if mode not in CONV_MODES:
        raise ValueError(f"conv mode {mode!r}: use one of {', '.join(CONV_MODES)}")
    capable = {name for name, m in model.named_modules() if fft_capable(m)}
    fft, timings = mode == "fft", {}
    if mode == "auto" and capable and capable_gflop(model, example) >= MIN_GFLOP:
        with torch.random.fork_rng(devices=[]):  # the run's random stream (dropout) stays as without timing
            trial = copy.deepcopy(model).train().float()
            x = torch.randn(example.shape, device=example.device)
            if example.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            for alg in ("direct", "fft"):
                set_fft(trial, capable if alg == "fft" else set())
                timings[f"{alg}_ms"] = _ms(trial, x, reps)
        fft = timings["fft_ms"] <= MARGIN * timings["direct_ms"]
    set_fft(model, capable if fft else set())
    return sorted(capable) if fft else [], timings
