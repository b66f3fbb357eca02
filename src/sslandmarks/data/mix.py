"""Training faces from several sources with different landmark layouts, as one set that batches mix.

The model predicts the main layout's ``K`` points (``data.spec``). A face annotated in another layout (MTFL's
5 points) is supervised through a fixed linear map of the predicted points (:func:`specs.point_map`), so it
constrains exactly the points its annotation determines; its landmarks are stored in its own layout,
padded with NaN to the longest one, and each row records its source.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sslandmarks.config import Config, variant_terms
from sslandmarks.data.dataset import LandmarkData, Layouts
from sslandmarks.specs import layout, point_map


def mix_sources(main: LandmarkData, extra: Sequence[LandmarkData], cfg: Config) -> LandmarkData:
    """``main`` (the main training data, its labelled fraction already chosen) followed by ``extra[i]``, the
    faces of ``data.extra_sources[i]`` in that source's layout, as one :class:`LandmarkData` with ``source
    (N,)`` (0: main, ``i + 1``: extra source ``i``) and ``layouts``. A source with ``labelled: false``, or any
    source under a variant without L, keeps no landmarks; a head that a source does not label reads -1
    (class) or NaN (regression) for its faces. Returns ``main`` itself when there is no extra source."""
    sources = cfg.data.extra_sources
    if len(extra) != len(sources):
        raise ValueError(f"{len(extra)} extra training sets for {len(sources)} data.extra_sources")
    if not sources:
        return main
    learn = "L" in variant_terms(cfg.loss.variant)
    parts = [main, *(x if s.labelled and learn else x.without_landmarks(torch.zeros(len(x), dtype=torch.bool))
                     for x, s in zip(extra, sources))]
    width = max(p.landmarks.shape[1] for p in parts)
    specs = [cfg.data.spec, *(s.spec or cfg.data.spec for s in sources)]
    layouts = Layouts(
        maps=torch.stack([_padded_map(cfg.data.spec, spec, cfg.model.num_landmarks, width) for spec in specs]),
        flips=torch.stack([_padded_flip(spec, width) for spec in specs]),
        weights=torch.tensor([1.0, *(s.weight for s in sources)]),
    )
    from_source = [p.from_source for p in parts]
    return LandmarkData(
        images=torch.cat([p.images for p in parts]),
        landmarks=torch.cat([_pad(p.landmarks, width) for p in parts]),
        **_merged_attributes(parts),
        from_source=None if any(t is None for t in from_source) else torch.cat(from_source),
        names=None if any(p.names is None for p in parts) else [n for p in parts for n in p.names],
        source=torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)]),
        layouts=layouts,
    )


def _pad(points: Tensor, width: int) -> Tensor:
    """``(N, K, 2)`` -> ``(N, width, 2)``, NaN (unknown) after the first ``K`` points."""
    extra = points.new_full((points.shape[0], width - points.shape[1], 2), float("nan"))
    return torch.cat([points, extra], 1)


def _padded_map(model: str, annotated: str, k: int, width: int) -> Tensor:
    """:func:`specs.point_map` ``(K', K)`` padded with zero rows to ``(width, K)``, float32."""
    m = torch.zeros(width, k)
    pm = torch.from_numpy(point_map(model, annotated, k)).float()
    m[: pm.shape[0]] = pm
    return m


def _padded_flip(spec: str, width: int) -> Tensor:
    """The mirror permutation of layout ``spec`` (the identity where it has none, and on the padding)."""
    perm = list(range(width))
    flip = layout(spec).flip if layout(spec) is not None else None
    if flip is not None:
        perm[: len(flip)] = flip
    return torch.tensor(perm)


def _merged_attributes(parts: list[LandmarkData]) -> dict:
    """``attributes`` and ``kinds`` over all parts: each head's labels, missing (-1 or NaN) where a part has none."""
    kinds = {k: v for p in parts for k, v in p.kinds.items()}
    attributes = {}
    for name, kind in kinds.items():
        shape = next(p.attributes[name].shape[1:] for p in parts if name in p.attributes)
        attributes[name] = torch.cat([
            p.attributes[name] if name in p.attributes
            else torch.full((len(p), *shape), -1 if kind == "class" else float("nan"),
                            dtype=torch.long if kind == "class" else torch.float32)
            for p in parts])
    return {"attributes": attributes, "kinds": kinds}
