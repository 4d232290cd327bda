"""Thin helpers around zarr 3.1 shared by the writer, reader and CLI.

Kept private: the public surface is :mod:`store.writer` and :mod:`store.reader`. The only
non-public zarr API used is ``zarr.core.sync.sync``, which runs a batch of coroutines on
zarr's own event loop so all arrays of a chunk are fetched concurrently.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from store.errors import StoreError
from store.remote import check_options, is_remote, is_transport_error, unreachable
from store.schema import ZSTD_LEVEL

PathLike = str | os.PathLike[str]


def location(path: PathLike) -> str:
    """The store location as a string: a local path or an fsspec URL."""
    return os.fspath(path)


def local_path(path: PathLike) -> Path | None:
    """The local filesystem path of ``path``, or None for a remote URL."""
    text = location(path)
    if "://" not in text:
        return Path(text)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    return None


def data_codecs() -> list[Any]:
    """Compressors of every data chunk: zstd, then a crc32c of the compressed bytes."""
    return [ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()]


def open_group(
    path: PathLike, mode: str, storage_options: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> zarr.Group:
    """Open the root group, turning "not there" / "already there" / "not reachable" into
    StoreError. ``storage_options``: for an object-store URL only (see :mod:`store.remote`)."""
    where = location(path)
    check_options(where, storage_options)
    try:
        # Zarr v3 only on an object store: probing for v2 metadata as well leaves requests
        # pending when the store is unreachable, which print tracebacks at exit.
        group = zarr.open_group(store=where, mode=mode, storage_options=storage_options or None,
                                attributes=attributes,
                                zarr_format=3 if is_remote(where) else None)
        fs = getattr(group.store, "fs", None)
        if fs is not None:
            # fsspec shares one filesystem (and its listings cache) per process and options:
            # a listing from before another process wrote or deleted objects must not
            # answer the existence checks made from here on.
            fs.invalidate_cache()
        return group
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise StoreError(f"no store at {where} (check the path)") from None
    except FileExistsError:
        raise StoreError(
            f"{where} already exists; pass --resume to continue writing it, or delete it "
            f"to start over"
        ) from None
    except (ValueError, TypeError) as exc:
        # JSONDecodeError, UnicodeDecodeError, or metadata zarr cannot parse
        raise StoreError(f"{_join(where, 'zarr.json')} is damaged ({exc}); restore it from a "
                         f"copy or re-dump the cache") from None
    except Exception as exc:
        if is_transport_error(exc):
            raise unreachable(where, exc, "opening it") from exc
        if isinstance(exc, zarr.errors.BaseZarrError | OSError):
            raise StoreError(f"cannot open store {where}: {exc}") from exc
        raise


def gather(coroutines: Sequence[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run coroutines concurrently on zarr's loop; failures come back as exceptions.

    Returns only once every task they started has ended: zarr fans a read out into tasks
    of its own and, when one fails (a bad checksum), leaves the others running; a process
    that exited right then would log "Task was destroyed but it is pending!" for each.
    """

    async def run() -> list[Any]:
        before = asyncio.all_tasks()
        try:
            return await asyncio.gather(*coroutines, return_exceptions=True)
        finally:
            # Tasks of other callers on the loop may be awaited too: harmless, they end.
            while left := {t for t in asyncio.all_tasks() - before
                           if t is not asyncio.current_task() and not t.done()}:
                await asyncio.gather(*left, return_exceptions=True)

    return sync(run())


def _join(where: str, *parts: str) -> str:
    return "/".join([where.rstrip("/"), *parts])


def member(group: zarr.Group, name: str, where: str) -> zarr.Array:
    """Array ``name`` of the store at ``where``; absent or damaged metadata -> StoreError."""
    try:
        array = group[name]
    except KeyError:
        raise StoreError(f"{where} has no '{name}' array; it is damaged") from None
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{_join(where, name, 'zarr.json')} is damaged ({exc}); restore it "
                         f"from a copy or re-dump the cache") from None
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{where}: '{name}' is a group, not an array; the store is damaged")
    return array


def shard_key(array: zarr.Array, shard: int) -> str:
    """Store key of the object holding ``shard`` of a row-sharded array (one shard across
    every other axis), in zarr's default key encoding: ``name/c/<shard>/0/...``."""
    return "/".join([array.path, "c", str(shard), *["0"] * (array.ndim - 1)])


def absent_keys(group: zarr.Group, keys: Sequence[str]) -> list[str]:
    """The keys of ``keys`` with no object in the group's store (checked concurrently)."""
    found = gather([group.store.exists(key) for key in keys])
    for result in found:
        if isinstance(result, BaseException) and is_transport_error(result):
            raise unreachable(str(group.store), result, "listing its objects") from result
        if isinstance(result, BaseException):
            raise StoreError(f"cannot list the objects of {group.store}: {result}") from result
    return [key for key, ok in zip(keys, found, strict=True) if not ok]
