"""One writing process per store on an object store: a lock object ``<store>.lock`` with a lease.

An object store has no ``flock`` and no process to die with, so the lock is an object beside
the store (``s3://bucket/logits.zarr`` -> ``s3://bucket/logits.zarr.lock``) holding its
owner (a random id, pid, host and process start time) and its lease (seconds). The rule:

* **take**: create the object only if it does not exist (a conditional write, S3's
  ``If-None-Match: *``); exactly one of two racing writers succeeds.
* **hold**: the holder rewrites the object every quarter lease (a heartbeat), conditional on
  the version it wrote last (``If-Match: <ETag>``), and stops writing -- its next shard is not
  marked complete -- once it finds the object changed (taken over) or could not renew it
  for a whole lease.
* **stale**: a lock object not rewritten for longer than its lease (by the store's clock,
  ``LastModified``), or whose holder ran on this host and is no longer running (pid and
  start time) or released it (this process, when the release could not delete it),
  belongs to a writer that ended; the next writer takes it over with a write
  conditional on the version it judged stale, so two takers cannot both win.
* **release**: the holder deletes the object (if it is still its own).

On S3 (and servers that implement conditional writes, such as moto and MinIO) this is a
real lock; on a filesystem without conditional writes the takeover is a plain overwrite and
the lock is advisory. Clocks must agree to well within a lease (60 s by default).

Example::

    with LeaseLock.acquire("s3://bucket/logits.zarr", storage_options) as lock:
        ...            # lock.check() before marking a shard complete
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psutil

from store.errors import StoreError
from store.remote import filesystem, is_transport_error, unreachable

log = logging.getLogger(__name__)

LEASE_S = 60.0
"""Default lease: a lock object not renewed for this long is stale."""

# Owner ids of the locks this process holds now: a lock object naming this process but none
# of these was left by a release that could not delete it (the store was unreachable).
_HELD: set[str] = set()


def lock_url(store: str) -> str:
    """``s3://b/logits.zarr`` -> ``s3://b/logits.zarr.lock`` (beside the store, not inside)."""
    return store.rstrip("/") + ".lock"


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _alive(pid: int, started: Any) -> bool:
    """Whether process ``pid`` of this host, started at ``started``, still runs (a pid
    reused by a later process, or a zombie, is not it)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        now = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return not isinstance(started, int | float) or abs(now - started) < 1.0


def _owner(lease_s: float) -> dict[str, Any]:
    return {"owner": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname(),
            "started": _started(os.getpid()), "lease_s": lease_s}


def _describe(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc)


class _Seen:
    """The lock object as read: its body, version (ETag) and age by the store's clock."""

    def __init__(self, body: dict[str, Any], etag: str | None, age_s: float):
        self.body, self.etag, self.age_s = body, etag, age_s

    @property
    def lease_s(self) -> float:
        try:
            return float(self.body.get("lease_s", LEASE_S))
        except (TypeError, ValueError):
            return LEASE_S

    def stale_because(self) -> str | None:
        """Why the holder is gone, or None while it may still be writing."""
        # LastModified has whole seconds: up to one more second of age is the clock's.
        if self.age_s > self.lease_s + 1:
            return f"its lease of {self.lease_s:g} s ran out {self.age_s - self.lease_s:.0f} s ago"
        if self.body.get("host") == socket.gethostname():
            pid = self.body.get("pid")
            if isinstance(pid, int) and not _alive(pid, self.body.get("started")):
                return "that process is no longer running"
            if pid == os.getpid() and self.body.get("owner") not in _HELD:
                return "this process released it"
        return None


class LeaseLock:
    """A held lock object; :meth:`release` (or leaving the ``with`` block) deletes it."""

    def __init__(self, store: str, fs: Any, key: str, body: dict[str, Any], etag: str | None,
                 conditional: bool):
        self.store, self.path = store, lock_url(store)
        self._fs, self._key, self._body, self._etag = fs, key, body, etag
        self._conditional = conditional
        _HELD.add(body["owner"])
        self._renewed = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, store: str, storage_options: dict[str, Any] | None = None,
                lease_s: float = LEASE_S) -> LeaseLock:
        """Take the lock of ``store`` (an object-store URL) or raise :class:`StoreError`
        naming the holder and when its lease runs out."""
        fs, key = filesystem(lock_url(store), storage_options)
        conditional = "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        body = _owner(lease_s)
        try:
            try:
                etag = _put(fs, key, body, mode="create")
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
                seen = _read(fs, key)
                why = None if seen is None else seen.stale_because()
                if seen is not None and why is None:
                    raise StoreError(
                        f"another process ({_describe(seen.body)}) is writing {store} (lock "
                        f"{lock_url(store)}, renewed {seen.age_s:.0f} s ago, lease "
                        f"{seen.lease_s:g} s); wait for it to finish, or stop it and rerun "
                        f"with --resume once its lease has run out") from None
                if seen is not None:
                    log.info("taking over the stale lock %s of %s: %s", lock_url(store),
                             _describe(seen.body), why)
                match = {"IfMatch": seen.etag} if conditional and seen and seen.etag else {}
                try:
                    etag = _put(fs, key, body, mode="create" if seen is None else "overwrite",
                                **match)
                except Exception as exc2:
                    if not _precondition_failed(exc2):
                        raise
                    raise StoreError(f"another process took the lock {lock_url(store)} of "
                                     f"{store} at the same time; wait for it to finish") from None
        except StoreError:
            raise
        except Exception as exc:
            if is_transport_error(exc):
                raise unreachable(store, exc, "taking its lock") from exc
            raise StoreError(f"cannot take the lock {lock_url(store)}: {exc}") from exc
        return cls(store, fs, key, body, etag, conditional)

    def _heartbeat(self) -> None:
        every = float(self._body["lease_s"]) / 4
        while not self._stop.wait(every):
            self._body["renewed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            match = {"IfMatch": self._etag} if self._conditional and self._etag else {}
            try:
                self._etag = _put(self._fs, self._key, self._body, **match)
                self._renewed = time.monotonic()
            except Exception as exc:
                if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                    seen = _read(self._fs, self._key)
                    self._lost = ("taken over by " + _describe(seen.body)) if seen else "deleted"
                    return
                log.warning("could not renew the lock %s (%s); retrying", self.path, exc)

    def check(self) -> None:
        """Raise :class:`StoreError` if the lock was lost (taken over, or not renewed for a
        whole lease): the caller must not mark anything complete after that."""
        if self._lost is None and time.monotonic() - self._renewed > self._body["lease_s"]:
            self._lost = f"not renewed for {self._body['lease_s']:g} s"
        if self._lost is not None:
            raise StoreError(f"lost the lock {self.path} of {self.store} ({self._lost}); "
                             f"stopped writing: rerun with --resume once no other process "
                             f"writes it")

    def release(self) -> None:
        """Stop the heartbeat and delete the lock object if it is still this holder's; a
        store that cannot be reached leaves it (stale after its lease, or at once for the
        next writer on this host)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        _HELD.discard(self._body["owner"])
        try:
            seen = _read(self._fs, self._key)
            if seen is not None and seen.body.get("owner") == self._body["owner"]:
                self._fs.rm(self._key)
        except Exception as exc:
            log.warning("could not remove the lock %s (%s): the next writer takes it over "
                        "once its lease has run out (at once on this host)", self.path, exc)

    def __enter__(self) -> LeaseLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _put(fs: Any, key: str, body: dict[str, Any], mode: str = "overwrite",
         **kwargs: Any) -> str | None:
    """Write the lock object; -> its new version (ETag) where the filesystem says it."""
    out = fs.pipe_file(key, json.dumps(body).encode(), mode=mode, **kwargs)
    fs.invalidate_cache(key)
    return out.get("ETag") if isinstance(out, dict) else None


def _read(fs: Any, key: str) -> _Seen | None:
    """The lock object now, or None if there is none. Read as HEAD, GET, HEAD until both
    HEADs agree, so body, version and age belong together."""
    for _ in range(5):
        try:
            fs.invalidate_cache(key)
            first = fs.info(key)
            raw = fs.cat_file(key)
            fs.invalidate_cache(key)
            second = fs.info(key)
        except FileNotFoundError:
            return None
        if first.get("ETag") == second.get("ETag"):
            break
    try:
        body = json.loads(raw)
        body = body if isinstance(body, dict) else {}
    except ValueError:
        body = {}
    modified = second.get("LastModified") or second.get("mtime")
    if isinstance(modified, datetime):
        age = time.time() - modified.timestamp()
    elif isinstance(modified, int | float):
        age = time.time() - modified
    else:
        age = 0.0  # unknown age: only the same-host rule can call it stale
    return _Seen(body, second.get("ETag"), max(age, 0.0))


def current_holder(store: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """``"pid 123 on host"`` while a live lease holds ``store``'s lock object, else None."""
    try:
        fs, key = filesystem(lock_url(store), storage_options)
        seen = _read(fs, key)
    except Exception:  # the advice this feeds is a hint; the caller's error says the rest
        return None
    if seen is None or seen.stale_because() is not None:
        return None
    return _describe(seen.body)
