"""Where each dataset comes from: a plain dict of synthetic generators, plus annotated files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sslandmarks.config import Config, SourceConfig
from sslandmarks.data.dataset import LandmarkData, Splits
from sslandmarks.data.detect import layout_frame
from sslandmarks.data.files import load_cropped
from sslandmarks.data.formats import DataError, Problems, read_annotations
from sslandmarks.data.synthetic import make_blocks, make_shapes
from sslandmarks.errors import UserError
from sslandmarks.specs import layout


@dataclass(frozen=True)
class Source:
    make: Callable[[int, int, str], LandmarkData]  # (n, seed, split) -> data
    normalizer: str  # the NME normaliser reported for this data (see metrics.NORMALIZERS)
    hidden_landmarks: bool = False  # landmarks are evaluation-only ground truth (Shapes)


SOURCES: dict[str, Source] = {
    "blocks": Source(make_blocks, normalizer="image_size"),
    "shapes": Source(make_shapes, normalizer="image_size", hidden_landmarks=True),
}
FILES = "files"  # data.name of annotated image files (data.format + paths)
FILES_NORMALIZER = "box_diagonal"


def hidden_landmarks(cfg: Config) -> bool:
    return cfg.data.name in SOURCES and SOURCES[cfg.data.name].hidden_landmarks


def check_landmark_count(path: str, k: int, cfg: Config, spec: str | None = None) -> None:
    """Annotations with ``k`` landmarks per sample must match the model's output (or, for an extra source
    annotated in layout ``spec``, that layout)."""
    if spec and spec != cfg.data.spec:
        if k != layout(spec).num_landmarks:
            raise DataError(f"{path}: {k} landmarks per sample, but layout {spec} has {layout(spec).num_landmarks}")
        return
    if k != cfg.model.num_landmarks:
        raise DataError(f"{path}: {k} landmarks per sample, but the model predicts {cfg.model.num_landmarks} "
                        "(use a checkpoint trained for this layout, or set model.num_landmarks)")


def normalizer(cfg: Config) -> str:
    """The NME normaliser: ``data.normalizer``, else the spec's default, else the dataset's."""
    if cfg.data.normalizer:
        return cfg.data.normalizer
    if layout(cfg.data.spec) is not None:
        return layout(cfg.data.spec).default_normalizer
    return SOURCES[cfg.data.name].normalizer if cfg.data.name in SOURCES else FILES_NORMALIZER


def class_counts(cfg: Config) -> dict[str, int]:
    return {h.name: h.classes for h in cfg.model.heads if h.kind == "class"}


def read_files(path: str | tuple[str, ...], cfg: Config, problems: Problems, fmt: str | None = None,
               keep: tuple[str, ...] = (), progress: bool = False) -> LandmarkData:
    """Annotated files at ``path`` (one or several) read, validated against the model config and cropped;
    with ``keep``, only samples whose ``data.split_column`` value is listed. Attributes that no model head
    reads (an id, COCO's category) are dropped."""
    paths = (path,) if isinstance(path, str) else path
    samples = [s for p in paths for s in read_annotations(p, fmt or cfg.data.format, problems)]
    path = ", ".join(paths)
    if keep:
        column = cfg.data.split_column
        samples = [s for s in samples if str(s.attributes.get(column)) in keep]
        if not samples:
            raise DataError(f"{path}: no sample has {column} in {', '.join(keep)}")
    check_landmark_count(path, len(samples[0].landmarks), cfg)
    return _cropped(samples, path, cfg, problems, {h.name for h in cfg.model.heads}, progress)


def _cropped(samples: list, path: str, cfg: Config, problems: Problems, heads: set[str], progress: bool,
             frame: tuple[float, float, float] | None = None) -> LandmarkData:
    """``samples`` cropped to the model's input (attributes of ``heads`` kept, class labels checked)."""
    m = cfg.model
    names = {h.name: h.labels for h in m.heads if h.kind == "class" and h.labels}
    data = load_cropped(samples, m.input_size, m.in_channels, cfg.data.crop_margin, problems, class_counts(cfg), names,
                        heads=heads, progress=progress, frame=frame)
    if len(data) == 0:
        raise DataError(f"{path}: no usable samples ({len(problems.items)} skipped)")
    return data


def read_source(src: SourceConfig, cfg: Config, problems: Problems, progress: bool = False) -> LandmarkData:
    """The training faces of an extra source (``data.extra_sources``) in its own layout, cropped like the main
    data's faces: from the landmark box that the main layout would have (:func:`detect.layout_frame`), with
    ``data.crop_margin``. Only the attributes the source lists are kept."""
    samples = [s for p in src.train_path for s in read_annotations(p, src.format, problems)]
    path = ", ".join(src.train_path)
    if not samples:
        raise DataError(f"{path}: no samples")
    check_landmark_count(path, len(samples[0].landmarks), cfg, src.spec or cfg.data.spec)
    frame = layout_frame(src.spec or cfg.data.spec, cfg.data.spec)
    return _cropped(samples, path, cfg, problems, set(src.attributes), progress, frame)


def load_splits(cfg: Config, problems: Problems | None = None, extra: bool = True) -> Splits:
    """Train, validation and test data of ``cfg.data`` (bad samples reported to ``problems``), and with
    ``extra`` the training faces of ``data.extra_sources``."""
    d = cfg.data
    if d.name == FILES:
        problems = problems or Problems()
        if not d.train_path or not d.test_path or not d.format:
            raise UserError("data.name=files needs data.format, data.train_path and data.test_path")
        train = read_files(d.train_path, cfg, problems, keep=d.train_values)
        if d.val_path:
            val = read_files(d.val_path, cfg, problems, keep=d.val_values)
        else:  # hold out a share of the training files, fixed by the data seed
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(d.seed))
            n_val = max(1, round(d.val_fraction * len(train)))
            train, val = train.subset(perm[n_val:]), train.subset(perm[:n_val])
        test = read_files(d.test_path, cfg, problems, keep=d.test_values)
        more = tuple(read_source(s, cfg, problems) for s in d.extra_sources) if extra else ()
        return Splits(train=train, val=val, test=test, extra=more)
    if d.name not in SOURCES:
        raise UserError(f"data.name={d.name!r} is unknown: use one of {', '.join([*SOURCES, FILES])}")
    src = SOURCES[d.name]
    return Splits(
        train=src.make(d.n_train, d.seed, "train"),
        val=src.make(d.n_val, d.seed, "val"),
        test=src.make(d.n_test, d.seed, "test"),
    )
