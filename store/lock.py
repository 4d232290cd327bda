"""One writing process per store (or run directory): an advisory lock file next to it (``<store>.lock``).

The lock is an ``flock`` on the file, held for as long as the writer runs: the kernel
drops it when the process dies, however it dies, so a lock file left by a killed dump is
stale by construction and the next writer simply takes it over. The file records the
holder's pid and host so a refused writer can say who holds the store.

A store on an object store (``s3://...``) gets a lock *object* with a lease instead
(:mod:`store.lease`); :meth:`StoreLock.acquire` and :func:`current_writer` choose by the
location, so callers need not.

Example::

    with StoreLock.acquire("logits.zarr"):
        ...  # create or resume the store
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from store.errors import StoreError
from store.lease import LeaseLock, current_holder
from store.remote import is_remote

log = logging.getLogger(__name__)


def lock_path(store: str | os.PathLike[str]) -> Path:
    """``logits.zarr`` -> ``logits.zarr.lock`` (beside the store, not inside it).

    Keyed by the resolved path: a symlink to the store (or to a folder above it) names the
    same lock file, so writing through another spelling is refused as well.
    """
    path = Path(os.path.realpath(store))
    return path.with_name(path.name + ".lock")


class StoreLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) removes the file."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    def check(self) -> None:
        """Nothing to check: an ``flock`` cannot be lost while its process lives (a lock
        object can: :meth:`store.lease.LeaseLock.check`)."""

    @classmethod
    def acquire(cls, store: str | os.PathLike[str],
                storage_options: dict[str, Any] | None = None) -> StoreLock | LeaseLock:
        """Take the lock of ``store`` or raise :class:`StoreError` naming the holder; a
        store on an object store gets a :class:`~store.lease.LeaseLock`."""
        if is_remote(store):
            return LeaseLock.acquire(os.fspath(store), storage_options)
        path = lock_path(store)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise StoreError(
                    f"another process ({holder}) is writing {os.fspath(store)} (lock {path}); "
                    f"wait for it to finish, or stop it and rerun with --resume"
                ) from None
            # A holder that released between our open and flock unlinked the file we
            # locked: lock the file now at the path instead.
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        stale = _holder(fd)
        if stale != "unknown pid":
            log.info("taking over the stale lock %s of a process that ended (%s)", path, stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # still holding it: nobody can be waiting on it
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])} on {info['host']}"
    except (ValueError, KeyError, TypeError):
        return "unknown pid"


def current_writer(store: str | os.PathLike[str],
                   storage_options: dict[str, Any] | None = None) -> str | None:
    """``"pid 123 on host"`` while a process holds the lock of ``store``, else None (no
    lock file, or one left by a process that ended). Takes nothing: a shared, non-blocking
    probe released at once (on an object store: a read of the lock object)."""
    if is_remote(store):
        return current_holder(os.fspath(store), storage_options)
    try:
        fd = os.open(lock_path(store), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

