"""``predict``: landmarks on image and video files, built on the public API (:mod:`sslandmarks.api`).

Photos stream through one at a time (one in memory), each with its faces found by dlib's HOG detector (the
``detect`` extra; built once, shown a shrunk copy of large photos), cropped as in training and mapped back to
photo pixels. A model trained on whole images (Shapes, Blocks) sees the whole image, resized. Videos go to
:mod:`sslandmarks.video`. Every output file gets a name of its own, and a rerun into the same ``--out``
first removes what the previous run recorded in its ``predictions.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from sslandmarks.api import Landmarker, load
from sslandmarks.data.detect import DETECTOR_BOXES
from sslandmarks.data.formats import IMAGE_SUFFIXES, files_under
from sslandmarks.data.images import read_image
from sslandmarks.errors import UserError
from sslandmarks.outputs import ensure_writable_dir, refuse_inputs_as_outputs, write_json
from sslandmarks.viz import photo_overlay

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
RECORDED = ("overlay", "landmarks_json", "landmarks_csv")  # the files a run writes per input, in its JSON


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders as the images and videos inside them (sorted; symlinked subfolders followed)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = files_under(p, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            if not found:
                raise UserError(f"{p}: no images or videos ({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)}) in this "
                                "folder")
            out += found
        else:
            out.append(p)
    return list(dict.fromkeys(out))  # a file given twice is predicted once


def output_stems(paths: list[Path]) -> list[str]:
    """A distinct name per input for its output files: the file's stem, with as many parent folders as
    needed to tell same-named inputs apart (``a/face.png``, ``b/face.jpg`` -> ``a-face``, ``b-face``), and the
    extension where only that differs (``face.png``, ``face.jpg`` -> ``face-png``, ``face-jpg``)."""
    full = [p.resolve() for p in paths]
    depth, ext = [0] * len(full), [False] * len(full)

    def name(i: int) -> str:
        f = full[i]
        parents = list(f.parent.parts[1:])[len(f.parent.parts) - 1 - depth[i]:] if depth[i] else []
        return "-".join([*parents, f.stem + (f"-{f.suffix.lstrip('.')}" if ext[i] else "")])

    names = [name(i) for i in range(len(full))]
    while len(set(names)) < len(names):
        for i, n in enumerate(names):
            twins = [j for j, m in enumerate(names) if m == n and j != i]
            if not twins:
                continue
            if not ext[i] and any(full[j].parent == full[i].parent for j in twins):
                ext[i] = True
            elif depth[i] < len(full[i].parent.parts) - 1:
                depth[i] += 1
        new = [name(i) for i in range(len(full))]
        if new == names:  # (cannot happen for distinct files; a guard against looping)
            return [f"{n}-{i}" for i, n in enumerate(names)]
        names = new
    return names


def overlay_names(paths: list[Path]) -> list[str]:
    """The overlay written for each input: ``<name>_landmarks.png`` for a photo, ``.mp4`` for a video."""
    return [f"{n}_landmarks{'.mp4' if p.suffix.lower() in VIDEO_SUFFIXES else '.png'}"
            for n, p in zip(output_stems(paths), paths)]


def _check_readable(paths: list[Path]) -> None:
    """Refuse before any work a missing input, or a photo whose header Pillow cannot read (no pixels are
    decoded here: one photo at a time is decoded later)."""
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p} does not exist")
        if p.suffix.lower() in VIDEO_SUFFIXES:
            continue
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 (the header is read by open)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"image {p} is unreadable ({e})") from None
        except Image.DecompressionBombError:
            raise UserError(f"image {p} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels: refused") from None


def clear_previous(out: Path, inputs: list[Path] = ()) -> int:
    """Remove the files that an earlier ``predict`` into ``out`` recorded in its ``predictions.json`` (and that
    JSON); refuse a folder holding overlays that no record accounts for, and a recorded file that is one of
    this run's ``inputs``. Returns the number removed."""
    record = out / "predictions.json"
    previous: dict = {}
    if record.is_file():
        try:
            previous = json.loads(record.read_text())
        except (OSError, ValueError):
            raise UserError(f"{record} is not a predictions file of sslandmarks: choose another --out") from None
    listed = {out / v for entry in previous.values() if isinstance(entry, dict)
              for k, v in entry.items() if k in RECORDED and isinstance(v, str) and "/" not in v}
    unknown = [f for f in out.glob("*_landmarks.*") if f not in listed] if out.is_dir() else []
    if unknown:
        raise UserError(f"--out {out} holds overlays that no predictions.json lists ({unknown[0].name}, ...): "
                        "choose an empty folder, or remove them")
    given = {p.resolve() for p in inputs}
    clash = next((f for f in listed if f.resolve() in given), None)
    if clash is not None:
        raise UserError(f"{clash} is an input, and the previous predict into {out} wrote it: it would be removed; "
                        "choose another --out")
    removed = 0
    for f in [*listed, record]:
        if f.is_file():
            f.unlink()
            removed += 1
    return removed


def _predict_photo(model: Landmarker, path: Path, name: str, out: Path, min_score: float) -> dict:
    rgb = read_image(path, 3)
    faces = [f.to_dict() for f in model.predict(rgb, min_score=min_score)]
    h, w = rgb.shape[:2]
    entry = {"size": [w, h], "faces": faces}
    if faces:
        photo_overlay(rgb, faces, out / name, boxes=model.needs_detector)
        entry["overlay"] = name
    elif model.needs_detector:
        print(f"{path}: no face found", file=sys.stderr)
    return entry


def predict_files(checkpoint: str | Path, images: list[str], out: str | Path, progress: bool = True,
                  min_score: float = 0.0, threads: int | None = 1, device: str = "cpu", all_attributes: bool = False,
                  video: dict | None = None) -> int:
    """Write ``out/predictions.json`` (``{file: {"size", "faces": [{"box", "score", "landmarks", "attributes",
    "confidence", "probabilities"}], "overlay"}}``, landmarks in image pixels) and an overlay per photo with a
    face; videos (:func:`sslandmarks.video.predict_video`, options in ``video``) add per-frame landmarks and
    an annotated video. Returns the number of inputs."""
    out = Path(out)
    paths = expand_inputs(images)
    names = overlay_names(paths)
    stems = output_stems(paths)
    extra = [f"{s}.{k}" for s, p in zip(stems, paths) if p.suffix.lower() in VIDEO_SUFFIXES for k in ("json", "csv")]
    refuse_inputs_as_outputs([("--out", out / n) for n in ["predictions.json", *names, *extra]],
                             [checkpoint, *paths])
    _check_readable(paths)
    model = load(checkpoint, device=device, threads=threads, all_attributes=all_attributes)
    if model.needs_detector and model.cfg.data.spec not in DETECTOR_BOXES:
        print(f"note: no measured detector-box relation for the layout {model.cfg.data.spec or '(none)'}: crops "
              "use the 68-point face box's; check the overlays", file=sys.stderr)
    ensure_writable_dir(out)
    clear_previous(out, paths)
    results = {}
    photos = [(p, n) for p, n in zip(paths, names) if p.suffix.lower() not in VIDEO_SUFFIXES]
    for path, name in tqdm(photos, desc="predict", unit="photo", disable=not progress or len(photos) < 2):
        results[str(path)] = _predict_photo(model, path, name, out, min_score)
    for path, stem, name in zip(paths, stems, names):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            from sslandmarks.video import predict_video

            results[str(path)] = predict_video(model, path, out, stem, name, min_score=min_score,
                                               progress=progress, **(video or {}))
    write_json(results, out / "predictions.json")
    return len(results)
