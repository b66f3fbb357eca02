"""The one image reader: every image file the package reads (training, evaluation, predict) comes through here.

Rules, so that an image means the same thing everywhere:

- **Orientation**: the EXIF orientation tag (274) is applied, so the pixels are the image as a viewer shows it
  (a phone photo stored on its side comes out upright). Landmark coordinates, in annotation files and in
  ``predict``'s output, refer to this displayed image (as annotation tools that honour EXIF record them).
- **Modes** (all become 8-bit ``L`` or ``RGB``): ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``HSV`` by
  Pillow's conversion; 16-bit ``I;16*`` by their bit depth (0..65535 -> 0..255, divided by 257); ``I`` (32-bit
  integers, which Pillow gives for 16-bit PGM/PPM files) the same, its values must lie in 0..65535; ``F``
  (floats) by the smallest of the ranges [0, 1], [0, 255], [0, 65535] that holds every value. Images with
  alpha (``LA``, ``La``, ``PA``, ``RGBA``, ``RGBa``, ``P`` with transparency) are composited on black, the colour
  a crop gets outside the photo. Any other mode (``LAB``, multi-channel 16-bit) is refused by name.
- **Size**: an image over Pillow's ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb: a small file declaring a
  huge image) is refused before it is decoded.

Every failure is a :class:`DataError` naming the file, so ``--skip-bad`` can skip it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sslandmarks.data.formats import DataError

ORIENTATION = 274  # the EXIF tag
_DIRECT = ("1", "L", "P", "RGB", "CMYK", "YCbCr", "HSV")  # Pillow converts these to L / RGB correctly
_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """``(H, W, channels)`` uint8 (``channels`` 1: grey, 3: RGB) of the image file as displayed.

    Raises :class:`DataError` naming ``path`` when it is missing, unreadable, truncated, too large or of a
    mode that has no faithful 8-bit reading."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image {p} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": such a tag is read as no orientation
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()  # decode now: truncated files fail here, not later
                return from_pil(im, channels, p)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {p} declares more than {Image.MAX_IMAGE_PIXELS:,} pixels "
                        "(a decompression bomb?): refused unread") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"image {p} is unreadable or truncated ({e})") from None


def displayed_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as displayed (EXIF orientation applied), from its header alone:
    no pixels are decoded. Pillow's errors pass through (the caller names the file)."""
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)


def from_pil(im: Image.Image, channels: int, name: str | Path = "image") -> np.ndarray:
    """``(H, W, channels)`` uint8 of a Pillow image by the rules above (EXIF orientation, modes); ``name``
    names it in errors."""
    if im.getexif().get(ORIENTATION, 1) != 1:  # (exif_transpose copies even an upright image: big photos)
        im = ImageOps.exif_transpose(im)
    arr = _eight_bit(im, Path(name))
    return with_channels(arr, channels)


def with_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` uint8 -> ``(H, W, channels)`` (grey by Pillow's ITU-R 601 luma)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if channels == 1 and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    elif channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _eight_bit(im: Image.Image, p: Path) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8 by the rules in the module docstring."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _DIRECT:
        target = "L" if im.mode in ("1", "L") else "RGB"
        return np.asarray(im if im.mode == target else im.convert(target))
    if im.mode in _ALPHA:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        return np.round(rgba[..., :3] * rgba[..., 3:] / 255).astype(np.uint8)  # composited on black
    if im.mode in _SIXTEEN_BIT or im.mode == "I":
        v = np.asarray(im).astype(np.float64)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise DataError(f"image {p}: 32-bit integer image (mode I) with values {v.min():g}..{v.max():g}, "
                            "outside 0..65535: convert it to 8 or 16 bits")
        return np.round(v / 257).astype(np.uint8)
    if im.mode == "F":
        v = np.asarray(im).astype(np.float64)
        if v.size and not (np.isfinite(v).all() and v.min() >= 0 and v.max() <= 65535):
            raise DataError(f"image {p}: floating-point image (mode F) with values outside [0, 65535] or not "
                            "finite: convert it to 8 bits")
        top = next(r for r in (1.0, 255.0, 65535.0) if not v.size or v.max() <= r)
        return np.round(v * (255 / top)).astype(np.uint8)
    raise DataError(f"image {p}: image mode {im.mode} is not supported: convert the image to RGB or grey")
