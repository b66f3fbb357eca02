"""Labelled fractions and the mixed labelled/unlabelled batch stream."""

from __future__ import annotations

import torch
from torch import Tensor

from sslandmarks.config import Config, variant_terms
from sslandmarks.data.dataset import LandmarkData


def labelled_subset(classes: Tensor | None, n: int, pct: float, seed: int) -> Tensor:
    """``(n,)`` bool mask of the images that keep their landmarks.

    ``round(pct % * n)`` images (at least one), spread over the classes in proportion to their sizes
    (class-balanced, as in the paper), chosen deterministically from ``seed``.
    """
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    total = max(1, round(n * pct / 100.0))
    if total >= n:
        return torch.ones(n, dtype=torch.bool)
    groups = [torch.arange(n)] if classes is None else [
        torch.nonzero(classes == c).flatten() for c in torch.unique(classes[classes >= 0])
    ]
    # Largest-remainder allocation of `total` over the groups.
    sizes = torch.tensor([len(ix) for ix in groups], dtype=torch.float64)
    quota = sizes * total / sizes.sum()
    take = quota.floor().long()
    for i in torch.argsort(quota - take, descending=True)[: total - int(take.sum())]:
        take[i] += 1
    mask = torch.zeros(n, dtype=torch.bool)
    for ix, k in zip(groups, take.tolist()):
        mask[ix[torch.randperm(len(ix), generator=g)[:k]]] = True
    return mask


def semi_supervised(train: LandmarkData, cfg: Config) -> LandmarkData:
    """Keep the landmarks of a class-balanced ``labelled_pct`` % of ``train`` (none for variants without L)."""
    n = len(train)
    if "L" not in variant_terms(cfg.loss.variant):
        return train.without_landmarks(torch.zeros(n, dtype=torch.bool))
    classes = next((v for k, v in train.attributes.items() if train.kinds[k] == "class"), None)
    keep = labelled_subset(classes, n, cfg.data.labelled_pct, cfg.train.seed)
    return train.without_landmarks(keep & train.landmark_mask.any(-1))


class IndexStream:
    """Endless shuffled indices drawn in fixed-size batches, reshuffled each pass.

    The position is a pure function of ``(seed, step)``, so a resumed run draws the same batches.
    """

    def __init__(self, indices: Tensor, batch: int, seed: int) -> None:
        self.indices = indices
        self.batch = batch
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def _perm(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return torch.randperm(len(self.indices), generator=g)

    def batch_at(self, step: int) -> Tensor:
        """Indices of batch number ``step`` (empty when the stream is empty)."""
        n = len(self.indices)
        if n == 0 or self.batch == 0:
            return self.indices[:0]
        pos, need, parts = step * self.batch, self.batch, []
        while need > 0:  # a batch may straddle passes, or span several when n < batch
            epoch, offset = divmod(pos, n)
            chunk = self._perm(epoch)[offset : offset + need]
            parts.append(chunk)
            need -= len(chunk)
            pos += len(chunk)
        return self.indices[torch.cat(parts)]
