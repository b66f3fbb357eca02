"""Writing results safely: fail early on unwritable paths; replace files atomically (one writer for all)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, the file written
    there is flushed to disk (fsync) and renamed over ``path``, and the rename itself is made durable.

    A kill at any moment leaves either the previous file or the new one, never a torn one; an exception in
    the block (e.g. a failed check of what was written) leaves ``path`` untouched and removes the temporary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # the rename is durable once the folder's entry is on disk
        _fsync(path.parent)
    except OSError:
        pass


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write_json(data: dict, path: str | Path) -> None:
    """Write JSON atomically (see :func:`atomic_path`); NaN and inf become null."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_clean(data), indent=2))
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}): choose another --out") from None
