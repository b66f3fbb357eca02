"""Landmarks on a video: decode, track, predict, smooth, draw, encode, one frame in memory at a time.

A face model needs a face box per frame. The detector runs on the first frame, every ``every`` frames, and
whenever a track is lost; in between, each face is cropped from the box around its landmarks in the previous
frame (:meth:`~sslandmarks.api.Landmarker.track`), which is how training crops were framed, so no detector
runs. With boxes given (``--box``, ``--boxes``), or for a model without a detector, the boxes (or the whole
frame) take the detector's place: they start the tracks on the first frame and restart a track when it is lost.
Faces keep an ``id`` across frames (a new detection takes the id of the track it overlaps). With
``smooth`` > 0 the written landmarks are an exponential moving average over frames (``smooth`` is the weight
of the past; tracking itself uses the unsmoothed landmarks).

Per-frame results are written as they come (JSON, CSV and video alike), so memory does not grow with the
video's length. Video files are read and written with PyAV (the ``video`` extra,
``pip install 'sslandmarks[video]'``), which ships its own FFmpeg: nothing is downloaded at run time. The
annotated video is H.264 (MPEG-4 Part 2 where the FFmpeg build has no H.264 encoder) at the input's frame rate.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sslandmarks.api import Face, Landmarker
from sslandmarks.boxes import Box
from sslandmarks.data.detect import iou
from sslandmarks.errors import UserError
from sslandmarks.outputs import atomic_path
from sslandmarks.viz import draw_faces

LOST_SIDE_PX = 8.0  # a track whose landmarks span fewer pixels than this has collapsed
LOST_INSIDE = 0.5  # ... or whose landmark box lies less than half inside the frame has left it


def _av():
    try:
        import av
    except ImportError:
        raise UserError("video needs PyAV: pip install 'sslandmarks[video]' (it ships its own FFmpeg)") from None
    return av


def _landmark_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    ok = lm[np.isfinite(lm).all(1)]
    if len(ok) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    (x0, y0), (x1, y1) = ok.min(0), ok.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _lost(face: Face, w: int, h: int) -> bool:
    x0, y0, x1, y1 = _landmark_box(face.landmarks)
    if max(x1 - x0, y1 - y0) < LOST_SIDE_PX:
        return True
    inside = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0))
    return inside < LOST_INSIDE * max((x1 - x0) * (y1 - y0), 1e-6)


def _follow(box, old: np.ndarray, new: np.ndarray):
    """Move the detector box with the face: the shift and scale that take the old landmark box to the new."""
    (a0, b0, a1, b1), (c0, d0, c1, d1) = _landmark_box(old), _landmark_box(new)
    s = max(c1 - c0, d1 - d0) / max(a1 - a0, b1 - b0, 1e-6)
    ox, oy, nx, ny = (a0 + a1) / 2, (b0 + b1) / 2, (c0 + c1) / 2, (d0 + d1) / 2
    return tuple(float(v) for v in (nx + (box[0] - ox) * s, ny + (box[1] - oy) * s,
                                     nx + (box[2] - ox) * s, ny + (box[3] - oy) * s))


class Tracker:
    """Faces from frame to frame: detect, then track from landmarks, re-detecting every ``every`` frames or
    when a track is lost; ids follow faces, and landmarks are smoothed per id. With ``boxes`` (or a model
    without a detector), the boxes (or the whole frame) restart the tracks, only when one is lost."""

    def __init__(self, model: Landmarker, every: int = 10, smooth: float = 0.0, min_score: float = 0.0,
                 boxes: list[Box] | None = None) -> None:
        if every < 1:
            raise UserError(f"--detect-every {every}: give 1 or more")
        if not 0.0 <= smooth < 1.0:
            raise UserError(f"--smooth {smooth}: give a weight in [0, 1) (0: no smoothing)")
        self.model, self.every, self.smooth, self.min_score = model, every, smooth, min_score
        self.boxes = boxes
        self.fixed = boxes is not None or not model.has_detector  # nothing to re-detect: boxes are fixed
        self.faces: list[Face] = []  # the previous frame's faces, unsmoothed
        self.ids: list[int] = []
        self.smoothed: dict[int, np.ndarray] = {}
        self.since, self.next_id, self.detections = 0, 0, 0

    def step(self, rgb: np.ndarray) -> list[tuple[int, Face, bool]]:
        """``[(id, face, detected), ...]`` for one frame; ``face.landmarks`` smoothed."""
        h, w = rgb.shape[:2]
        detected = not self.faces or not self.model.needs_detector or (not self.fixed and self.since >= self.every)
        if not detected:
            faces = self.model.track(rgb, self.faces)
            faces = [Face(_follow(f.box, old.landmarks, f.landmarks), f.landmarks, f.score, f.attributes,
                          f.probabilities) for f, old in zip(faces, self.faces)]
            detected = any(_lost(f, w, h) for f in faces)
        if detected:
            faces = self.model.predict(rgb, boxes=self.boxes, min_score=self.min_score)
            self.ids = self._match(faces)
            self.since, self.detections = 0, self.detections + 1
        self.since += 1
        self.faces = faces
        out = []
        for i, f in zip(self.ids, faces):
            lm = f.landmarks
            if self.smooth > 0 and i in self.smoothed:
                lm = self.smooth * self.smoothed[i] + (1 - self.smooth) * lm
            self.smoothed[i] = lm
            out.append((i, Face(f.box, lm, f.score, f.attributes, f.probabilities), detected))
        self.smoothed = {i: self.smoothed[i] for i in self.ids}
        return out

    def _match(self, faces: list[Face]) -> list[int]:
        """Ids for new detections: that of the previous face whose landmark box overlaps most (IoU >= 0.3)."""
        ids, free = [], dict(zip(self.ids, self.faces))
        for f in faces:
            box = _landmark_box(f.landmarks)
            best = max(free, key=lambda i: iou(box, _landmark_box(free[i].landmarks)), default=None)
            if best is not None and iou(box, _landmark_box(free[best].landmarks)) >= 0.3:
                ids.append(best)
                del free[best]
            else:
                ids.append(self.next_id)
                self.next_id += 1
        return ids


class _Writer:
    """The annotated video: opened at the first frame (its size is known then), H.264 in MP4."""

    def __init__(self, av, path: Path | None, fps: Fraction) -> None:
        self.av, self.path, self.fps, self.container, self.stream = av, path, fps, None, None

    def write(self, image: np.ndarray) -> None:
        if self.path is None:
            return
        image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]  # even sizes for yuv420p
        if self.container is None:
            self.container = self.av.open(str(self.path), "w", format="mp4")
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            if codec == "libx264":
                self.stream.options = {"preset": "veryfast", "crf": "23"}
        for packet in self.stream.encode(self.av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


def _open_video(av, path: Path):
    """``(container, first video stream)`` of ``path``; one-line errors for an unreadable file or no video."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise UserError(f"video {path} is unreadable ({e})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: no video stream in this file")
    return container, container.streams.video[0]


def video_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the first video stream's frames, read from the container (nothing decoded)."""
    container, stream = _open_video(_av(), path)
    with container:
        return stream.codec_context.width, stream.codec_context.height


def _frames(av, path: Path):
    """``(frames per second, frame count or None, iterator of (rgb, seconds))`` of the first video stream."""
    container, stream = _open_video(av, path)
    stream.thread_type = "AUTO"
    fps = stream.average_rate or Fraction(25)

    def frames():
        with container:
            for n, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else n / float(fps)
                yield frame.to_ndarray(format="rgb24"), t

    return fps, stream.frames or None, frames()


def predict_video(model: Landmarker, path: Path, out: Path, stem: str, overlay: str, min_score: float = 0.0,
                  progress: bool = True, every: int = 10, smooth: float = 0.0, draw: bool = True,
                  boxes: list[Box] | None = None) -> dict:
    """Write ``out/<stem>.json`` (per frame: ``frame``, ``time`` in seconds, ``faces`` with ``id``, ``detected``
    and the fields of a photo's faces), ``out/<stem>.csv`` (``frame, time, face, point, x, y``) and, with
    ``draw``, ``out/<overlay>`` (the annotated video). ``boxes``: the objects' boxes in the first frame, instead
    of the detector. Returns the entry for ``predictions.json``."""
    av = _av()
    tracker = Tracker(model, every, smooth, min_score, boxes)
    fps, total, decoded = _frames(av, path)
    n, with_faces, started = 0, 0, time.perf_counter()
    video_file = atomic_path(out / overlay) if draw else contextlib.nullcontext(None)
    with atomic_path(out / f"{stem}.csv") as csv_tmp, open(csv_tmp, "w", newline="") as csv_file, \
            atomic_path(out / f"{stem}.json") as json_tmp, open(json_tmp, "w") as json_file, video_file as video_tmp:
        rows, writer = csv.writer(csv_file), _Writer(av, video_tmp, fps)
        rows.writerow(["frame", "time", "face", "point", "x", "y"])
        json_file.write(f'{{"video": {json.dumps(str(path))}, "fps": {float(fps)}, "frames": [')  # streamed
        for n, (rgb, t) in enumerate(tqdm(decoded, total=total, desc=path.name, unit="frame", disable=not progress),
                                     start=1):
            faces = [{"id": i, "detected": d, **f.to_dict()} for i, f, d in tracker.step(rgb)]
            json_file.write(("," if n > 1 else "") + "\n" + json.dumps({"frame": n - 1, "time": round(t, 4),
                                                                        "faces": faces}))
            with_faces += bool(faces)
            for f in faces:
                rows.writerows([n - 1, round(t, 4), f["id"], k, round(x, 3), round(y, 3)]
                               for k, (x, y) in enumerate(f["landmarks"]))
            if draw:
                writer.write(draw_faces(rgb, faces, boxes=model.needs_detector or boxes is not None))
        if n == 0:
            raise UserError(f"video {path}: no frame could be decoded")
        json_file.write("\n]}\n")
        writer.close()
    seconds = time.perf_counter() - started
    print(f"{path}: {n} frames, faces in {with_faces}, detector on {tracker.detections}; {n / seconds:.1f} frames/s",
          file=sys.stderr)
    entry = {"frames": n, "fps": float(fps), "frames_with_faces": with_faces, "detector_runs": tracker.detections,
             "frames_per_second_processed": round(n / seconds, 2), "landmarks_json": f"{stem}.json",
             "landmarks_csv": f"{stem}.csv"}
    return {**entry, "overlay": overlay} if draw else entry
