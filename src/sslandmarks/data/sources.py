"""Where each dataset comes from: a plain dict of name -> how to make its splits and how to score it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sslandmarks.config import Config
from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.synthetic import make_blocks, make_shapes
from sslandmarks.errors import UserError


@dataclass(frozen=True)
class Source:
    make: Callable[[int, int, str], LandmarkData]  # (n, seed, split) -> data
    normalizer: str  # the NME normaliser reported for this data (see metrics.NORMALIZERS)
    hidden_landmarks: bool = False  # landmarks are evaluation-only ground truth (Shapes)


SOURCES: dict[str, Source] = {
    "blocks": Source(make_blocks, normalizer="image_size"),
    "shapes": Source(make_shapes, normalizer="image_size", hidden_landmarks=True),
}


def source(name: str) -> Source:
    if name not in SOURCES:
        raise UserError(f"data.name={name!r} is unknown: use one of {', '.join(SOURCES)}")
    return SOURCES[name]


def load_splits(cfg: Config):
    """Train, validation and test data of ``cfg.data`` (generated deterministically from its seed)."""
    from sslandmarks.train import Splits

    d, src = cfg.data, source(cfg.data.name)
    return Splits(
        train=src.make(d.n_train, d.seed, "train"),
        val=src.make(d.n_val, d.seed, "val"),
        test=src.make(d.n_test, d.seed, "test"),
    )
