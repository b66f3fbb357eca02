"""``sslandmarks bench --latency``: the answer time for one face, every way of running a face model, side by side.

For each model (the bundled face models by default) and each intra-op thread count, in one process and one run:
PyTorch eager (single pass, and the face + mirror pair as ``predict`` runs it), ONNX Runtime at each graph
optimisation level (its default is ORT_ENABLE_ALL), without spinning threads, from a saved pre-optimised graph,
int8 dynamic and static quantisation, the mirrored pair as a batch of 2 and as one fused graph (float32 and
int8), and dlib's 68-point shape predictor from a box as the reference row. The variants' calls are interleaved
in rounds, so that a machine whose load changes meanwhile weighs on all of them alike. With annotated test faces
(``data``), each variant's NME on them, faces cropped from their landmarks as ``evaluate`` crops them, and each
int8 variant's change against its float32 twin.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sslandmarks.checkpoint import model_from_checkpoint
from sslandmarks.config import Config
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.detect import DLIB_TO_LANDMARK_BOX
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.images import read_image
from sslandmarks.data.sources import read_files
from sslandmarks.errors import UserError
from sslandmarks.evaluate import guess_format
from sslandmarks.export import _onnxruntime, calibration_faces, ort_session, quantize_int8, write_onnx
from sslandmarks.hardware import machine
from sslandmarks.inference import predict_all, score_landmarks
from sslandmarks.metrics import landmark_metrics
from sslandmarks.pretrained import checkpoint_path
from sslandmarks.specs import SPECS, layout

LATENCY_MODELS = ("face68-fast", "face68")
DLIB_INSTALL = "pip install dlib-bin face-recognition-models"
Predict = Callable[[np.ndarray], np.ndarray]  # float32 (B, C, H, W) in [0, 1] -> landmarks (B, K, 2)


@dataclass
class Variant:
    """One way of running a model: ``predict`` answers a batch (timed on one face), ``reference`` names the
    float32 variant an int8 one is compared with, ``session_ms`` the time to build its session."""

    name: str
    what: str
    predict: Predict
    reference: str | None = None
    session_ms: float | None = None


def _torch_predict(model: torch.nn.Module, flip_perm: tuple[int, ...] | None) -> Predict:
    """PyTorch eager as ``evaluate`` and ``predict`` run it (:func:`predict_all`), optionally mirrored."""
    return lambda x: predict_all(model, torch.from_numpy(x), flip_perm=flip_perm)[0].numpy()


def _ort_predict(session, flip_perm: tuple[int, ...] | None = None, width: int = 0) -> Predict:
    """An ONNX Runtime session's landmarks; with ``flip_perm``, the face and its mirror as one batch of 2B and
    the mirror's answer mapped back, renumbered and averaged in numpy (what a caller of the plain graph does)."""
    if flip_perm is None:
        return lambda x: session.run(None, {"images": x})[0]
    perm = list(flip_perm)

    def predict(x: np.ndarray) -> np.ndarray:
        lm = session.run(None, {"images": np.concatenate([x, x[..., ::-1]])})[0]
        direct, mirrored = lm[: len(x)], lm[len(x) :].copy()
        mirrored[..., 0] = width - 1 - mirrored[..., 0]
        return (direct + mirrored[:, perm]) / 2

    return predict


def _flip(cfg: Config) -> tuple[int, ...] | None:
    """The model's mirror permutation (from its landmark layout), or None where its layout has none."""
    spec = layout(cfg.data.spec)
    return spec.flip if spec is not None else None


def _timed_session(path: Path, threads: int, **kw) -> tuple[object, float]:
    t0 = time.perf_counter()
    session = ort_session(path, threads, **kw)
    return session, 1000 * (time.perf_counter() - t0)


def onnx_files(model: torch.nn.Module, cfg: Config, folder: Path, faces: torch.Tensor | None) -> dict[str, Path]:
    """The model's ONNX graphs in ``folder``: float32 single pass and fused mirror; with calibration ``faces``,
    int8 static of both, and int8 dynamic (weights only; activations quantised at run time) of the single pass."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    perm = _flip(cfg)
    files = {"float": folder / "float.onnx"}
    write_onnx(model, cfg, files["float"])
    if perm is not None:
        files["mirror"] = folder / "mirror.onnx"
        write_onnx(model, cfg, files["mirror"], perm)
    if faces is not None:
        width = cfg.model.input_size[1]
        for src, dst in (("float", "int8"), ("mirror", "int8-mirror")):
            if src in files:
                files[dst] = folder / f"{dst}.onnx"
                quantize_int8(files[src], files[dst], faces, width)
        quant_pre_process(str(files["float"]), str(folder / "pre.onnx"))
        files["int8-dynamic"] = folder / "int8-dynamic.onnx"
        quantize_dynamic(str(folder / "pre.onnx"), str(files["int8-dynamic"]), weight_type=QuantType.QUInt8)
    return files


def model_variants(model: torch.nn.Module, cfg: Config, files: dict[str, Path], threads: int) -> list[Variant]:
    """Every variant of one model at ``threads`` intra-op threads (ONNX Runtime sessions built here)."""
    perm = _flip(cfg)
    width = cfg.model.input_size[1]
    out = [Variant("torch", "PyTorch eager, one pass", _torch_predict(model, None))]
    if perm is not None:
        out.append(Variant("torch-mirror", "PyTorch eager, face + mirror (as predict runs it)",
                           _torch_predict(model, perm)))
    for level, what in (("all", "ONNX Runtime, default = ORT_ENABLE_ALL"), ("basic", "ONNX Runtime, ORT_ENABLE_BASIC"),
                        ("none", "ONNX Runtime, ORT_DISABLE_ALL")):
        session, ms = _timed_session(files["float"], threads, level=level)
        out.append(Variant("ort" if level == "all" else f"ort-{level}", what, _ort_predict(session), session_ms=ms))
    optimised = files["float"].with_name(f"optimised-{threads}.onnx")
    ort_session(files["float"], threads, optimized_path=optimised)  # saves the ORT_ENABLE_ALL graph (untimed)
    session, ms = _timed_session(optimised, threads, level="none")
    out.append(Variant("ort-preoptimised", "ONNX Runtime, the saved ORT_ENABLE_ALL graph loaded as is",
                       _ort_predict(session), session_ms=ms))
    session, ms = _timed_session(files["float"], threads, spinning=False)
    out.append(Variant("ort-nospin", "ONNX Runtime, idle intra-op threads do not spin (no pool at 1 thread)",
                       _ort_predict(session), session_ms=ms))
    int8 = (("int8-dynamic", "ONNX Runtime int8, dynamic quantisation", "ort"),
            ("int8", "ONNX Runtime int8, static quantisation", "ort"))
    for key, what, ref in int8:
        if key in files:
            session, ms = _timed_session(files[key], threads)
            out.append(Variant(f"ort-{key}", what, _ort_predict(session), ref, ms))
    if perm is not None:
        session, ms = _timed_session(files["float"], threads)
        out.append(Variant("ort-mirror-batch2", "ONNX Runtime, face + mirror as a batch of 2, averaged in numpy",
                           _ort_predict(session, perm, width), session_ms=ms))
        fused = (("mirror", "ort-mirror-fused", "ONNX Runtime, fused mirror graph", None),
                 ("int8-mirror", "ort-int8-mirror-fused", "ONNX Runtime int8 (static), fused mirror graph",
                  "ort-mirror-fused"))
        for key, name, what, ref in fused:
            if key in files:
                session, ms = _timed_session(files[key], threads)
                out.append(Variant(name, what, _ort_predict(session), ref, ms))
    return out


def dlib_predictor() -> object | str:
    """dlib's 68-point shape predictor (``face_recognition_models``' file, offline), or why it is unavailable."""
    try:
        import dlib
    except ImportError:
        return f"not installed ({DLIB_INSTALL})"
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.submodule_search_locations is None:
        return f"not installed: dlib is, its 68-point model is not ({DLIB_INSTALL})"
    dat = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.shape_predictor(str(dat))


def landmark_box(points: np.ndarray) -> tuple[int, int, int, int]:
    """The dlib-style face box that stands for the box around ``points (68, 2)`` (the inverse of
    ``DLIB_TO_LANDMARK_BOX``, as ``scripts/bench_dlib.py``'s gt-box protocol): what the predictor starts from."""
    dx, dy, ds = DLIB_TO_LANDMARK_BOX
    lo, hi = np.nanmin(points, 0), np.nanmax(points, 0)
    side = (hi - lo).max() / ds
    c = (lo + hi) / 2 - np.array([dx, dy]) * side
    return tuple(int(round(v)) for v in (c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2))


def dlib_photos(data: str | None) -> tuple[list[np.ndarray], list[tuple], np.ndarray | None]:
    """RGB photos, boxes and ground truth ``(N, 68, 2)`` for the dlib row: the annotated faces of ``data`` with
    boxes from their landmarks, or without data one random 256x256 photo (the predictor's cost does not
    depend on the pixels: a fixed number of trees per face) and no ground truth."""
    if data is None:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)], [(64, 64, 192, 192)], None
    samples = read_annotations(data, guess_format(data), Problems())
    if len(samples[0].landmarks) != 68:
        raise UserError(f"{data}: dlib's predictor has 68 points, these annotations {len(samples[0].landmarks)}")
    return ([read_image(s.image, 3) for s in samples], [landmark_box(s.landmarks) for s in samples],
            np.stack([s.landmarks for s in samples]))


def dlib_call(predictor, photo: np.ndarray, box: tuple) -> np.ndarray:
    """dlib's 68 points ``(68, 2)`` on ``photo`` from ``box``."""
    import dlib

    shape = predictor(photo, dlib.rectangle(*box))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def time_round_robin(calls: dict[str, Callable[[], object]], runs: int, rounds: int = 10,
                     warmup: int = 10) -> dict[str, dict]:
    """Median and 90th-percentile milliseconds of each call, ``runs`` timed calls each, interleaved: ``rounds``
    rounds in which every call runs ``runs / rounds`` times in turn (after ``warmup`` untimed calls each, and one
    untimed call at each turn, which wakes its threads and caches after the others ran)."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    per = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for key, fn in calls.items():
            fn()
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                times[key].append(1000 * (time.perf_counter() - t0))
    return {k: {"median_ms": statistics.median(v), "p90_ms": sorted(v)[int(0.9 * len(v))], "calls": len(v)}
            for k, v in times.items()}


def _nme(predict: Predict, test: LandmarkData, cfg: Config, batch: int = 64) -> float:
    """NME (percent, the config's normaliser) of ``predict`` on the crops of ``test``, as ``evaluate`` scores."""
    x = test.images.float().div(255.0).numpy()
    pred = np.concatenate([predict(x[i : i + batch]) for i in range(0, len(x), batch)])
    return score_landmarks(torch.from_numpy(pred).float(), test, cfg)["nme"]


@dataclass
class _Model:
    name: str
    model: torch.nn.Module
    cfg: Config
    files: dict[str, Path]
    test: LandmarkData | None
    image: np.ndarray  # the face every variant is timed on, float32 (1, C, H, W)
    int8_error: str | None = None


def _prepare(name: str, folder: Path, data: str | None, calibration: str | None) -> _Model:
    """Load ``name`` (a bundled model or a checkpoint), read its test crops, write its ONNX graphs."""
    model, cfg = model_from_checkpoint(checkpoint_path(name))
    test = read_files(data, cfg, Problems(), guess_format(data)) if data is not None else None
    try:
        faces, error = calibration_faces(cfg, calibration), None
    except UserError as e:  # no training data here: the int8 rows say so
        faces, error = None, str(e)
    folder.mkdir(parents=True)
    files = onnx_files(model, cfg, folder, faces)
    h, w = cfg.model.input_size
    if test is not None:
        image = test.images[:1].float().div(255.0).numpy()
    else:
        image = torch.rand(1, cfg.model.in_channels, h, w, generator=torch.Generator().manual_seed(0)).numpy()
    return _Model(name, model, cfg, files, test, image, error)


def _timing_block(prepared: list[_Model], threads: int, runs: int, rounds: int,
                  dlib: tuple | None) -> tuple[list[dict], dict[tuple[str, str], Variant]]:
    """One thread count: every variant of every model (and dlib) timed, interleaved."""
    torch.set_num_threads(threads)
    calls, variants = {}, {}
    for p in prepared:
        for v in model_variants(p.model, p.cfg, p.files, threads):
            variants[(p.name, v.name)] = v
            calls[f"{p.name}\t{v.name}"] = (lambda f, x: lambda: f(x))(v.predict, p.image)
    if dlib is not None:
        predictor, photos, boxes = dlib
        turn = iter(range(10**12))  # the first (up to) 16 photos in turn

        def dlib_face() -> np.ndarray:
            i = next(turn) % min(len(photos), 16)
            return dlib_call(predictor, photos[i], boxes[i])

        calls["dlib\tshape-predictor"] = dlib_face
    timed = time_round_robin(calls, runs, rounds)
    rows = []
    for key, t in timed.items():
        model, variant = key.split("\t")
        v = variants.get((model, variant))
        rows.append({"model": model, "variant": variant, "threads": threads, **t,
                     "session_ms": None if v is None else v.session_ms})
    return rows, variants


def run_latency(models: list[str] | None = None, threads: list[int] | None = None, runs: int = 300,
                data: str | None = None, calibration: str | None = None, rounds: int = 10) -> dict:
    """Per-face latency of every variant of ``models`` (default: the bundled face models) at each thread count
    in ``threads`` (default 1 and 2), ``runs`` timed calls each, and with annotated test faces ``data`` each
    variant's NME there. int8 calibrates on ``calibration`` (default: each model's training data)."""
    ort = _onnxruntime("bench --latency")
    models, threads = list(models or LATENCY_MODELS), list(threads or [1, 2])
    predictor = dlib_predictor()
    photos = None
    if not isinstance(predictor, str):
        try:
            photos = dlib_photos(data)
        except UserError as e:  # e.g. faces of another layout: the dlib row says why it is missing
            predictor = str(e)
    dlib = (predictor, photos[0], photos[1]) if photos is not None else None
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as d:
        prepared = [_prepare(m, Path(d) / str(i), data, calibration) for i, m in enumerate(models)]
        rows, variants = [], {}
        try:
            for t in threads:
                block, variants = _timing_block(prepared, t, runs, rounds, dlib)
                rows += block
        finally:
            torch.set_num_threads(before)
        if dlib is None:
            rows.append({"model": "dlib", "variant": "shape-predictor", "error": predictor})
        accuracy = _accuracy(prepared, variants, dlib, photos) if data is not None else {}
    return {"machine": {**machine(), "onnxruntime": ort.__version__, "load_average": list(os.getloadavg())},
            "ort_default_level": str(ort.SessionOptions().graph_optimization_level).split(".")[-1],
            "runs": runs, "rounds": rounds, "threads": threads, "batch": 1, "data": data,
            "timing_input": "the first test face" if data else "a random image",
            "models": {p.name: {"input": list(p.cfg.model.input_size), "int8": p.int8_error or "static and dynamic",
                                "what": {v.name: v.what for (m, _), v in variants.items() if m == p.name}}
                       for p in prepared},
            "dlib": "68-point shape predictor, single-threaded, from a box" if dlib else predictor,
            "rows": rows, "accuracy": accuracy}


def _accuracy(prepared: list[_Model], variants: dict[tuple[str, str], Variant], dlib: tuple | None,
              photos: tuple | None) -> dict:
    """NME on the test faces of every variant (and dlib), and each int8 variant's change against float32."""
    out: dict[str, dict] = {}
    for p in prepared:
        nme = {name: _nme(v.predict, p.test, p.cfg) for (m, name), v in variants.items() if m == p.name}
        out[p.name] = {name: {"nme": value, **_change(variants[(p.name, name)], nme)} for name, value in nme.items()}
    if dlib is not None and photos[2] is not None:
        pred = np.stack([dlib_call(dlib[0], im, b) for im, b in zip(photos[0], photos[1])])
        m = landmark_metrics(torch.from_numpy(pred), torch.from_numpy(photos[2]), (0, 0), "interocular",
                             SPECS["300w-68"])
        out["dlib"] = {"shape-predictor": {"nme": m["nme"]}}
    return out


def _change(v: Variant, nme: dict[str, float]) -> dict:
    """``{"reference", "nme_change"}`` of an int8 variant against its float32 twin (NME points, absolute)."""
    if v.reference is None or v.reference not in nme:
        return {}
    return {"reference": v.reference, "nme_change": nme[v.name] - nme[v.reference]}


def format_latency(res: dict) -> str:
    """The readable table: one row per model and variant, a column per thread count, NME where measured."""
    m = res["machine"]
    threads = res["threads"]
    lines = [f"{m['cpu']} ({', '.join(m['isa'])}; {m['cores']} cores), torch {m['torch']}, onnxruntime "
             f"{m['onnxruntime']} (default graph optimisation: {res['ort_default_level']}); load average "
             f"{m['load_average'][0]:.1f} at the end",
             f"ms per face: median of {res['runs']} calls, batch 1, interleaved in {res['rounds']} rounds (p90 in the "
             "JSON); load ms: building the session" + ("; NME on the given faces, int8's change against float32 in "
                                                       "NME points" if res["accuracy"] else ""),
             f"{'model':<14}{'variant':<22}" + "".join(f"{f'{t} thr':>9}" for t in threads) + f"{'load ms':>9}"
             + (f"{'NME':>9}{'vs fp32':>10}" if res["accuracy"] else "")]
    by = {(r["model"], r["variant"], r["threads"]): r for r in res["rows"] if "error" not in r}
    seen = list(dict.fromkeys((r["model"], r["variant"]) for r in res["rows"] if "error" not in r))
    for model, variant in seen:
        ms = "".join(f"{by[(model, variant, t)]['median_ms']:>9.2f}" if (model, variant, t) in by else f"{'-':>9}"
                     for t in threads)
        session = by.get((model, variant, threads[0]), {}).get("session_ms")
        ms += f"{session:>9.1f}" if session is not None else f"{'':>9}"
        acc = res["accuracy"].get(model, {}).get(variant, {})
        extra = ""
        if res["accuracy"]:
            change = f"{acc['nme_change']:+.3f}" if "nme_change" in acc else ""
            extra = (f"{acc['nme']:>8.3f}%" if "nme" in acc else f"{'-':>9}") + f"{change:>10}"
        lines.append(f"{model:<14}{variant:<22}{ms}{extra}")
    lines += [f"{r['model']:<14}{r['variant']:<22}{r['error']}" for r in res["rows"] if "error" in r]
    for name, info in res["models"].items():
        if info["int8"] != "static and dynamic":
            lines.append(f"{name}: no int8 rows: {info['int8']}")
    return "\n".join(lines)
