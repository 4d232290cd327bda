"""Read a cache store: compatibility checks, random access and per-epoch streaming.

The unit of reading is a chunk (``chunk_rows`` rows of every array, fetched concurrently).
Every read goes through :meth:`StoreReader.read_chunk`, which refuses chunks of shards
not marked complete and turns a checksum failure or a missing shard file into a
:class:`~store.errors.CorruptShardError` naming the shard, so a damaged store raises
instead of returning wrong numbers.

Example (a DataLoader worker of a DDP rank)::

    reader = StoreReader.open("logits.zarr", manifest_hash=manifest.content_hash(),
                              num_classes=label_map.num_classes)
    t = reader.temperature_index(1.0)
    for block in reader.iter_blocks(epoch, seed=0, rank=rank, world_size=world,
                                    worker=worker, num_workers=workers):
        train_on(block.label, block.topk_logit, block.tail_lse[:, t])
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr

from store._zarr import (
    PathLike,
    absent_keys,
    gather,
    local_path,
    location,
    member,
    open_group,
    shard_key,
)
from store.errors import CorruptShardError, StoreError
from store.lock import current_writer
from store.remote import is_transport_error, unreachable
from store.rows import RowBlock, check_block, missing_arrays
from store.schema import COMPLETE_ARRAY, MANIFEST_ARRAY, StoreSpec, check_format, decode_ids

# Chunks fetched concurrently by read() and take(): enough to hide per-request latency,
# few enough to keep memory at a few chunks beyond the result.
_BATCH_CHUNKS = 4


def format_ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (for messages about shards)."""
    parts: list[str] = []
    values = sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts)


def read_flags(group: zarr.Group, where: str) -> np.ndarray:
    """The ``shard_complete`` flags as bools; a corrupt flag object -> StoreError."""
    flags = member(group, COMPLETE_ARRAY, where)
    try:
        return np.asarray(flags[:], dtype=bool)
    except Exception as exc:
        if is_transport_error(exc):
            raise unreachable(where, exc, f"reading its {COMPLETE_ARRAY} flags") from exc
        if not isinstance(exc, ValueError | RuntimeError):
            raise
        raise StoreError(
            f"{where}: the {COMPLETE_ARRAY} flags are corrupt ({exc}); delete "
            f"{COMPLETE_ARRAY}/c/ and resume the dump to rewrite every shard"
        ) from exc


def incomplete_advice(where: str, storage_options: dict[str, Any] | None = None) -> str:
    """What to do about unwritten shards: wait for the process that holds the store's lock
    (a dump still running), or finish the dump."""
    local = local_path(where)
    writer = current_writer(where if local is None else local, storage_options)
    if writer is not None:
        return f"another process ({writer}) is still writing it: wait for it to finish"
    return (f"finish the dump with --resume (`python -m store verify --allow-incomplete "
            f"{where}` checks the shards written so far)")


def _check_seed(name: str, value: int) -> int:
    if not isinstance(value, int | np.integer) or value < 0:
        raise StoreError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class StoreReader:
    """Read-only access to one store; build it with :meth:`open`.

    ``spec`` is the store's :class:`StoreSpec` *without* ``manifest_ids`` (they can be
    tens of MB; call :meth:`manifest_ids` when you need them); ``num_utterances`` says how
    many there are; ``spec.format_version`` which version the store is (1 or 2). A reader
    pickles as its path and options (DataLoader workers reopen).

    Every row a reader returns has passed its chunk's checksums and the row invariants of
    FORMAT.md; the ``features`` array (stored student features) is read only when asked
    (``features=True``), since it is ~100x the size of the rest of a row.
    """

    def __init__(
        self,
        path: PathLike,
        group: zarr.Group,
        attrs: dict[str, Any],
        spec: StoreSpec,
        num_utterances: int,
        complete: np.ndarray,
        options: dict[str, Any],
    ) -> None:
        self.path = location(path)
        self.group = group
        self.attrs = attrs
        self.spec = spec
        self.num_utterances = num_utterances
        self._complete = complete
        self._options = options
        arrays = {d.name: member(group, d.name, self.path) for d in spec.array_defs()}
        self._features = arrays.pop("features", None)
        self._arrays = arrays
        self._pid = os.getpid()

    @classmethod
    def open(
        cls,
        path: PathLike,
        *,
        manifest_hash: str | None = None,
        num_classes: int | None = None,
        allow_incomplete: bool = False,
        check_files: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> StoreReader:
        """Open ``path`` after checking version, spec checksum, array metadata, manifest
        hash, class count, completeness and that every complete shard has its objects.

        ``manifest_hash`` / ``num_classes``: what the caller expects (None = do not check).
        ``allow_incomplete``: open a store with unwritten shards; only complete shards are
        then streamed, and reading rows of a missing shard raises :class:`StoreError`.
        ``check_files=False`` skips the shard-object check (``store verify`` reports it).
        """
        where = location(path)
        group = open_group(path, "r", storage_options)
        attrs = group.attrs.asdict()
        version = check_format(attrs, where)
        spec, num_utts = StoreSpec.from_attrs(attrs["spec"], format_version=version)
        for d in spec.array_defs():
            array = member(group, d.name, where)
            if array.shape != d.shape(spec.num_rows) or array.dtype != d.dtype:
                raise StoreError(
                    f"{where}: array '{d.name}' is {array.dtype}{list(array.shape)}, the format "
                    f"needs {d.dtype}{list(d.shape(spec.num_rows))}; the store is damaged"
                )
            if not d.is_fill(array.metadata.fill_value):
                # A missing object reads back as the fill value: an edited fill could
                # pass for data, so only the format's (invalid) fill is accepted.
                raise StoreError(
                    f"{where}/{d.name}/zarr.json: fill_value is {array.metadata.fill_value}, "
                    f"the format's is {d.fill}; the array metadata was edited: restore it or "
                    f"re-dump the cache"
                )
        if manifest_hash is not None and manifest_hash != spec.manifest_hash:
            raise StoreError(
                f"{where} was dumped from manifest {spec.manifest_hash[:12]}..., not from the "
                f"given manifest {manifest_hash[:12]}...; use the manifest the cache was "
                f"written from, or re-dump the cache"
            )
        if num_classes is not None and num_classes != spec.num_classes:
            raise StoreError(
                f"{where} holds logits over {spec.num_classes} teacher classes but "
                f"{num_classes} are expected; the label maps differ (speakers x speeds?)"
            )
        complete = read_flags(group, where)
        missing = np.flatnonzero(~complete)
        if len(missing) and not allow_incomplete:
            raise StoreError(
                f"{where} is incomplete: {len(missing)} of {spec.num_shards} shards are not "
                f"written (shards {format_ranges(missing.tolist())}); "
                f"{incomplete_advice(where, storage_options)}"
            )
        options = {
            "manifest_hash": manifest_hash,
            "num_classes": num_classes,
            "allow_incomplete": allow_incomplete,
            "check_files": False,  # checked once here, not again in every DataLoader worker
            "storage_options": storage_options,
        }
        reader = cls(path, group, attrs, spec, num_utts, complete, options)
        if check_files:
            absent = reader.missing_shard_objects()
            if absent:
                shards = sorted(absent)
                first = absent[shards[0]][0]
                raise StoreError(
                    f"{where}: shard(s) {format_ranges(shards)} are marked complete but "
                    f"{sum(map(len, absent.values()))} of their objects are missing (first: "
                    f"{first}); mark them for rewrite with `python -m store invalidate {where} "
                    f"{' '.join(map(str, shards))}` and resume the dump"
                )
        return reader

    # A reader travels to DataLoader workers / other processes as its path and options.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = StoreReader.open(state["path"], **state["options"])
        self.__dict__.update(other.__dict__)

    def _reopen_after_fork(self) -> None:
        """In a forked child (a DataLoader worker), reopen a store on an object store: the
        copied connections belong to the parent's event loop, which the child lacks."""
        if self._pid != os.getpid() and local_path(self.path) is None:
            self.__setstate__(self.__getstate__())

    def __len__(self) -> int:
        return self.spec.num_rows

    def __repr__(self) -> str:
        return f"StoreReader({self.path!r}, rows={len(self)}, k={self.spec.k})"

    # -- metadata --------------------------------------------------------------------------

    def manifest_ids(self) -> tuple[str, ...]:
        """The manifest ids (``utt`` indexes them), read from the store on each call."""
        self._reopen_after_fork()
        try:
            data = np.asarray(self.group[MANIFEST_ARRAY][:])
        except (ValueError, RuntimeError) as exc:
            raise StoreError(f"{self.path}: the manifest_ids array is corrupt ({exc})") from exc
        return decode_ids(data, self.num_utterances)

    def complete_flags(self) -> np.ndarray:
        """bool per shard, as read at open time."""
        return self._complete.copy()

    def missing_shards(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self._complete)]

    def missing_shard_objects(self) -> dict[int, list[str]]:
        """Complete shards whose object of some array is absent -> the absent keys.

        zarr reads an absent shard object as fill values, so this is what tells a deleted
        file from data (one existence check per array and complete shard).
        """
        self._reopen_after_fork()
        arrays = [a for name, a in self._arrays.items()
                  # an empty tail's draws are all fill (-1), which zarr does not store
                  if name != "tail_index" or self.spec.k < self.spec.num_classes - 1]
        arrays += [self._features] if self._features else []
        shards = [int(i) for i in np.flatnonzero(self._complete)]
        keys = [(shard, shard_key(a, shard)) for shard in shards for a in arrays]
        absent = set(absent_keys(self.group, [key for _, key in keys]))
        out: dict[int, list[str]] = {}
        for shard, key in keys:
            if key in absent:
                out.setdefault(shard, []).append(key)
        return out

    def temperature_index(self, temperature: float) -> int:
        """Column of ``tail_lse`` for ``temperature``; not in the grid -> StoreError."""
        return self.spec.temperature_index(temperature)

    def check_topk(self, k_prime: int) -> int:
        """Return ``k_prime`` if ``0 <= k' <= k``, else raise StoreError."""
        return self.spec.check_topk(k_prime)

    # -- reading ---------------------------------------------------------------------------

    def _empty_block(self, n: int, features: bool) -> RowBlock:
        return RowBlock.from_arrays(
            {d.name: np.empty(d.shape(n), dtype=d.dtype) for d in self.spec.array_defs()
             if features or d.name != "features"}
        )

    def _read_arrays(self, features: bool) -> dict[str, zarr.Array]:
        if not features:
            return self._arrays
        if self._features is None:
            raise StoreError(f"{self.path} has no stored features (dumped without "
                             f"--store-features); replay the crops instead")
        return {**self._arrays, "features": self._features}

    def read_chunk(self, chunk: int, *, features: bool = False) -> RowBlock:
        """All rows of one chunk; raises for unwritten, corrupt or missing data."""
        return self.read_chunks([chunk], features=features)[0]

    def read_chunks(
        self, chunks: Sequence[int], *, features: bool = False, check_rows: bool = True
    ) -> list[RowBlock]:
        """Several chunks, every array of every chunk fetched concurrently.

        Raises :class:`StoreError` for a chunk of an unwritten shard or rows breaking the
        format's invariants, and :class:`CorruptShardError` for bytes failing their
        checksum or missing data. ``features``: also read the stored features.
        ``check_rows=False`` skips the invariants (``store verify`` lists them itself).
        """
        self._reopen_after_fork()
        spec = self.spec
        arrays = self._read_arrays(features)
        for chunk in chunks:
            if not 0 <= chunk < spec.num_chunks:
                raise StoreError(
                    f"chunk {chunk} is out of range: {self.path} has {spec.num_chunks}"
                )
            shard = spec.shard_of_chunk(chunk)
            if not self._complete[shard]:
                start, stop = spec.chunk_range(chunk)
                raise StoreError(
                    f"rows {start}..{stop - 1} of {self.path} are in shard {shard}, which is "
                    f"not written yet; "
                    f"{incomplete_advice(self.path, self._options['storage_options'])}"
                )
        ranges = [spec.chunk_range(c) for c in chunks]
        results = iter(
            gather(
                [
                    array.async_array.getitem(slice(start, stop))
                    for start, stop in ranges
                    for array in arrays.values()
                ]
            )
        )
        blocks = []
        for chunk, (start, stop) in zip(chunks, ranges, strict=True):
            got = {name: next(results) for name in arrays}
            blocks.append(
                self._checked_block(spec.shard_of_chunk(chunk), start, stop, got, check_rows)
            )
        return blocks

    def _checked_block(
        self, shard: int, start: int, stop: int, results: dict[str, Any], check_rows: bool
    ) -> RowBlock:
        spec = self.spec
        arrays: dict[str, np.ndarray] = {}
        for name, result in results.items():
            if isinstance(result, ValueError | RuntimeError):
                # crc32c mismatch (ValueError) or undecodable bytes: never return them.
                reason = (
                    "fail their crc32c checksum"
                    if "checksum" in str(result)
                    else f"cannot be decoded ({result})"
                )
                raise CorruptShardError(
                    f"{self.path}: shard {shard} is corrupt: array '{name}' rows "
                    f"{start}..{stop - 1} {reason}; mark it for rewrite "
                    f"with `python -m store invalidate {self.path} {shard}` and resume the dump",
                    shard=shard,
                    array=name,
                    rows=(start, stop),
                )
            if isinstance(result, BaseException) and is_transport_error(result):
                raise unreachable(self.path, result, f"reading shard {shard} ('{name}')")
            if isinstance(result, BaseException):
                raise StoreError(
                    f"reading shard {shard} ('{name}') of {self.path} failed: {result}"
                ) from result
            arrays[name] = np.asarray(result)
        missing = missing_arrays(arrays, spec)
        if missing:
            raise CorruptShardError(
                f"{self.path}: shard {shard} is marked complete but has no data for "
                f"{', '.join(missing)} in rows {start}..{stop - 1} (deleted shard file?); "
                f"mark it for rewrite with `python -m store invalidate {self.path} {shard}` "
                f"and resume the dump",
                shard=shard,
                array=missing[0],
                rows=(start, stop),
            )
        block = RowBlock.from_arrays(arrays)
        if check_rows:
            _, problems = check_block(block, spec, start, self.num_utterances,
                                      features="features" in arrays)
            if problems:
                more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise StoreError(
                    f"{self.path}: rows {start}..{stop - 1} (shard {shard}) break the cache "
                    f"format: {problems[0]}{more}; the store was written by another tool or "
                    f"edited: `python -m store verify {self.path}` lists every problem"
                )
        return block

    def check_data(self, *, features: bool = False) -> int:
        """Read every chunk of every complete shard, as :meth:`read` would, and return the
        number of rows checked: checksums, missing data and row invariants (with
        ``features``, also that the stored features are the rows' own). A run calls it when
        it opens the cache, so damage is refused before its first step, not mid-epoch."""
        chunks = [c for c in range(self.spec.num_chunks)
                  if self._complete[self.spec.shard_of_chunk(c)]]
        rows = 0
        for i in range(0, len(chunks), _BATCH_CHUNKS):
            rows += sum(map(len, self.read_chunks(chunks[i:i + _BATCH_CHUNKS],
                                                  features=features)))
        return rows

    def read_chunk_unchecked(self, chunk: int) -> RowBlock:
        """One chunk with every array (stored features included), checksums and missing
        data checked but not the row invariants: for ``store verify``, which lists them."""
        return self.read_chunks([chunk], features=self.spec.features is not None,
                                check_rows=False)[0]

    def read(self, start: int, stop: int, *, features: bool = False) -> RowBlock:
        """Rows ``start..stop-1`` (global row numbers)."""
        if not 0 <= start <= stop <= len(self):
            raise StoreError(f"rows {start}..{stop} are out of range: {self.path} has {len(self)}")
        rows = self.spec.chunk_rows
        chunks = list(range(start // rows, -(-stop // rows)))
        parts = []
        for i in range(0, len(chunks), _BATCH_CHUNKS):
            batch = chunks[i : i + _BATCH_CHUNKS]
            blocks = self.read_chunks(batch, features=features)
            for chunk, block in zip(batch, blocks, strict=True):
                lo = chunk * rows
                parts.append(block.slice(max(start - lo, 0), stop - lo))
        return RowBlock.concat(parts) if parts else self._empty_block(0, features)

    def take(self, index: np.ndarray | Sequence[int], *, features: bool = False) -> RowBlock:
        """Rows at arbitrary global indices, in the given order (repeats allowed)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise StoreError(f"row {bad} is out of range: {self.path} has {len(self)} rows")
        out = self._empty_block(len(index), features).arrays()
        chunks = index // self.spec.chunk_rows
        unique = [int(c) for c in np.unique(chunks)]
        for i in range(0, len(unique), _BATCH_CHUNKS):
            batch = unique[i : i + _BATCH_CHUNKS]
            blocks = self.read_chunks(batch, features=features)
            for chunk, block in zip(batch, blocks, strict=True):
                where = np.flatnonzero(chunks == chunk)
                local = index[where] - chunk * self.spec.chunk_rows
                for name, array in block.arrays().items():
                    out[name][where] = array[local]
        return RowBlock.from_arrays(out)

    # -- streaming ---------------------------------------------------------------------------

    def chunks_for(
        self,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        shuffle: bool = True,
    ) -> list[int]:
        """Chunks one (rank, worker) streams in ``epoch``, in order.

        All participants permute the chunks of complete shards with the same
        ``(seed, epoch)`` generator and take every ``world_size * num_workers``-th one, so
        their sets are disjoint and cover the store; counts differ by at most one chunk.
        """
        epoch, seed = _check_seed("epoch", epoch), _check_seed("seed", seed)
        if not 0 <= rank < world_size:
            raise StoreError(f"rank {rank} is not in [0, world_size={world_size})")
        if not 0 <= worker < num_workers:
            raise StoreError(f"worker {worker} is not in [0, num_workers={num_workers})")
        per_shard = self.spec.chunks_per_shard
        chunks = np.arange(self.spec.num_chunks)
        chunks = chunks[self._complete[chunks // per_shard]]
        if shuffle:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
            chunks = rng.permutation(chunks)
        participant = rank * num_workers + worker
        return [int(c) for c in chunks[participant :: world_size * num_workers]]

    def iter_blocks(
        self,
        epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        shuffle_chunks: int = 4,
        *,
        block_rows: int | None = None,
        shuffle: bool = True,
        features: bool = False,
    ) -> Iterator[RowBlock]:
        """Stream this participant's rows of ``epoch`` as blocks of ``block_rows`` rows.

        Chunks come in the order of :meth:`chunks_for`; rows of ``shuffle_chunks``
        consecutive chunks are shuffled together (the shuffle buffer), so memory stays at
        a few chunks whatever the store size. Only the last block may be shorter.
        ``shuffle=False`` streams chunks and rows in store order (evaluation, replay).
        ``features``: the blocks carry the stored features too (the same rows either way).
        """
        if shuffle_chunks < 1:
            raise StoreError(f"shuffle_chunks must be >= 1, got {shuffle_chunks}")
        size = self.spec.chunk_rows if block_rows is None else block_rows
        if size < 1:
            raise StoreError(f"block_rows must be >= 1, got {block_rows}")
        chunks = self.chunks_for(epoch, seed, rank, world_size, worker, num_workers, shuffle)
        participant = rank * num_workers + worker
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([seed, epoch, participant, 1]))
        )
        pending: RowBlock | None = None
        for i in range(0, len(chunks), shuffle_chunks):
            parts = self.read_chunks(chunks[i : i + shuffle_chunks], features=features)
            buffer = RowBlock.concat(parts)
            del parts
            if shuffle:
                buffer = buffer.take(rng.permutation(len(buffer)))
            if pending is not None:
                buffer = RowBlock.concat([pending, buffer])
            full = len(buffer) - len(buffer) % size
            for lo in range(0, full, size):
                yield buffer.slice(lo, lo + size)
            pending = buffer.slice(full, len(buffer)) if full < len(buffer) else None
        if pending is not None:
            yield pending
