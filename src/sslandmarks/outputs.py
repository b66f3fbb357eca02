"""Writing results safely: fail early on unwritable paths, replace files atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from sslandmarks.errors import UserError


def ensure_writable_dir(out: str | Path) -> None:
    """Create ``out`` and prove it writable now, rather than failing after the work is done."""
    out = Path(out)
    probe = out / f".write-test{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {str(out)!r} ({e.strerror}): choose another --out") from None


def ensure_writable_file(path: str | Path) -> None:
    """Prove that ``path`` can be written later (an existing file there is left alone)."""
    path = Path(path)
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}): choose another --out") from None


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_json(data: dict, path: str | Path) -> None:
    """Write JSON atomically (temporary file, then rename); NaN and inf become null."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(_clean(data), indent=2))
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}): choose another --out") from None
