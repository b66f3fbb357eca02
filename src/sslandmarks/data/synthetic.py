"""The paper's toy datasets, generated on the fly and deterministic by seed.

*Shapes* (Sec. 4.1): a white triangle and a white square of random size, position and orientation on
black, 60x60. Class ``nearer``: 0 if the triangle is nearer the upper-left corner, 1 if the square is.
The two shape centres (triangle, square) are hidden ground truth, used for evaluation only.

*Blocks* (Sec. 4.2): 15 base figures, each a chain of five white squares with a white triangle at its
head, drawn with a random scale, translation and rotation (0-360 degrees). The figures are the 15
self-avoiding lattice chains listed in :data:`BLOCK_FIGURES`: no two are rotations of each other, even
when only the triangle and first four squares are compared (so the class can be told from the
landmarks), and no two blocks that are not neighbours in the chain touch (so the order is visible). The 5
landmarks are, in order from the head, the centroid of the triangle and the centres of the first four
squares.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sslandmarks.data.dataset import LandmarkData
from sslandmarks.data.raster import fill_convex

SIZE = 60
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def _rng(seed: int, split: str, salt: int) -> np.random.Generator:
    if split not in SPLIT_INDEX:
        raise ValueError(f"unknown split {split!r}: use train, val or test")
    return np.random.default_rng([seed, SPLIT_INDEX[split], salt])


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _regular_polygon(n: int, centre: np.ndarray, radius: float, theta: float) -> np.ndarray:
    a = theta + 2 * math.pi * np.arange(n) / n
    return centre + radius * np.stack([np.cos(a), np.sin(a)], 1)


# ----------------------------------------------------------------------------- Shapes

def make_shapes(n: int, seed: int = 0, split: str = "train") -> LandmarkData:
    """``n`` Shapes images; landmarks ``(n, 2, 2)`` = (triangle centre, square centre)."""
    rng = _rng(seed, split, salt=1)
    images = np.zeros((n, SIZE, SIZE), np.float32)
    centres = np.zeros((n, 2, 2), np.float32)
    labels = np.zeros(n, np.int64)
    for i in range(n):
        r = rng.uniform(6.0, 10.0, size=2)  # circumradius of triangle and square
        while True:
            c = np.stack([rng.uniform(r[j] + 1, SIZE - 1.5 - r[j], size=2) for j in range(2)])
            if np.linalg.norm(c[0] - c[1]) > r.sum() + 2:
                break
        fill_convex(images[i], _regular_polygon(3, c[0], r[0], rng.uniform(0, 2 * math.pi)))
        fill_convex(images[i], _regular_polygon(4, c[1], r[1], rng.uniform(0, 2 * math.pi)))
        centres[i] = c
        corner = np.array([-0.5, -0.5])
        labels[i] = int(np.linalg.norm(c[1] - corner) < np.linalg.norm(c[0] - corner))
    return LandmarkData(
        images=torch.from_numpy(np.round(images * 255).astype(np.uint8))[:, None],
        landmarks=torch.from_numpy(centres),
        attributes={"nearer": torch.from_numpy(labels)},
        kinds={"nearer": "class"},
    )


# ----------------------------------------------------------------------------- Blocks

def _chains(length: int) -> list[tuple[tuple[int, int], ...]]:
    """All lattice chains of ``length`` cells starting ``(0,0) -> (1,0)`` (one per rotation class)
    in which only consecutive cells touch."""
    out = []

    def grow(chain: list[tuple[int, int]]) -> None:
        if len(chain) == length:
            out.append(tuple(chain))
            return
        x, y = chain[-1]
        for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1)):
            nxt = (x + dx, y + dy)
            if nxt in chain:
                continue
            touching = [c for c in chain[:-1] if abs(c[0] - nxt[0]) + abs(c[1] - nxt[1]) == 1]
            if not touching:
                grow(chain + [nxt])

    grow([(0, 0), (1, 0)])
    return out


def _pick_figures(count: int = 15) -> tuple[tuple[tuple[int, int], ...], ...]:
    """``count`` chains of 6 cells (triangle + 5 squares) whose first five cells all differ.

    The landmarks cover only the triangle and the first four squares, so distinct five-cell prefixes
    make the class a function of the landmarks (what Seq-MT's attribute MLP sees). Of the 17 possible
    prefixes, ``count`` are taken spread over a fixed order, each with its first completion."""
    chains = sorted(_chains(6), key=lambda c: (max(abs(x) for x, _ in c) + max(abs(y) for _, y in c), c))
    by_prefix: dict[tuple, tuple] = {}
    for c in chains:
        by_prefix.setdefault(c[:5], c)
    firsts = list(by_prefix.values())
    step = len(firsts) / count
    return tuple(firsts[int(i * step)] for i in range(count))


BLOCK_FIGURES = _pick_figures()
NUM_BLOCK_CLASSES = len(BLOCK_FIGURES)
_GAP = 0.8  # squares are drawn at 80 % of the cell so that the blocks stay apart


def _figure_parts(cells: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Polygons (cell units) of a figure and its 5 landmarks. ``cells (6, 2)``, cell 0 = triangle."""
    h = _GAP / 2
    head = cells[0] - cells[1]  # unit vector in which the triangle points
    side = np.array([-head[1], head[0]])
    base = cells[0] - h * head
    tri = np.stack([base + h * side, cells[0] + h * head, base - h * side])
    squares = [c + h * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) for c in cells[1:]]
    landmarks = np.concatenate([tri.mean(0, keepdims=True), cells[1:5]])
    return [tri, *squares], landmarks


def make_blocks(n: int, seed: int = 0, split: str = "train") -> LandmarkData:
    """``n`` Blocks images, classes balanced in expectation; landmarks ``(n, 5, 2)``."""
    rng = _rng(seed, split, salt=2)
    images = np.zeros((n, SIZE, SIZE), np.float32)
    landmarks = np.zeros((n, 5, 2), np.float32)
    labels = rng.integers(0, NUM_BLOCK_CLASSES, size=n)
    for i in range(n):
        cells = np.asarray(BLOCK_FIGURES[labels[i]], dtype=np.float64)
        polys, lms = _figure_parts(cells - cells.mean(0))
        rot = _rot(rng.uniform(0, 2 * math.pi))
        pts = np.concatenate(polys)
        scale = rng.uniform(5.5, 8.0)
        while True:  # shrink until the rotated figure fits with a 1-pixel margin
            q = pts @ rot.T * scale
            lo, hi = q.min(0), q.max(0)
            if (hi - lo).max() <= SIZE - 3:
                break
            scale *= 0.95
        shift = np.array([rng.uniform(0.5 - lo[j], SIZE - 1.5 - hi[j]) for j in range(2)])
        for poly in polys:
            fill_convex(images[i], poly @ rot.T * scale + shift)
        landmarks[i] = lms @ rot.T * scale + shift
    return LandmarkData(
        images=torch.from_numpy(np.round(images * 255).astype(np.uint8))[:, None],
        landmarks=torch.from_numpy(landmarks),
        attributes={"class": torch.from_numpy(labels.astype(np.int64))},
        kinds={"class": "class"},
    )


def block_figure_canvases(scale: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """The 15 base figures of Blocks, upright and centred at cell size ``scale``: ``canvases (15, 60, 60)``
    float in [0, 1] and their 5 landmarks ``(15, 5, 2)`` (for the class chart of the README)."""
    canvases = np.zeros((NUM_BLOCK_CLASSES, SIZE, SIZE), np.float32)
    landmarks = np.zeros((NUM_BLOCK_CLASSES, 5, 2))
    for c, figure in enumerate(BLOCK_FIGURES):
        cells = np.asarray(figure, dtype=float)
        polys, lms = _figure_parts(cells - cells.mean(0))
        for p in polys:
            fill_convex(canvases[c], p * scale + (SIZE - 1) / 2)
        landmarks[c] = lms * scale + (SIZE - 1) / 2
    return canvases, landmarks


GENERATORS = {"shapes": make_shapes, "blocks": make_blocks}
