"""Create, fill and resume a cache store, one whole shard at a time.

zarr 3.1 rewrites a shard file on every partial write and two processes writing parts of
one shard would race, so the unit of writing is the shard: the caller hands over all of a
shard's rows (``RowBlock.concat`` of its batches) and the writer validates them, writes
every array's shard file, and only then sets the shard's flag in ``shard_complete``.
That array has one chunk (one object) per shard, so processes that own disjoint shard
ranges never touch the same object and nobody rewrites the root attributes after create.

Example (rank ``r`` of ``w`` ranks after rank 0 created the store)::

    writer = StoreWriter.open("logits.zarr", spec)        # or StoreWriter.create(...)
    for shard in writer.missing_shards(rank=r, world_size=w):
        start, stop = writer.shard_rows_range(shard)
        writer.write_shard(shard, teacher_rows(start, stop))
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from store._zarr import PathLike, data_codecs, gather, local_path, location, member, open_group
from store.errors import StoreError
from store.reader import read_flags
from store.remote import CREATING, is_transport_error, remove_store, store_state, unreachable
from store.rows import RowBlock, features_checksum, validate_block
from store.schema import (
    COMPLETE_ARRAY,
    FORMAT_VERSION,
    MANIFEST_ARRAY,
    StoreSpec,
    check_format,
    encode_ids,
    root_attrs,
)

log = logging.getLogger(__name__)

# Manifest ids are stored in chunks of this many bytes (VoxCeleb2's 1.1M ids are ~35 MB).
_ID_CHUNK_BYTES = 1 << 22


def _tool_version() -> str:
    try:
        entkd = metadata.version("entkd")
    except metadata.PackageNotFoundError:
        entkd = "unknown"
    return f"entkd {entkd} (zarr {zarr.__version__})"


def _create_arrays(group: zarr.Group, spec: StoreSpec) -> None:
    for d in spec.array_defs():
        group.create_array(
            d.name,
            shape=d.shape(spec.num_rows),
            dtype=d.dtype,
            chunks=(spec.chunk_rows, *d.inner),
            shards=(spec.shard_rows, *d.inner),
            compressors=data_codecs(),
            fill_value=d.fill,
            dimension_names=d.dims,
        )
    # One chunk per shard: each flag is its own object, written by the shard's owner only.
    group.create_array(
        COMPLETE_ARRAY,
        shape=(spec.num_shards,),
        dtype=np.uint8,
        chunks=(1,),
        compressors=[Crc32cCodec()],
        fill_value=0,
        dimension_names=("shard",),
    )
    ids = encode_ids(spec.manifest_ids)
    ids_array = group.create_array(
        MANIFEST_ARRAY,
        shape=ids.shape,
        dtype=np.uint8,
        chunks=(max(1, min(len(ids), _ID_CHUNK_BYTES)),),
        compressors=data_codecs(),
        fill_value=0,
        dimension_names=("byte",),
    )
    if len(ids):
        ids_array[:] = ids


def _fill_new(group: zarr.Group, spec: StoreSpec) -> None:
    """Every array of a new store, then its root attributes (last: they make it a store,
    replacing the :data:`~store.remote.CREATING` marker of an object store)."""
    _create_arrays(group, spec)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    group.attrs.put(root_attrs(spec, _tool_version(), created_at))


def _create_remote(path: PathLike, spec: StoreSpec, storage_options: dict[str, Any] | None,
                   finish: bool) -> zarr.Group:
    """Create a store on an object store: the group first, marked as being created, then
    the arrays, then the attributes. ``finish``: start an interrupted create over."""
    where = location(path)
    state = store_state(where, storage_options)
    if state == "creating":
        if not finish:
            raise StoreError(f"{where} is a create that was interrupted; pass --resume to "
                             f"finish it, or delete it to start over")
        log.info("removing the interrupted create at %s to create it again", where)
        remove_store(where, storage_options)
    elif state != "absent":
        raise StoreError(f"{where} already exists; pass --resume to continue writing it, or "
                         f"delete it to start over")
    try:
        group = open_group(path, "w-", storage_options, attributes={CREATING: _tool_version()})
        _fill_new(group, spec)
    except StoreError:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            raise StoreError(f"{unreachable(where, exc, 'creating it')}; rerun with --resume "
                             f"to finish the create") from exc
        raise
    return group


class StoreWriter:
    """Writes whole shards of one store; use :meth:`create` or :meth:`open`, not the class."""

    def __init__(self, path: PathLike, group: zarr.Group, spec: StoreSpec, num_utts: int):
        self.path = location(path)
        self.spec = spec
        self._num_utterances = num_utts
        self._group = group
        self._arrays = {d.name: member(group, d.name, self.path) for d in spec.array_defs()}
        self._complete = member(group, COMPLETE_ARRAY, self.path)
        # Called before each completion flag is set: raises once this process may no longer
        # write the store (a lock object's lease lost); the shard then stays unmarked.
        self.guard: Callable[[], None] = lambda: None

    @classmethod
    def create(
        cls, path: PathLike, spec: StoreSpec, *, storage_options: dict[str, Any] | None = None,
        finish_interrupted: bool = False,
    ) -> StoreWriter:
        """Create a new, empty store at ``path``; an existing path -> :class:`StoreError`.

        A local store is built under a temporary name beside ``path``
        (``.<name>.tmp-create``) and renamed to ``path`` once complete, so a create killed
        or failing halfway (a full disk) leaves nothing at ``path``; a temporary left by a
        killed create is removed by the next one (one creator per path: the dump holds the
        store's lock). On an object store, where there is no rename, the root attributes
        are written last (over a marker written first), so a killed create leaves a group
        every opener refuses as "not an entkd cache store", which ``finish_interrupted``
        removes and creates again (the dump's ``--resume``).
        """
        local = local_path(path)
        if local is None:
            group = _create_remote(path, spec, storage_options, finish_interrupted)
        else:
            if local.exists():
                raise StoreError(
                    f"{location(path)} already exists; pass --resume to continue writing it, "
                    f"or delete it to start over"
                )
            staging = local.with_name(f".{local.name}.tmp-create")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                _fill_new(open_group(staging, "w-"), spec)
                staging.rename(local)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            group = open_group(path, "r+", storage_options)
        log.info(
            "created %s: %d rows in %d shards of %d rows, k=%d, T=%s",
            location(path),
            spec.num_rows,
            spec.num_shards,
            spec.shard_rows,
            spec.k,
            list(spec.temperatures),
        )
        return cls(path, group, spec, len(spec.manifest_ids))

    @classmethod
    def open(
        cls,
        path: PathLike,
        spec: StoreSpec | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
    ) -> StoreWriter:
        """Reopen an existing store to resume it or to write another rank's shards.

        With ``spec``, refuse a store created with different settings (naming the fields).
        """
        where = location(path)
        group = open_group(path, "r+", storage_options)
        attrs = group.attrs.asdict()
        check_format(attrs, where, versions=(FORMAT_VERSION,))
        stored, num_utts = StoreSpec.from_attrs(attrs["spec"])
        if spec is None:
            return cls(path, group, stored, num_utts)
        differing = stored.differences(dataclasses.replace(spec, manifest_ids=()))
        if len(spec.manifest_ids) != num_utts:
            differing.append("manifest_ids")
        if differing:
            raise StoreError(
                f"{where} was created with different {', '.join(differing)} than this run; "
                f"resume only with the same settings, or write a new store"
            )
        return cls(path, group, spec, num_utts)

    @property
    def num_shards(self) -> int:
        return self.spec.num_shards

    def shard_rows_range(self, shard: int) -> tuple[int, int]:
        """Half-open global rows ``(start, stop)`` that :meth:`write_shard` expects."""
        return self.spec.shard_range(shard)

    def complete_flags(self) -> np.ndarray:
        """bool per shard: True when its rows are all written."""
        return read_flags(self._group, self.path)

    def missing_shards(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Shards still to write (all of them for a new store); resume writes exactly these.

        With ``rank``/``world_size``, only those owned by that rank (``shard % world_size ==
        rank``): ownership by shard number, not by position in this list, stays disjoint
        while other ranks are already writing.
        """
        if not 0 <= rank < world_size:
            raise StoreError(f"rank {rank} is not in [0, world_size={world_size})")
        missing = np.flatnonzero(~self.complete_flags())
        return [int(i) for i in missing if i % world_size == rank]

    def missing_row_ranges(self) -> list[tuple[int, int]]:
        """Row ranges still missing, adjacent shards merged, e.g. ``[(0, 65536)]``."""
        ranges: list[tuple[int, int]] = []
        for shard in self.missing_shards():
            start, stop = self.shard_rows_range(shard)
            if ranges and ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], stop)
            else:
                ranges.append((start, stop))
        return ranges

    def write_shard(self, shard: int, block: RowBlock) -> None:
        """Validate and write all rows of ``shard``, then mark it complete.

        A store with stored features gets each row's ``features_checksum`` computed here
        when the block does not carry it.

        Rewriting a complete shard first clears its flag, so a kill in between leaves it
        missing (and rewritten on resume), never complete with mixed data.
        """
        start, stop = self.shard_rows_range(shard)
        if len(block) != stop - start:
            raise StoreError(
                f"shard {shard} of {self.path} needs all its rows {start}..{stop - 1} "
                f"({stop - start} rows), got a block of {len(block)}; write whole shards "
                f"(RowBlock.concat the batches)"
            )
        if self.spec.has_features_checksum and block.features_checksum is None:
            block = dataclasses.replace(block, features_checksum=features_checksum(
                block.utt, block.start, block.seed, block.features))
        try:
            checked = validate_block(block, self.spec, start, self._num_utterances)
        except StoreError as exc:
            raise StoreError(f"shard {shard} of {self.path}: {exc}") from None
        with self._talking(f"clearing the flag of shard {shard}"):
            if self._complete[shard]:
                self._complete[shard] = 0
        arrays = checked.arrays()
        results = gather(
            [
                self._arrays[name].async_array.setitem(slice(start, stop), arrays[name])
                for name in self._arrays
            ]
        )
        failed = [(n, r) for n, r in zip(self._arrays, results, strict=True) if r is not None]
        if failed:
            name, exc = failed[0]
            if is_transport_error(exc):
                raise unreachable(self.path, exc, f"writing shard {shard} ({name})") from exc
            raise StoreError(
                f"writing shard {shard} ({name}) of {self.path} failed: {exc}"
            ) from exc
        self.guard()
        with self._talking(f"marking shard {shard} complete"):
            self._complete[shard] = 1
        log.debug("wrote shard %d (rows %d..%d) of %s", shard, start, stop - 1, self.path)

    @contextlib.contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """A lost connection inside the block -> StoreError naming the store."""
        try:
            yield
        except Exception as exc:
            if is_transport_error(exc) and not isinstance(exc, StoreError):
                raise unreachable(self.path, exc, doing) from exc
            raise

    def invalidate(self, shards: Iterable[int]) -> None:
        """Mark shards missing again so a resumed dump rewrites them (e.g. after verify)."""
        for shard in shards:
            self.shard_rows_range(shard)  # range check with a clear message
            with self._talking(f"clearing the flag of shard {shard}"):
                self._complete[shard] = 0
