"""ONNX export with a parity check against PyTorch (needs the ``onnx`` extra: onnx, onnxruntime).

Three kinds of graph: the single pass (``images -> landmarks``, as before), the fused mirror (``mirror=True``:
the face and its left-right mirror in one call, the mirror's landmarks mapped back, renumbered and averaged
inside the graph, exactly :func:`~sslandmarks.inference.predict_all`'s test-time mirroring) and either of them
quantised to int8 (``int8=True``: static quantisation, calibrated on training-like crops).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sslandmarks.checkpoint import model_from_checkpoint
from sslandmarks.config import Config
from sslandmarks.data.files import load_cropped
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.sources import SOURCES
from sslandmarks.errors import UserError
from sslandmarks.evaluate import guess_format
from sslandmarks.inference import predict_all
from sslandmarks.outputs import atomic_path, ensure_writable_file, refuse_inputs_as_outputs
from sslandmarks.specs import flip_permutation

PARITY_LIMIT_PX = 1e-3
# int8 against float32 on held-out calibration faces: the mean landmark distance, as a share of the input width.
# Measured on the bundled face models (256 AFW + HELEN-train faces calibrate, 128 check): 0.08-0.14 px at 64-80 px
# (0.1-0.2 %), with HELEN test NME moving by -0.002 to +0.031 points (`bench --latency --data`); a broken
# quantisation (the soft-argmax in uint8) moves them by several px (NME 15 % instead of 3.8 %).
INT8_LIMIT = 0.01
# The ops quantised: the conv stack stays in int8 between convolutions; the last convolution before each
# soft-argmax (the heatmaps), the soft-argmax itself and any attribute MLP stay in float32.
QUANTIZED_OPS = ("Conv", "Relu", "MaxPool", "Concat", "Resize")
CALIBRATION_FACES = 384  # two thirds calibrate (256: fewer made HELEN NME depend on which faces), a third checks


class _Exported(nn.Module):
    """``images (B, C, H, W)`` float in [0, 1] -> ``landmarks (B, K, 2)`` and one output per attribute head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return (out.landmarks, *out.attributes.values())


class _Mirrored(nn.Module):
    """The fused mirror: ``images (B, C, H, W)`` -> landmarks (and attribute outputs) averaged over each image
    and its left-right mirror, which run as one batch of ``2B``; the mirror's landmarks are mapped back
    (``x -> W - 1 - x``) and renumbered by ``flip_perm`` first, as :func:`predict_all` does."""

    def __init__(self, model: nn.Module, flip_perm: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("perm", torch.tensor(flip_perm, dtype=torch.long))
        self.register_buffer("scale", torch.tensor([-1.0, 1.0]))
        self.register_buffer("shift", torch.tensor([width - 1.0, 0.0]))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(torch.cat([images, images.flip(-1)]))
        lm = out.landmarks.float().reshape(2, -1, *out.landmarks.shape[1:])
        back = (lm[1] * self.scale + self.shift).index_select(1, self.perm)
        attrs = [v.float().reshape(2, -1, *v.shape[1:]) for v in out.attributes.values()]
        return ((lm[0] + back) / 2, *[(a[0] + a[1]) / 2 for a in attrs])


def export_onnx(checkpoint: str | Path, path: str | Path, opset: int = 17, mirror: bool = False, int8: bool = False,
                calibration: str | None = None) -> dict:
    """Write ``path`` (dynamic batch) and check it against PyTorch on random images.

    ``mirror``: the fused-mirror graph (one call returns the mirrored-and-averaged landmarks); ``int8``: static
    int8 quantisation calibrated on ``calibration`` (annotated files, cropped like training; default: the
    checkpoint's own training data), checked against the float32 graph on held-out faces (:data:`INT8_LIMIT`).
    Returns ``{"path", "outputs", "max_landmark_diff_px", "latency_ms", ...}`` (and ``int8`` figures); raises if a
    check fails, leaving an existing ``path`` as it was."""
    path = Path(path)
    refuse_inputs_as_outputs([("--onnx", path)], [checkpoint, *([calibration] if calibration else [])])
    ensure_writable_file(path)
    ort = _onnxruntime("ONNX export")
    model, cfg = model_from_checkpoint(checkpoint)
    perm = flip_permutation(cfg.data.spec, "--mirror") if mirror else None
    faces = calibration_faces(cfg, calibration) if int8 else None  # before writing: refusals come at once
    h, w = cfg.model.input_size
    check = torch.randint(0, 256, (5, cfg.model.in_channels, h, w), generator=torch.Generator().manual_seed(1),
                          dtype=torch.uint8)
    info: dict = {}
    try:
        with atomic_path(path) as tmp:  # only a file that passed its checks replaces ``path``
            names = write_onnx(model, cfg, tmp, perm, opset)
            got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, _feed(check))
            diff = float(np.abs(got[0] - predict_all(model, check, flip_perm=perm)[0].numpy()).max())
            if not diff <= PARITY_LIMIT_PX:
                raise RuntimeError(f"ONNX parity check failed: landmarks differ by {diff:.3g} px "
                                   f"(limit {PARITY_LIMIT_PX})")
            if int8:
                info = quantize_int8(tmp, tmp, faces, w)
    except OSError as e:  # disk full, a folder in the way: the temporary file is gone, the old file stays
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}): choose another --onnx") from None
    return {"path": str(path), "outputs": names, "max_landmark_diff_px": diff, "mirror": mirror,
            **({"int8": info} if int8 else {}), **onnx_latency(path, check[:1])}


def _onnxruntime(what: str):
    """The ``onnxruntime`` module, or a one-line error naming the extra."""
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime
    except ImportError:
        raise UserError(f"{what} needs onnx and onnxruntime: pip install 'sslandmarks[onnx]'") from None
    return onnxruntime


def _feed(images: Tensor) -> dict:
    """ONNX Runtime's input for uint8 (or float) ``images``: ``{"images": float32 in [0, 1]}``."""
    x = images.float() / 255.0 if not images.is_floating_point() else images.float()
    return {"images": x.numpy()}


def write_onnx(model: nn.Module, cfg: Config, path: str | Path, flip_perm: tuple[int, ...] | None = None,
               opset: int = 17) -> list[str]:
    """Export ``model`` to ``path`` (float32, dynamic batch): the single pass, or with ``flip_perm`` the fused
    mirror. Returns the output names (``landmarks`` and one per attribute head)."""
    h, w = cfg.model.input_size
    graph = _Mirrored(model, flip_perm, w) if flip_perm is not None else _Exported(model)
    graph.eval()  # eval mode for the wrapper too: BatchNorm uses running statistics
    names = ["landmarks", *[hd.name for hd in cfg.model.heads]]
    example = torch.rand(2, cfg.model.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter: deprecated, but it runs everywhere
        torch.onnx.export(graph, (example,), str(path), input_names=["images"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["images", *names]}, opset_version=opset,
                          dynamo=False)
    return names


def calibration_faces(cfg: Config, path: str | None = None, n: int = CALIBRATION_FACES) -> Tensor:
    """Up to ``n`` training-like inputs ``(n, C, H, W)`` uint8 for int8 calibration: faces of the annotated files
    at ``path`` (or the checkpoint's ``data.train_path``), spread evenly over them and cropped as training crops
    them; for a synthetic dataset, its generator's training split."""
    m = cfg.model
    if path is None and cfg.data.name in SOURCES:
        return SOURCES[cfg.data.name].make(n, cfg.data.seed, "train").images
    if path is not None and not Path(path).exists():
        raise UserError(f"--calibration {path}: does not exist")
    paths = [path] if path is not None else list(cfg.data.train_path)
    missing = [p for p in paths if not Path(p).exists()]
    if missing or not paths:
        where = f"{missing[0]} is not here" if missing else "the model's config names no training data"
        raise UserError(f"int8 calibration needs training-like faces: {where}; give --calibration PATH "
                        "(annotated faces, not the test set)")
    problems = Problems(skip_bad=True)
    samples = [s for p in paths for s in read_annotations(p, cfg.data.format if path is None else guess_format(p),
                                                          problems)]
    picked = [samples[round(i * len(samples) / n)] for i in range(min(n, len(samples)))]
    return load_cropped(picked, m.input_size, m.in_channels, cfg.data.crop_margin, problems).images


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs advice at WARNING level through the root logger: silence it meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def heatmap_convs(model_path: str | Path) -> list[str]:
    """Names of the Conv nodes that make the maps a Softmax reads (upstream through non-Conv nodes only)."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    found, todo, seen = [], [n for n in graph.node if n.op_type == "Softmax"], set()
    while todo:
        node = todo.pop()
        for name in node.input:
            up = producer.get(name)
            if up is None or up.name in seen:
                continue
            seen.add(up.name)
            if up.op_type == "Conv":
                found.append(up.name)
            else:
                todo.append(up)
    return found


def quantize_int8(src: str | Path, dst: str | Path, faces: Tensor, width: int) -> dict:
    """Static int8 quantisation (QDQ, per-channel int8 weights with reduced range, uint8 activations; MinMax
    calibration) of the float graph ``src`` into ``dst`` (may be the same file), on ``faces`` (uint8): every
    third face is held out and checks the result against float32 (mean landmark distance <= ``INT8_LIMIT`` x
    ``width``). Reduced-range weights avoid the int8 overflow of AVX2 CPUs without VNNI, so the answers do not
    depend on the CPU's instruction set."""
    ort = _onnxruntime("int8 quantisation")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    keep = torch.arange(len(faces)) % 3 != 2
    calib, held_out = faces[keep], faces[~keep]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([_feed(calib[i : i + 1]) for i in range(len(calib))])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as d, _quiet_quantizer():
        pre, out = Path(d) / "pre.onnx", Path(d) / "int8.onnx"
        quant_pre_process(str(src), str(pre))  # shape inference and graph clean-up, as ONNX Runtime advises
        float_lm = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).run(None, _feed(held_out))[0]
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=heatmap_convs(pre))
        int8_lm = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, _feed(held_out))[0]
        dist = np.linalg.norm(int8_lm - float_lm, axis=-1)
        mean = float(dist.mean())
        if not mean <= INT8_LIMIT * width:
            raise RuntimeError(f"int8 check failed: landmarks move by {mean:.3g} px on average against float32 "
                               f"(limit {INT8_LIMIT * width:.3g} px = {INT8_LIMIT:.0%} of the input width)")
        Path(dst).write_bytes(out.read_bytes())
    return {"calibration_faces": int(keep.sum()), "checked_faces": len(held_out), "mean_diff_px": mean,
            "max_diff_px": float(dist.max()), "limit_px": INT8_LIMIT * width}


def ort_session(path: str | Path, threads: int = 2, level: str = "all", spinning: bool = True,
                optimized_path: str | Path | None = None):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one inter-op thread). ``level``: the graph
    optimisation level (``all`` = ORT_ENABLE_ALL, ONNX Runtime's default; ``extended``, ``basic``, ``none``);
    ``spinning=False`` stops idle intra-op threads from spinning; ``optimized_path``: also save the optimised
    graph there."""
    ort = _onnxruntime("ONNX Runtime")
    level_ = ort.GraphOptimizationLevel
    levels = {"all": level_.ORT_ENABLE_ALL, "extended": level_.ORT_ENABLE_EXTENDED, "basic": level_.ORT_ENABLE_BASIC,
              "none": level_.ORT_DISABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = levels[level]
    opts.log_severity_level = 3  # no advice on stderr
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_latency(path: str | Path, image: torch.Tensor, threads: int = 2, runs: int = 300) -> dict:
    """Median and 90th-percentile milliseconds of one ONNX Runtime call on a single ``(1, C, H, W)`` image
    (uint8, or float in [0, 1]) with ``threads`` intra-op threads (the answer time for one face, after warm-up)."""
    session = ort_session(path, threads)
    feed = _feed(image)
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
