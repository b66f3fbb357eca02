"""Landmark layouts: names, the flip permutation, and the point indices each normaliser needs.

Datasets differ only by a parser and a spec. Indices are 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sslandmarks.errors import UserError


@dataclass(frozen=True)
class LandmarkSpec:
    name: str
    num_landmarks: int
    flip: tuple[int, ...] | None  # landmark k becomes flip[k] after a horizontal mirror; None: no flipping
    normalizers: dict[str, tuple] = field(default_factory=dict)  # normaliser -> point indices (or groups)
    default_normalizer: str = "box_diagonal"

    def __post_init__(self) -> None:
        if self.flip is not None:
            assert sorted(self.flip) == list(range(self.num_landmarks)), f"{self.name}: flip is not a permutation"


def _pairs_to_perm(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


_300W_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw
    + [(17 + i, 26 - i) for i in range(5)]  # eyebrows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    + [(60, 64), (61, 63), (65, 67)]  # inner lips
)

SPECS: dict[str, LandmarkSpec] = {
    "300w-68": LandmarkSpec(
        "300w-68", 68, _pairs_to_perm(68, _300W_PAIRS),
        {"interocular": (36, 45), "interpupil": (tuple(range(36, 42)), tuple(range(42, 48)))}, "interocular",
    ),
    # left eye, right eye, nose, left mouth corner, right mouth corner
    "mtfl-5": LandmarkSpec("mtfl-5", 5, (1, 0, 2, 4, 3), {"eye_centres": (0, 1)}, "eye_centres"),
    # AFLW's 19 points: 6 brow points, 6 eye points, 3 nose, 3 mouth, chin (AFLW-Full layout)
    "aflw-19": LandmarkSpec(
        "aflw-19", 19, (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18),
        {"eye_centres": ((6, 7, 8), (9, 10, 11))}, "box_diagonal",
    ),
    # Hands: a mirror turns a right hand into a left one and every point keeps its name (both hands are numbered
    # alike), so their flip permutation is the identity. HGR1's 25 human-annotated points:
    "hgr1-25": LandmarkSpec("hgr1-25", 25, tuple(range(25)), {}, "box_diagonal"),
    # MediaPipe Hands' 21 points: 0 wrist, thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20
    "hand-21": LandmarkSpec("hand-21", 21, tuple(range(21)), {"palm_width": (5, 17)}, "palm_width"),
}


def layout(name: str) -> LandmarkSpec | None:
    """The spec named by ``data.spec`` (None for an empty name: synthetic or generic data)."""
    if not name:
        return None
    if name not in SPECS:
        raise UserError(f"data.spec={name!r} is unknown: use one of {', '.join(SPECS)}")
    return SPECS[name]


def flip_permutation(name: str, setting: str) -> tuple[int, ...]:
    """The mirror permutation of layout ``name``, which ``setting`` (a config key that mirrors images) needs."""
    spec = layout(name)
    if spec is None or spec.flip is None:
        raise UserError(f"{setting} needs a data.spec with a flip permutation ({name or 'none given'} "
                        f"has none): turn {setting} off")
    return spec.flip


def mirror_perm(name: str, test_flip: bool) -> tuple[int, ...] | None:
    """The permutation for test-time mirroring (``data.test_flip``) of layout ``name``, else None."""
    return flip_permutation(name, "data.test_flip") if test_flip else None


# (model layout, annotation layout) -> each annotated point as the mean of these model points: a layout the
# model's points determine, so that faces annotated in it supervise the model through a fixed linear map
POINT_MAPS: dict[tuple[str, str], tuple[tuple[int, ...], ...]] = {
    # MTFL's eye centres are the means of the eye contours (300-W points 37-42 and 43-48, 1-based), then the
    # nose tip (31) and the mouth corners (49, 55)
    ("300w-68", "mtfl-5"): (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,)),
}


def point_map(model: str, annotated: str, num_landmarks: int):
    """``(K', K)`` numpy matrix ``M`` with ``annotated_points = M @ model_points`` for points ``(K, 2)`` of
    layout ``model`` (``K = num_landmarks``): the identity when both layouts are the same, else the means
    of :data:`POINT_MAPS`. Raises :class:`UserError` for layouts the model's points do not determine."""
    import numpy as np

    if model == annotated:
        return np.eye(num_landmarks)
    if (model, annotated) not in POINT_MAPS:
        raise UserError(f"layout {model or 'none'} does not determine the points of {annotated or 'none'}")
    groups = POINT_MAPS[(model, annotated)]
    m = np.zeros((len(groups), num_landmarks))
    for row, group in enumerate(groups):
        m[row, list(group)] = 1.0 / len(group)
    return m


def mtfl5_from_300w68(points):
    """MTFL's 5 points (eye centres, nose tip, mouth corners) from a 300-W 68-point annotation ``(68, 2)``
    numpy array: the eye centres are the means of the eye contours (points 37-42 and 43-48, 1-based)."""
    import numpy as np

    m = point_map("300w-68", "mtfl-5", 68)
    points = np.asarray(points, dtype=np.float64)
    missing = np.isnan(points).any(-1)  # a missing point leaves NaN only in the points made from it
    out = m @ np.nan_to_num(points)
    out[(m[:, missing] > 0).any(1)] = np.nan
    return out
