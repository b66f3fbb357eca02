"""``evaluate``: score a checkpoint on annotated files (cropped from the landmarks or from the face
detector's box) or on its own synthetic test set: pixel error, NME, per-landmark error, attribute accuracy."""

from __future__ import annotations

from pathlib import Path

import torch

from sslandmarks.api import load
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.detect import detector_crops
from sslandmarks.data.files import as_channels, crop_image, crop_transform, load_image
from sslandmarks.data.formats import DataError, Problems, read_annotations
from sslandmarks.data.sources import FILES, FILES_NORMALIZER, SOURCES, check_landmark_count, load_splits, read_files
from sslandmarks.errors import UserError
from sslandmarks.geometry import apply_points
from sslandmarks.inference import evaluate_data, in_source_pixels, mirror_perm, predict_all
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
    device: str = "cpu", refine: int | None = None,
) -> dict:
    """Metrics of a checkpoint on ``data``: annotated files (``fmt`` pts | mtfl | csv, guessed from the
    path when omitted; each face cropped from its ground-truth landmark box, or with ``detector="dlib"``
    from the face detector's box as ``predict`` does, missed faces listed under ``detector.missed``) or,
    by default, the ``split`` of the checkpoint's own data: its synthetic dataset, or for a model trained
    on files the same train / validation / test faces as in training (its config's paths, read from
    here). Skipped samples are listed under ``skipped``; with names, ``per_image_file`` beside
    ``per_image_nme``. ``threads``: torch's intra-op threads (one is the fastest on a busy machine);
    ``progress``: progress bars on stderr; ``refine``: with ``detector``, extra passes each cropped from the
    previous pass's landmarks, as ``predict`` runs (default: the model's, 1 for face models)."""
    landmarker = load(checkpoint, device=device, threads=threads, refine=refine)  # the public API's model
    model, cfg = landmarker.model, landmarker.cfg
    files = cfg.data.name == FILES
    if detector is not None and (data in SOURCES or not files or (data is None and split == "train")):
        raise UserError("--detector applies to models trained on face crops, scored on annotated photos (--data) "
                        "or on their own validation or test faces (--split val | test)")
    spec = layout(cfg.data.spec)
    norm = cfg.data.normalizer or (spec.default_normalizer if spec is not None else FILES_NORMALIZER)
    problems = Problems(skip_bad)
    if data is None and files:
        return _own_split(model, cfg, split, detector, problems, progress, norm, landmarker.refine)
    if data is not None and data not in SOURCES:
        if detector is None:
            cropped = read_files(data, cfg, problems, fmt or guess_format(data), progress=progress)
            return {**evaluate_data(model, cropped, cfg, norm=norm), "skipped": problems.items}
        samples = read_annotations(data, fmt or guess_format(data), problems)
        if samples:
            check_landmark_count(data, len(samples[0].landmarks), cfg)
        return _through_detector(model, cfg, samples, problems, progress, norm, landmarker.refine)
    name = data or cfg.data.name
    if name != cfg.data.name:
        raise UserError(f"--data {name!r}: the checkpoint was trained on {cfg.data.name!r}")
    d = cfg.data
    size = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
    return evaluate_data(model, SOURCES[name].make(size, d.seed, split), cfg)


def _through_detector(model, cfg, samples: list, problems: Problems, progress: bool, norm: str,
                      refine: int) -> dict:
    """Metrics of ``samples`` cropped from dlib's detector boxes, then ``refine`` times from the box of the
    previous pass's landmarks (as ``predict`` does), with the detector's tally."""
    m = cfg.model
    crops, missed = detector_crops(samples, m.input_size, m.in_channels, cfg.data.crop_margin, cfg.data.spec,
                                   progress=progress, problems=problems)
    by_name = {s.where or str(s.image): s for s in samples}
    for _ in range(refine):  # photo pixels: the previous pass's landmarks and the ground truth
        points, gt = in_source_pixels(predict_all(model, crops.images, flip_perm=mirror_perm(
            cfg.data.spec, cfg.data.test_flip))[0], crops)
        t = torch.stack([torch.from_numpy(crop_transform(p.numpy(), m.input_size, cfg.data.crop_margin)).float()
                         for p in points])
        images = [crop_image(as_channels(load_image(by_name[n], 3, problems), m.in_channels), ti, m.input_size)[0]
                  for n, ti in zip(crops.names, t)]
        crops = LandmarkData(torch.stack(images), apply_points(t, gt), from_source=t, names=crops.names)
    metrics = evaluate_data(model, crops, cfg, norm=norm)
    return {**metrics, "detector": {"name": "dlib-hog", "faces": len(samples), "found": len(crops),
                                    "missed": missed, "refine": refine}, "skipped": problems.items}


def _own_split(model, cfg, split: str, detector: str | None, problems: Problems, progress: bool, norm: str,
               refine: int) -> dict:
    """Metrics on the ``split`` faces of the files a checkpoint was trained on (validation: the same held-out
    faces as in training), cropped from the landmarks or, with ``detector``, from the detector's boxes."""
    d = cfg.data
    paths = (d.val_path or d.train_path) if split == "val" else d.test_path if split == "test" else d.train_path
    for path in (*d.train_path, *d.val_path, *d.test_path):  # every split is read (validation: held out of train)
        if not Path(path).exists():
            raise DataError(f"{path}: the checkpoint's training data is not here (its config's path, read from the "
                            "current folder): run from the folder it was trained in, or pass --data")
    part = getattr(load_splits(cfg, problems, extra=False), split)
    if detector is None:
        return {**evaluate_data(model, part, cfg, norm=norm), "skipped": problems.items}
    wanted = set(part.names or ())
    samples = [s for path in paths for s in read_annotations(path, d.format, problems)
               if (s.where or str(s.image)) in wanted]
    return _through_detector(model, cfg, samples, problems, progress, norm, refine)
