"""Writing results safely: fail early on unwritable paths, never write over an input, replace files atomically
(one writer for all)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator
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
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a folder: give the name of a file to write")
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
    finally:  # every failure (disk full, a folder in the way, a failed check) leaves no temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    try:  # the rename is durable once the folder's entry is on disk
        _fsync(path.parent)
    except OSError:
        pass


def _identity(p: Path) -> tuple[Path, tuple[int, int] | None]:
    """What names one file: the resolved path (symlinks, ``..``) and, when it exists, its device and inode
    (a hard link has another path but the same inode)."""
    try:
        st = p.stat()
        inode = (st.st_dev, st.st_ino)
    except OSError:  # not there (yet)
        inode = None
    return p.resolve(), inode


def refuse_inputs_as_outputs(outputs: Iterable[tuple[str, str | Path]], inputs: Iterable[str | Path]) -> None:
    """Exit 2 before any work when an output (``(option, path)`` pairs) is one of the files a command reads,
    or two outputs are one file: writing it would replace the data. Give the input files themselves (a
    folder's annotation and image files, not the folder): writing a new file into an input folder is fine."""
    known: dict = {}  # resolved path or inode -> ("input", path) or (option, path)
    for i in inputs:
        if i:
            for key in _identity(Path(i)):
                if key is not None:
                    known.setdefault(key, ("input", Path(i)))
    for option, out in outputs:
        o = Path(out)
        keys = [k for k in _identity(o) if k is not None]
        clash = next((known[k] for k in keys if k in known), None)
        if clash is not None and clash[0] == "input":
            raise UserError(f"{option} {o} is also an input ({clash[1]}): writing it would destroy the input; "
                            "choose another output path")
        if clash is not None:
            raise UserError(f"{option} {o} and {clash[0]} {clash[1]} are the same file: choose two outputs")
        for k in keys:
            known[k] = (option, o)


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


class RunDirBusy(UserError):
    """Another process holds the run folder's lock."""


LOCK_NAME = ".lock"  # in a run folder, held (flock) by the process training into it


@contextmanager
def locked_run_dir(out: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the run folder's exclusive lock (created if needed) while the block runs; the kernel also drops it
    when the process ends, however it ends. A folder another process is training into is refused."""
    if not enabled:
        yield
        return
    import fcntl

    ensure_writable_dir(out)
    fd = os.open(Path(out) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(busy_message(out)) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def busy_message(out: str | Path) -> str:
    return f"{out}: another process is training into this folder; wait for it to finish, or choose another --out"


def run_dir_busy(out: str | Path) -> bool:
    """Whether another process holds ``out``'s run lock (without taking it)."""
    import fcntl

    path = Path(out) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
