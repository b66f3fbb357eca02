"""ONNX export with a parity check against PyTorch (needs the ``onnx`` extra: onnx, onnxruntime)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from sslandmarks.checkpoint import model_from_checkpoint
from sslandmarks.errors import UserError
from sslandmarks.outputs import atomic_path, ensure_writable_file, refuse_inputs_as_outputs

PARITY_LIMIT_PX = 1e-3


class _Exported(nn.Module):
    """``images (B, C, H, W)`` float in [0, 1] -> ``landmarks (B, K, 2)`` and one output per attribute head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return (out.landmarks, *out.attributes.values())


def export_onnx(checkpoint: str | Path, path: str | Path, opset: int = 17) -> dict:
    """Write ``path`` (dynamic batch) and compare ONNX Runtime with PyTorch on random images.

    Returns ``{"path", "outputs", "max_landmark_diff_px"}``; raises if the difference exceeds 1e-3 px."""
    path = Path(path)
    refuse_inputs_as_outputs([("--onnx", path)], [checkpoint])
    ensure_writable_file(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxruntime: pip install 'sslandmarks[onnx]'") from None
    model, cfg = model_from_checkpoint(checkpoint)
    wrapped = _Exported(model).eval()  # eval mode for the wrapper too: BatchNorm uses running statistics
    names = ["landmarks", *[h.name for h in cfg.model.heads]]
    h, w = cfg.model.input_size
    example = torch.rand(2, cfg.model.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    check = torch.rand(5, cfg.model.in_channels, h, w, generator=torch.Generator().manual_seed(1))
    try:
        with atomic_path(path) as tmp:  # only a file that passed the parity check replaces ``path``
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter: deprecated, but it runs everywhere
                torch.onnx.export(wrapped, (example,), str(tmp), input_names=["images"], output_names=names,
                                  dynamic_axes={n: {0: "batch"} for n in ["images", *names]}, opset_version=opset,
                                  dynamo=False)
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = session.run(None, {"images": check.numpy()})
            with torch.no_grad():
                ref = wrapped(check)
            diff = float((torch.from_numpy(got[0]) - ref[0]).abs().max())
            if not diff <= PARITY_LIMIT_PX:
                raise RuntimeError(f"ONNX parity check failed: landmarks differ by {diff:.3g} px "
                                   f"(limit {PARITY_LIMIT_PX})")
    except OSError as e:  # disk full, a folder in the way: the temporary file is gone, the old file stays
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}): choose another --onnx") from None
    return {"path": str(path), "outputs": names, "max_landmark_diff_px": diff, **onnx_latency(path, check[:1])}


def onnx_latency(path: str | Path, image: torch.Tensor, threads: int = 2, runs: int = 300) -> dict:
    """Median and 90th-percentile milliseconds of one ONNX Runtime call on a single ``(1, C, H, W)`` image
    with ``threads`` intra-op threads (the answer time for one face, after warm-up)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {"latency_ms": times[len(times) // 2], "latency_p90_ms": times[int(0.9 * len(times))],
            "latency_threads": threads}
