"""Readers for landmark annotations as they come, validated strictly.

Every reader returns :class:`Sample` records with landmarks in the convention of :mod:`coords`
(0-based pixel centres; iBUG ``.pts`` files are 1-based and converted here) and reports each problem
as a :class:`DataError` naming the file (and line) and the fix. With a :class:`Problems` collector in
``skip_bad`` mode, bad samples are skipped and listed instead.

Formats: ``pts`` (iBUG, a folder of ``.pts`` files beside their images, or one file), ``mtfl`` (MTFL
list files), ``csv`` (a manifest: ``image,x0,y0,x1,y1,...`` then optional attribute columns; empty
cells mark missing landmarks; paths relative to the manifest), ``ljson`` (menpo) and ``coco`` (COCO
keypoints JSON).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslandmarks.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


class DataError(UserError):
    """A bad file or sample; the message names it."""


@dataclass
class Sample:
    image: Path
    landmarks: np.ndarray  # (K, 2) float64, NaN where missing
    attributes: dict[str, float] = field(default_factory=dict)  # class labels are 0-based ints
    where: str = ""  # "file" or "file:line", for messages


@dataclass
class Problems:
    """Collects bad samples when ``skip_bad``; otherwise the first problem raises."""

    skip_bad: bool = False
    items: list[str] = field(default_factory=list)

    def report(self, message: str) -> None:
        if not self.skip_bad:
            raise DataError(message + " (or pass --skip-bad to skip bad samples)")
        self.items.append(message)


def files_under(root: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under the folder ``root`` whose name ends in one of ``suffixes`` (any case), sorted. Symlinked
    subfolders are followed; a folder reached twice (a symlink loop, or two links to one folder) is read once."""
    seen: set[str] = set()
    out = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        out += [Path(folder) / n for n in names if n.lower().endswith(suffixes)]
    return sorted(out)


def read_text(p: Path) -> str:
    """A text annotation file as UTF-8 (a byte-order mark is dropped; undecodable bytes become U+FFFD, which
    the readers then report where they matter)."""
    try:
        return p.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None


def _float(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: coordinate {text!r} is not finite (NaN or inf): fix or remove the point")
    return v


def read_pts(path: str | Path) -> np.ndarray:
    """One iBUG ``.pts`` file (with or without the ``version/n_points/{ }`` header) -> ``(K, 2)`` 0-based."""
    p = Path(path)
    text = read_text(p)
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln]
    if not lines:
        raise DataError(f"{p}: empty annotation file")
    declared = None
    points = []
    for i, ln in lines:
        low = ln.lower()
        if low.startswith("version") or ln in ("{", "}"):
            continue
        if low.startswith("n_points"):
            try:
                declared = int(ln.split(":")[1])
            except (IndexError, ValueError):
                raise DataError(f"{p}:{i}: bad header line {ln!r} (expected 'n_points: N')") from None
            continue
        parts = ln.split()
        if len(parts) != 2:
            raise DataError(f"{p}:{i}: expected 'x y', got {ln!r}")
        points.append([_float(parts[0], f"{p}:{i}"), _float(parts[1], f"{p}:{i}")])
    if not points:
        raise DataError(f"{p}: no points in the file")
    if declared is not None and declared != len(points):
        raise DataError(f"{p}: header says n_points: {declared} but the file has {len(points)} points")
    return np.asarray(points, dtype=np.float64) - 1.0  # iBUG is 1-based


def _image_beside(pts: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (pts.with_suffix(suffix), pts.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    return None


def _files_beside_images(path: str | Path, suffix: str, read, problems: Problems) -> list[Sample]:
    """Every ``*suffix`` annotation under ``path`` (or the one file) read with ``read``, paired with the
    image of the same stem."""
    p = Path(path)
    files = [p] if p.is_file() else files_under(p, (suffix,))
    if not files:
        raise DataError(f"{p}: no {suffix} files found (expected annotations beside their images)")
    out = []
    for f in files:
        image = _image_beside(f)
        if image is None:
            problems.report(f"{f}: no image with the same name ({'/'.join(IMAGE_SUFFIXES)})")
            continue
        try:
            out.append(Sample(image, read(f), where=str(f)))
        except DataError as e:
            problems.report(str(e))
    return out


def input_files(path: str | Path, fmt: str) -> list[Path]:
    """The files a reader of ``fmt`` takes from ``path``, for refusing an output that would replace one: the
    path itself, and for a folder of ``.pts``/``.ljson`` files (or one of them) the annotations and the
    images beside them. (Images listed inside a manifest are not included.)"""
    p = Path(path)
    suffix = {"pts": ".pts", "ljson": ".ljson"}.get(fmt)
    if suffix is None or not p.exists():
        return [p]
    annotations = [p] if p.is_file() else files_under(p, (suffix,))
    return [p, *annotations, *filter(None, map(_image_beside, annotations))]


def read_pts_folder(path: str | Path, problems: Problems) -> list[Sample]:
    """All iBUG ``*.pts`` under ``path`` (or the one file ``path``) with the image of the same stem."""
    return _files_beside_images(path, ".pts", read_pts, problems)


MTFL_ATTRIBUTES = {"gender": 2, "smile": 2, "glasses": 2, "pose": 5}  # 1-based in the file


def read_mtfl(path: str | Path, problems: Problems, root: str | Path | None = None) -> list[Sample]:
    """An MTFL list: ``path x1..x5 y1..y5 gender smile glasses pose`` (leading spaces, CRLF and
    backslashes as in the original release). Image paths are relative to ``root`` (default: the
    list's folder). Attributes become 0-based class labels."""
    p = Path(path)
    base = Path(root) if root is not None else p.parent
    text = read_text(p)
    out, seen = [], {}
    for i, raw in enumerate(text.splitlines(), start=1):
        ln = raw.strip()
        if not ln:
            continue
        where = f"{p}:{i}"
        parts = ln.split()
        if len(parts) not in (11, 15):
            problems.report(f"{where}: expected an image path, 10 coordinates and 4 attributes, "
                            f"got {len(parts)} fields")
            continue
        try:
            vals = [_float(v, where) for v in parts[1:11]]
            attrs = {}
            for (name, classes), v in zip(MTFL_ATTRIBUTES.items(), parts[11:]):
                label = int(_float(v, where))
                if not 1 <= label <= classes:
                    raise DataError(f"{where}: {name}={label} is out of range 1..{classes}")
                attrs[name] = label - 1
        except DataError as e:
            problems.report(str(e))
            continue
        rel = parts[0].replace("\\", "/")
        if rel in seen:
            problems.report(f"{where}: duplicate entry {rel!r} (first on line {seen[rel]})")
            continue
        seen[rel] = i
        lm = np.stack([vals[:5], vals[5:]], axis=1)
        out.append(Sample(base / rel, lm, attrs, where))
    if not out and not problems.items:
        raise DataError(f"{p}: empty list file")
    return out


def read_csv_manifest(path: str | Path, problems: Problems) -> list[Sample]:
    """A CSV manifest with a header naming an ``image`` column and ``x0,y0,...,x{K-1},y{K-1}`` (in any
    order, e.g. ``image,x0,y0,x1,y1,gesture`` or ``image,gesture,subject,x0,y0,...``).

    Empty coordinate cells mark a missing landmark. Every other column is an attribute: integer class
    labels (0-based) or class names (mapped through the head's ``labels``), real values for names ending
    in ``_reg``; empty means missing."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{p}: not a text CSV file ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{p}: empty manifest (expected a header 'image,x0,y0,...')")
    header = [h.strip() for h in rows[0]]
    if "image" not in header:
        raise DataError(f"{p}:1: no 'image' column in the header ({','.join(header[:4])}...)")
    k = sum(1 for h in header if h[:1] == "x" and h[1:].isdigit())
    missing = [f"{a}{i}" for i in range(k) for a in "xy" if f"{a}{i}" not in header]
    if k == 0 or missing:
        raise DataError(f"{p}:1: expected coordinate columns x0,y0,x1,y1,..." + (f" ({missing[0]} is missing)"
                                                                                 if missing else ""))
    col = {h: j for j, h in enumerate(header)}
    coord_cols = [col[f"{a}{i}"] for i in range(k) for a in "xy"]
    attr_names = [h for h in header if h != "image" and h not in {f"{a}{i}" for i in range(k) for a in "xy"}]
    out, seen = [], {}
    for i, row in enumerate(rows[1:], start=2):
        where = f"{p}:{i}"
        if len(row) != len(header):
            problems.report(f"{where}: {len(row)} cells but the header has {len(header)}")
            continue
        try:
            vals = [math.nan if not row[j].strip() else _float(row[j], where) for j in coord_cols]
            attrs = {}
            for name in attr_names:
                c = row[col[name]].strip()
                if not c:
                    continue
                if name.endswith("_reg"):
                    attrs[name] = _float(c, where)
                else:
                    attrs[name] = int(c) if c.lstrip("-").isdigit() else c  # a class index or a class name
        except DataError as e:
            problems.report(str(e))
            continue
        rel = row[col["image"]].strip()
        if rel in seen:
            problems.report(f"{where}: duplicate entry {rel!r} (first on line {seen[rel]})")
            continue
        seen[rel] = i
        lm = np.asarray(vals, dtype=np.float64).reshape(k, 2)
        if np.isnan(lm).any(axis=1).sum() != np.isnan(lm).all(axis=1).sum():
            problems.report(f"{where}: a landmark has only one of x and y")
            continue
        out.append(Sample(p.parent / rel, lm, attrs, where))
    return out


def _load_json(p: Path):
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{p}: not valid JSON ({type(e).__name__}: {str(e)[:100]})") from None


def _expect(value, kind, message: str):
    """``value`` when it is of the JSON type ``kind`` (a bool is no number); otherwise a :class:`DataError`
    with ``message`` and the value found, so a file of the right syntax but the wrong shape is named."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise DataError(f"{message}, got {json.dumps(value)[:60]}")


def read_ljson(path: str | Path) -> np.ndarray:
    """A menpo ``.ljson`` file (versions 1-3): points stored as ``(y, x)`` pixel centres, ``null`` = missing.
    With several groups, the first is used. Returns ``(K, 2)`` as ``(x, y)``."""
    p = Path(path)
    d = _load_json(p)
    try:
        groups = d["groups"] if "groups" in d else {"": d}
        points = next(iter(groups.values()))["landmarks"]["points"]
    except (KeyError, TypeError, StopIteration, AttributeError):
        raise DataError(f"{p}: no landmarks.points in this .ljson file") from None
    out = []
    for i, pt in enumerate(_expect(points, list, f"{p}: landmarks.points must be a list of (y, x) pairs")):
        pt = [] if pt is None else _expect(pt, list, f"{p}: point {i} must be a (y, x) pair or null")
        if not pt or any(v is None for v in pt):
            out.append([math.nan, math.nan])
        elif len(pt) != 2:
            raise DataError(f"{p}: point {i} has {len(pt)} values, expected (y, x)")
        else:
            y, x = (_float(str(v), f"{p} point {i}") for v in pt)
            out.append([x, y])
    if not out:
        raise DataError(f"{p}: no points in the file")
    return np.asarray(out, dtype=np.float64)


def read_ljson_folder(path: str | Path, problems: Problems) -> list[Sample]:
    """All menpo ``*.ljson`` under ``path`` (or the one file) with the image of the same stem."""
    return _files_beside_images(path, ".ljson", read_ljson, problems)


def _coco_images(p: Path, images: list, problems: Problems) -> tuple[dict, set]:
    """``{id: file_name}`` of COCO's ``images`` and the ids of bad entries (reported)."""
    files, bad = {}, set()
    for j, im in enumerate(images):
        where = f"{p} images[{j}]"
        try:
            im = _expect(im, dict, f"{where}: must be an object")
            image_id = _expect(im.get("id"), int | str, f"{where}: id must be an integer or a string")
            name = _expect(im.get("file_name"), str, f"{where}: file_name must be a path")
            if not name.strip():
                raise DataError(f"{where}: file_name is empty")
        except DataError as e:
            problems.report(str(e))
            if isinstance(im, dict) and isinstance(im.get("id"), int | str):
                bad.add(im["id"])
            continue
        files[image_id] = name
    return files, bad


def read_coco(path: str | Path, problems: Problems) -> list[Sample]:
    """COCO keypoints JSON: one sample per annotation with ``keypoints``; ``v = 0`` marks a missing point.
    COCO puts pixel corners at integers, so ``x - 0.5`` is our pixel-centre coordinate. Images are
    relative to the JSON file's folder (or its ``images/`` subfolder)."""
    p = Path(path)
    d = _load_json(p)
    if not isinstance(d, dict) or "annotations" not in d or "images" not in d:
        raise DataError(f"{p}: not COCO keypoints JSON (needs 'images' and 'annotations')")
    files, bad_images = _coco_images(p, _expect(d["images"], list, f"{p}: 'images' must be a list"), problems)
    out, seen = [], set()
    for i, ann in enumerate(_expect(d["annotations"], list, f"{p}: 'annotations' must be a list")):
        try:
            ann = _expect(ann, dict, f"{p} annotations[{i}]: must be an object")
            key = _expect(ann.get("id", i), int | str, f"{p} annotations[{i}]: id must be an integer or a string")
            where = f"{p} annotation {key}"
            kps = ann.get("keypoints")
            if kps is None or kps == []:
                continue
            kps = _expect(kps, list, f"{where}: keypoints must be a list of x, y, v triplets")
            if len(kps) % 3:
                raise DataError(f"{where}: keypoints must be x, y, v triplets ({len(kps)} values)")
            image_id = ann.get("image_id")
            if isinstance(image_id, int | str) and image_id in bad_images:
                continue  # its image entry was reported
            if not isinstance(image_id, int | str) or image_id not in files:
                raise DataError(f"{where}: image_id {json.dumps(image_id)[:40]} is not in 'images'")
            if key in seen:
                raise DataError(f"{where}: duplicate annotation id")
            category = ann.get("category_id")
            if category is not None:
                _expect(category, int, f"{where}: category_id must be an integer")
            seen.add(key)
            arr = np.asarray([[_float(str(x), where), _float(str(y), where), _float(str(v), where)]
                              for x, y, v in zip(kps[0::3], kps[1::3], kps[2::3])], dtype=np.float64)
        except DataError as e:
            problems.report(str(e))
            continue
        lm = arr[:, :2] - 0.5
        lm[arr[:, 2] <= 0] = math.nan
        name = files[image_id]
        image = p.parent / name if (p.parent / name).exists() else p.parent / "images" / name
        attrs = {"category": category} if category is not None else {}
        out.append(Sample(image, lm, attrs, where))
    return out


READERS = {"pts": read_pts_folder, "mtfl": read_mtfl, "csv": read_csv_manifest, "ljson": read_ljson_folder,
           "coco": read_coco}


def read_annotations(path: str | Path, fmt: str, problems: Problems) -> list[Sample]:
    """Dispatch on ``fmt`` (pts | mtfl | csv) and check that every sample has the same landmark count."""
    if fmt not in READERS:
        raise UserError(f"--format {fmt!r} is unknown: use one of {', '.join(READERS)}")
    if not Path(path).exists():
        raise DataError(f"{path}: does not exist")
    samples = READERS[fmt](path, problems)
    if not samples:
        raise DataError(f"{path}: no usable samples" + (f" ({len(problems.items)} skipped)" if problems.items else ""))
    k = np.bincount([len(s.landmarks) for s in samples]).argmax()
    good = []
    for s in samples:
        if len(s.landmarks) != k:
            problems.report(f"{s.where}: {len(s.landmarks)} landmarks, but the other files have {k}")
        else:
            good.append(s)
    return good
