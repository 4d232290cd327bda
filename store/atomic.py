"""Atomic file writes: the one way this project writes a file that others read.

A file appears under its final name only once it is complete: it is written to a
temporary name beside the target (same directory, so the rename cannot cross file
systems), flushed to disk, then renamed over the target with ``os.replace``. Whatever
happens before the rename -- a full or read-only disk, a bug, Ctrl-C -- the temporary is
removed and the previous file (if any) is left as it was. A failing write (``OSError``)
becomes a :class:`~store.errors.UserError` naming the target and the reason, so a CLI
prints one line instead of a traceback.

Whole trees (a corpus, a data root) are staged the same way in a directory beside the
target and swapped in when complete (:func:`atomic_dir`).

Only a SIGKILL between creating and renaming the temporary can leave it behind; its name
(``.<stem>.tmp-<pid><suffix>``, ``.<name>.partial-<pid>``) says what it was and that it
may be deleted.

Example::

    atomic_write_text("out/manifest.jsonl", text)
    with atomic_path("out/det.png") as tmp:   # any writer that takes a path
        fig.savefig(tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from store.errors import UserError


def write_failure(path: str | os.PathLike[str], exc: OSError) -> UserError:
    """The one-line error for an ``OSError`` while writing ``path`` (full disk, read-only...)."""
    inside = exc.filename is not None and os.fspath(exc.filename) != os.fspath(path)
    where = f" ({exc.filename})" if inside else ""
    return UserError(f"cannot write {path}: {exc.strerror or exc}{where}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, make it ``path``.

    The block writes the temporary file (by any means: ``open``, ``torch.save``,
    ``savefig``, h5py); the suffix is kept so writers that infer a format from it still
    do. On success the file is fsynced and renamed over ``path``, and the directory is
    fsynced so the rename survives a crash. On failure nothing under ``path`` changes and
    the temporary is removed; an ``OSError`` (also one a writer wrapped in another
    exception) is re-raised as a :class:`UserError`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        cause = _os_error(exc)
        if cause is None:
            raise
        raise write_failure(path, cause) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _os_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``exc``, if any: some writers wrap it (``torch.save`` on a
    full disk ends in a ``RuntimeError`` from its zip writer, raised while handling it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is done anyway
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``; when the block succeeds, it
    replaces ``path`` (a directory or file, if one exists).

    For outputs that are whole trees (a corpus, a prepared data root): a failure or an
    interrupt removes the staging directory and leaves ``path`` as it was, so nothing
    half-built ever looks complete. An ``OSError`` becomes a :class:`UserError`.

    Example::

        with atomic_dir("toy") as stage:
            (stage / "train").mkdir()
            ...
    """
    path = Path(path)
    stage = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        yield stage
        _swap_in(stage, path)
    except OSError as exc:
        raise write_failure(path, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, path: Path) -> None:
    if not os.path.lexists(path):
        os.replace(stage, path)
        return
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    os.replace(path, old)
    try:
        os.replace(stage, path)
    except BaseException:
        os.replace(old, path)  # put the previous output back
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`).

    Example::

        atomic_write_text("out/manifest.jsonl", text)
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically: a kill never leaves half a file."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
