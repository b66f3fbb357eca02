"""sslandmarks: semi-supervised landmark localisation (Honari et al., CVPR 2018), and landmarks on your images.

```
import sslandmarks
model = sslandmarks.load("face68")      # a bundled model's name or a checkpoint path
faces = model.predict("photo.jpg")      # path, PIL image or numpy array (or a list): faces with landmarks
```

Coordinates everywhere are ``(x, y)`` in pixels, with pixel ``(i, j)`` (column ``i``, row ``j``) centred at
``(i, j)``; see :mod:`sslandmarks.coords`. Importing the package is light: torch loads with the first
:func:`load` (so ``sslandmarks --help`` stays fast).
"""

__version__ = "0.1.0"
__all__ = ["Face", "Landmarker", "__version__", "load"]


def load(name_or_path, device: str = "cpu", threads: int | None = None, all_attributes: bool = False,
         refine: int | None = None):
    """A model ready to predict: see :func:`sslandmarks.api.load`."""
    from sslandmarks.api import load as _load

    return _load(name_or_path, device=device, threads=threads, all_attributes=all_attributes, refine=refine)


def __getattr__(name: str):
    if name in ("Face", "Landmarker"):
        from sslandmarks import api

        return getattr(api, name)
    raise AttributeError(f"module 'sslandmarks' has no attribute {name!r}")
