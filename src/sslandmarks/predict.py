"""``predict``: landmarks on image and video files, built on the public API (:mod:`sslandmarks.api`).

Photos stream through one at a time (one in memory), each with its faces found by dlib's HOG detector (the
``detect`` extra; built once, shown a shrunk copy of large photos), cropped as in training and mapped back to
photo pixels. Boxes given with ``--box`` (every input) or ``--boxes FILE.json`` (per image) replace the detector;
a crop model without a detector (hands) takes the whole image as the box where none is given. A model trained on
whole images (Shapes, Blocks) sees the whole image (or each box's region), resized. Videos go to
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
from sslandmarks.boxes import Box, check_box, check_inside, match_boxes, read_boxes
from sslandmarks.data.detect import DETECTOR_BOXES
from sslandmarks.data.formats import IMAGE_SUFFIXES, files_under
from sslandmarks.data.images import displayed_size, read_image
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


def _check_readable(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    """Refuse before any work a missing input, or a photo whose header Pillow cannot read (no pixels are
    decoded here: one photo at a time is decoded later). Returns each photo's displayed ``(width, height)``."""
    sizes = {}
    for p in paths:
        if not p.is_file():
            raise UserError(f"{p} does not exist")
        if p.suffix.lower() in VIDEO_SUFFIXES:
            continue
        try:
            sizes[p] = displayed_size(p)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"image {p} is unreadable ({e})") from None
        except Image.DecompressionBombError:
            raise UserError(f"image {p} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels: refused") from None
    return sizes


def input_boxes(paths: list[Path], box: Box | None, boxes_file: str | Path | None) -> dict[Path, list[Box]]:
    """The boxes of each input that has some: ``box`` (``--box``) for every input, or those named in
    ``boxes_file`` (``--boxes``; names that match no input are reported on stderr and ignored)."""
    if box is not None and boxes_file is not None:
        raise UserError("give either --box (one box, for every input) or --boxes FILE.json (boxes per image), "
                        "not both")
    if box is not None:
        return dict.fromkeys(paths, [check_box(box, "--box")])
    if boxes_file is None:
        return {}
    found, unmatched = match_boxes(read_boxes(boxes_file), paths, str(boxes_file))
    if unmatched:
        more = ", ..." if len(unmatched) > 3 else ""
        print(f"warning: --boxes {boxes_file}: {len(unmatched)} name(s) match no input and are ignored "
              f"({', '.join(unmatched[:3])}{more})", file=sys.stderr)
    return found


def _check_inside(given: dict[Path, list[Box]], sizes: dict[Path, tuple[int, int]], boxes_file) -> None:
    """Refuse, before any work, a box that lies entirely outside its image (or its video's frames)."""
    what = "--box" if boxes_file is None else f"--boxes {boxes_file}: box"
    for path, boxes in given.items():
        if boxes and path not in sizes:  # a video
            from sslandmarks.video import video_size

            sizes[path] = video_size(path)
        for b in boxes:
            check_inside(b, *sizes[path], what, str(path))


def _notes(model: Landmarker, paths: list[Path], given: dict[Path, list[Box]], boxes_file) -> None:
    """One line on stderr, once, for inputs without boxes where that matters: a model without a detector
    takes their whole image; with --boxes, a face model's detector finds theirs."""
    bare = [p for p in paths if p not in given]
    if not model.needs_detector or not bare:
        return
    if not model.has_detector:
        print(f"note: this model ({model.cfg.data.spec or 'no landmark layout'}) has no detector: the whole image "
              f"is the box of {len(bare)} input(s) without --box or --boxes; a box around each object does better",
              file=sys.stderr)
        return
    if boxes_file is not None:
        print(f"note: --boxes {boxes_file} gives no boxes for {len(bare)} input(s) ({bare[0].name}"
              f"{', ...' if len(bare) > 1 else ''}): the face detector finds theirs", file=sys.stderr)
    if model.cfg.data.spec not in DETECTOR_BOXES:
        print(f"note: no measured detector-box relation for the layout {model.cfg.data.spec}: crops use the "
              "68-point face box's; check the overlays", file=sys.stderr)


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


def _predict_photo(model: Landmarker, path: Path, name: str, out: Path, min_score: float,
                   boxes: list[Box] | None) -> dict:
    """One photo's entry of ``predictions.json`` (its overlay written): the faces in ``boxes``, or found."""
    rgb = read_image(path, 3)
    faces = [f.to_dict() for f in model.predict(rgb, boxes=boxes, min_score=min_score)]
    h, w = rgb.shape[:2]
    entry = {"size": [w, h], "faces": faces}
    if faces:
        photo_overlay(rgb, faces, out / name, boxes=model.needs_detector or boxes is not None)
        entry["overlay"] = name
    elif model.has_detector and boxes is None:
        print(f"{path}: no face found", file=sys.stderr)
    return entry


def predict_files(checkpoint: str | Path, images: list[str], out: str | Path, progress: bool = True,
                  min_score: float = 0.0, threads: int | None = 1, device: str = "cpu", all_attributes: bool = False,
                  video: dict | None = None, box: Box | None = None, boxes_file: str | Path | None = None,
                  refine: int | None = None) -> int:
    """Write ``out/predictions.json`` (``{file: {"size", "faces": [{"box", "score", "landmarks", "attributes",
    "confidence", "probabilities"}], "overlay"}}``, landmarks in image pixels) and an overlay per photo with a
    face; videos (:func:`sslandmarks.video.predict_video`, options in ``video``) add per-frame landmarks and
    an annotated video. ``box``: one box for every input; ``boxes_file``: a JSON file of boxes per image
    (:func:`input_boxes`); either replaces the detector. ``refine``: more passes per face, each cropped from
    the previous pass's landmarks (:func:`sslandmarks.api.load`). Returns the number of inputs."""
    out = Path(out)
    paths = expand_inputs(images)
    names = overlay_names(paths)
    stems = output_stems(paths)
    extra = [f"{s}.{k}" for s, p in zip(stems, paths) if p.suffix.lower() in VIDEO_SUFFIXES for k in ("json", "csv")]
    refuse_inputs_as_outputs([("--out", out / n) for n in ["predictions.json", *names, *extra]],
                             [checkpoint, *paths, *([boxes_file] if boxes_file is not None else [])])
    sizes = _check_readable(paths)
    given = input_boxes(paths, box, boxes_file)
    _check_inside(given, sizes, boxes_file)
    model = load(checkpoint, device=device, threads=threads, all_attributes=all_attributes, refine=refine)
    _notes(model, paths, given, boxes_file)
    ensure_writable_dir(out)
    clear_previous(out, paths)
    results = {}
    photos = [(p, n) for p, n in zip(paths, names) if p.suffix.lower() not in VIDEO_SUFFIXES]
    for path, name in tqdm(photos, desc="predict", unit="photo", disable=not progress or len(photos) < 2):
        results[str(path)] = _predict_photo(model, path, name, out, min_score, given.get(path))
    for path, stem, name in zip(paths, stems, names):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            from sslandmarks.video import predict_video

            results[str(path)] = predict_video(model, path, out, stem, name, min_score=min_score,
                                               progress=progress, boxes=given.get(path), **(video or {}))
    write_json(results, out / "predictions.json")
    return len(results)
