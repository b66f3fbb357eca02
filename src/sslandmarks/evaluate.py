"""``evaluate``: score a checkpoint on annotated files (cropped from the landmarks or from the face
detector's box) or on its own synthetic test set: pixel error, NME, per-landmark error, attribute accuracy."""

from __future__ import annotations

from pathlib import Path

from sslandmarks.api import load
from sslandmarks.data.detect import detector_crops
from sslandmarks.data.formats import Problems, read_annotations
from sslandmarks.data.sources import FILES_NORMALIZER, SOURCES, check_landmark_count, read_files
from sslandmarks.errors import UserError
from sslandmarks.inference import evaluate_data
from sslandmarks.specs import layout


def guess_format(path: str) -> str:
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return "csv"
    if p.suffix.lower() == ".txt":
        return "mtfl"
    if p.suffix.lower() == ".json":
        return "coco"
    if p.suffix.lower() == ".ljson" or (p.is_dir() and any(p.glob("*.ljson")) and not any(p.glob("*.pts"))):
        return "ljson"
    return "pts"


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | None = None, split: str = "test", fmt: str | None = None,
    skip_bad: bool = False, detector: str | None = None, progress: bool = False, threads: int | None = None,
    device: str = "cpu",
) -> dict:
    """Metrics of a checkpoint on ``data``: annotated files (``fmt`` pts | mtfl | csv, guessed from the
    path when omitted; each face cropped from its ground-truth landmark box, or with ``detector="dlib"``
    from the face detector's box as ``predict`` does, missed faces listed under ``detector.missed``) or,
    by default, the test ``split`` of the checkpoint's own synthetic dataset. Skipped samples are listed
    under ``skipped``; with names, ``per_image_file`` beside ``per_image_nme``. ``threads``: torch's intra-op
    threads (one is the fastest on a busy machine); ``progress``: progress bars on stderr."""
    landmarker = load(checkpoint, device=device, threads=threads)  # the public API's model: names, threads, device
    model, cfg = landmarker.model, landmarker.cfg
    if detector is not None and (data is None or data in SOURCES or cfg.data.name != "files"):
        raise UserError("--detector applies to models trained on face crops, scored on annotated photos (--data)")
    if data is not None and data not in SOURCES:
        problems = Problems(skip_bad)
        spec = layout(cfg.data.spec)
        default = spec.default_normalizer if spec is not None else FILES_NORMALIZER
        if detector is None:
            files = read_files(data, cfg, problems, fmt or guess_format(data), progress=progress)
            metrics = evaluate_data(model, files, cfg, norm=cfg.data.normalizer or default)
            return {**metrics, "skipped": problems.items}
        samples = read_annotations(data, fmt or guess_format(data), problems)
        m = cfg.model
        if samples:
            check_landmark_count(data, len(samples[0].landmarks), cfg)
        crops, missed = detector_crops(samples, m.input_size, m.in_channels, cfg.data.crop_margin, cfg.data.spec,
                                       progress=progress, problems=problems)
        metrics = evaluate_data(model, crops, cfg, norm=cfg.data.normalizer or default)
        return {**metrics, "detector": {"name": "dlib-hog", "faces": len(samples), "found": len(crops),
                                        "missed": missed}, "skipped": problems.items}
    name = data or cfg.data.name
    if name != cfg.data.name:
        raise UserError(f"--data {name!r}: the checkpoint was trained on {cfg.data.name!r}")
    if name not in SOURCES:
        raise UserError("the checkpoint was trained on files: pass --data PATH (and --format)")
    d = cfg.data
    size = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
    return evaluate_data(model, SOURCES[name].make(size, d.seed, split), cfg)
