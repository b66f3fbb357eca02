"""In-memory landmark datasets: plain tensors, no per-dataset classes, and the model's view of an image."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class Layouts:
    """How each training source's annotations follow from the model's ``K`` points (source 0: the main data).

    ``maps (S, K', K)``: source ``s``'s annotated points as linear combinations of the model's points (zero
    rows pad a shorter layout to ``K'``); ``flips (S, K')`` long: its mirror permutation (the identity on
    padding); ``weights (S,)``: the landmark-loss weight of each of its points."""

    maps: Tensor
    flips: Tensor
    weights: Tensor

    def to(self, device) -> Layouts:
        return Layouts(self.maps.to(device), self.flips.to(device), self.weights.to(device))


@dataclass
class LandmarkData:
    """A set of images with (possibly missing) landmarks and named attributes.

    ``images (N, C, H, W)`` uint8; ``landmarks (N, K, 2)`` float32 ``(x, y)`` input pixels, NaN where
    unknown; ``attributes``: name -> ``(N,)`` long (class, ``-1`` missing) or ``(N, D)`` float (regression,
    NaN missing); ``kinds``: name -> ``"class"`` | ``"regression"``.
    """

    images: Tensor
    landmarks: Tensor
    attributes: dict[str, Tensor] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    from_source: Tensor | None = None  # (N, 3, 3): source-image pixels -> input pixels (crops), if any
    names: list[str] | None = None  # where each sample comes from (file and line), for per-image figures
    # training data mixed from several sources (data.extra_sources): (N,) long, each row's source, whose
    # layout in ``layouts`` says how its landmarks (N, K', 2) follow from the model's K points; None: all
    # rows are in the model's layout
    source: Tensor | None = None
    layouts: Layouts | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def landmark_mask(self) -> Tensor:
        """``(N, K)`` bool: the landmark is known."""
        return ~torch.isnan(self.landmarks).any(-1)

    def subset(self, index: Tensor) -> LandmarkData:
        return replace(
            self,
            images=self.images[index],
            landmarks=self.landmarks[index],
            attributes={k: v[index] for k, v in self.attributes.items()},
            from_source=None if self.from_source is None else self.from_source[index],
            names=None if self.names is None else _pick(self.names, index),
            source=None if self.source is None else self.source[index],
        )

    def to(self, device) -> LandmarkData:
        return replace(
            self,
            images=self.images.to(device),
            landmarks=self.landmarks.to(device),
            attributes={k: v.to(device) for k, v in self.attributes.items()},
            source=None if self.source is None else self.source.to(device),
            layouts=None if self.layouts is None else self.layouts.to(device),
        )

    def without_landmarks(self, keep: Tensor) -> LandmarkData:
        """Copy where only images with ``keep (N,)`` true retain their landmarks."""
        lm = self.landmarks.clone()
        lm[~keep] = float("nan")
        return replace(self, landmarks=lm)


def _pick(items: list, index: Tensor) -> list:
    """``items`` indexed like a tensor's first axis by an index tensor (positions or a boolean mask)."""
    index = torch.as_tensor(index).cpu()
    if index.dtype == torch.bool:
        index = index.nonzero().reshape(-1)
    return [items[i] for i in index.reshape(-1).tolist()]


@dataclass
class Splits:
    train: LandmarkData  # full ground truth; fit() hides the landmarks outside the labelled fraction
    val: LandmarkData
    test: LandmarkData
    extra: tuple[LandmarkData, ...] = ()  # training faces of data.extra_sources, each in its own layout


def to_input(images: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float in ``[0, 1]`` (float input is passed through)."""
    return images.float().div_(255.0) if not images.is_floating_point() else images
