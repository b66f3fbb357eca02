"""Boxes that a user gives: ``(x0, y0, x1, y1)`` = ``(left, top, right, bottom)`` in pixels of the image as
displayed (the coordinates of the landmarks, :mod:`sslandmarks.coords`; the whole image is ``(0, 0, W, H)``, as
:meth:`~sslandmarks.api.Landmarker.predict` reports it).

Parsed and checked here, before any model is loaded: ``--box x0,y0,x1,y1`` and ``--boxes FILE.json``
(``{"image name": [[x0, y0, x1, y1], ...], ...}``, a name being the path as given or its basename). Every
problem is a one-line :class:`~sslandmarks.errors.UserError` naming the argument (or file) and the box.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path

from sslandmarks.errors import UserError

Box = tuple[float, float, float, float]  # (left, top, right, bottom) in image pixels

SHAPE = "[x0, y0, x1, y1] with x1 > x0 and y1 > y0"


def check_box(values, what: str = "box", shown: str | None = None) -> Box:
    """``values`` (4 finite numbers, ``x1 > x0``, ``y1 > y0``: a list, a tuple, a numpy row) as a :data:`Box`;
    errors name it as ``what`` followed by ``shown`` (default: the values)."""
    if hasattr(values, "tolist"):  # a numpy array
        values = values.tolist()
    if shown is None:
        shown = json.dumps(list(values) if isinstance(values, tuple) else values, default=str)[:80]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) != 4:
        raise UserError(f"{what} {shown}: give 4 numbers {SHAPE}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise UserError(f"{what} {shown}: give 4 numbers {SHAPE}")
    box = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in box):
        raise UserError(f"{what} {shown}: every coordinate must be a finite number")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"{what} {shown}: need x1 > x0 and y1 > y0 (left, top, right, bottom)")
    return box


def check_inside(box: Box, width: int, height: int, what: str = "box", image: str = "the image") -> Box:
    """``box`` unless it lies entirely outside a ``width x height`` image (a box partly outside is kept: the
    crop is padded with black)."""
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise UserError(f"{what} {_show(box)} lies entirely outside {image} ({width}x{height} pixels)")
    return box


def _show(box: Box) -> str:
    """``[10, 20.5, 30, 40]``: a box as JSON, whole numbers without a decimal point."""
    return json.dumps([int(v) if v.is_integer() else v for v in box])


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (``--box``) as a :data:`Box`."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--box {text!r}: give 4 comma-separated numbers x0,y0,x1,y1") from None
    if len(values) != 4:
        raise UserError(f"--box {text!r}: give 4 comma-separated numbers x0,y0,x1,y1, got {len(values)}")
    return check_box(values, "--box", repr(text))


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict; a name given twice is refused (``json`` would keep the last)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise UserError(f"{k!r} is given twice")
        out[k] = v
    return out


def read_boxes(path: str | Path) -> dict[str, list[Box]]:
    """``--boxes FILE.json``: ``{"name": [[x0, y0, x1, y1], ...]}`` with every box checked (an empty list: no
    object in that image)."""
    p = Path(path)
    try:
        table = json.loads(p.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except OSError as e:
        raise UserError(f"--boxes {p}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"--boxes {p}: not a JSON file (not UTF-8 text)") from None
    except ValueError as e:  # json.JSONDecodeError
        raise UserError(f"--boxes {p}: not valid JSON ({e})") from None
    except UserError as e:  # a name given twice
        raise UserError(f"--boxes {p}: {e}") from None
    if not isinstance(table, dict):
        raise UserError(f"--boxes {p}: give a JSON object {{\"image name\": [[x0, y0, x1, y1], ...]}}, "
                        f"not a {type(table).__name__}")
    out = {}
    for name, boxes in table.items():
        if not isinstance(boxes, list) or any(not isinstance(b, list) for b in boxes):
            raise UserError(f"--boxes {p}: {name!r} holds {json.dumps(boxes)[:60]}: give a list of boxes "
                            "[[x0, y0, x1, y1], ...] (one box too: [[x0, y0, x1, y1]])")
        out[name] = [check_box(b, f"--boxes {p}: {name!r}: box {i + 1}") for i, b in enumerate(boxes)]
    return out


def match_boxes(table: dict[str, list[Box]], paths: Sequence[Path], source: str) -> tuple[dict[Path, list[Box]],
                                                                                           list[str]]:
    """Each input's boxes from ``table``, whose names are paths as given (``photos/a.jpg``, compared after
    resolving) or basenames (``a.jpg``); and the names that match no input. A basename shared by two inputs,
    or an input named twice, is refused (``source`` names the file in errors)."""
    by_path = {p.resolve(): p for p in paths}
    found: dict[Path, list[Box]] = {}
    named: dict[Path, str] = {}
    unmatched = []
    for name, boxes in table.items():
        if Path(name).name == name:
            hits = [p for p in paths if p.name == name]
        else:
            hit = by_path.get(Path(name).resolve())
            hits = [hit] if hit is not None else []
        if len(hits) > 1:
            raise UserError(f"--boxes {source}: {name!r} names {len(hits)} inputs ({hits[0]}, {hits[1]}): "
                            "name them by their paths")
        if not hits:
            unmatched.append(name)
            continue
        if hits[0] in named:
            raise UserError(f"--boxes {source}: {hits[0]} is named twice ({named[hits[0]]!r} and {name!r})")
        named[hits[0]] = name
        found[hits[0]] = boxes
    return found, unmatched
