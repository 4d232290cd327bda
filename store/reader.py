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

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr

from store._zarr import PathLike, gather, location, open_group
from store.errors import CorruptShardError, StoreError
from store.schema import (
    COMPLETE_ARRAY,
    MANIFEST_ARRAY,
    RowBlock,
    StoreSpec,
    check_format,
    decode_ids,
    missing_arrays,
)

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
    try:
        return np.asarray(group[COMPLETE_ARRAY][:], dtype=bool)
    except KeyError:
        raise StoreError(f"{where} has no '{COMPLETE_ARRAY}' array; it is damaged") from None
    except (ValueError, RuntimeError) as exc:
        raise StoreError(
            f"{where}: the {COMPLETE_ARRAY} flags are corrupt ({exc}); delete "
            f"{COMPLETE_ARRAY}/c/ and resume the dump to rewrite every shard"
        ) from exc


def _check_seed(name: str, value: int) -> int:
    if not isinstance(value, int | np.integer) or value < 0:
        raise StoreError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class StoreReader:
    """Read-only access to one store; build it with :meth:`open`.

    ``spec`` is the store's :class:`StoreSpec` *without* ``manifest_ids`` (they can be
    tens of MB; call :meth:`manifest_ids` when you need them); ``num_utterances`` says how
    many there are. A reader pickles as its path and options (DataLoader workers reopen).
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
        self._arrays = {d.name: group[d.name] for d in spec.array_defs()}

    @classmethod
    def open(
        cls,
        path: PathLike,
        *,
        manifest_hash: str | None = None,
        num_classes: int | None = None,
        allow_incomplete: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> StoreReader:
        """Open ``path`` after checking version, manifest hash, class count, completeness.

        ``manifest_hash`` / ``num_classes``: what the caller expects (None = do not check).
        ``allow_incomplete``: open a store with unwritten shards; only complete shards are
        then streamed, and reading rows of a missing shard raises :class:`StoreError`.
        """
        where = location(path)
        group = open_group(path, "r", storage_options)
        attrs = group.attrs.asdict()
        check_format(attrs, where)
        spec, num_utts = StoreSpec.from_attrs(attrs["spec"])
        for d in spec.array_defs():
            try:
                array = group[d.name]
            except KeyError:
                raise StoreError(f"{where} has no '{d.name}' array; it is damaged") from None
            if array.shape != d.shape(spec.num_rows) or array.dtype != d.dtype:
                raise StoreError(
                    f"{where}: array '{d.name}' is {array.dtype}{list(array.shape)}, the format "
                    f"needs {d.dtype}{list(d.shape(spec.num_rows))}; the store is damaged"
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
                f"written (shards {format_ranges(missing.tolist())}); finish the dump with "
                f"--resume, or open it allowing incomplete stores"
            )
        options = {
            "manifest_hash": manifest_hash,
            "num_classes": num_classes,
            "allow_incomplete": allow_incomplete,
            "storage_options": storage_options,
        }
        return cls(path, group, attrs, spec, num_utts, complete, options)

    # A reader travels to DataLoader workers / other processes as its path and options.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = StoreReader.open(state["path"], **state["options"])
        self.__dict__.update(other.__dict__)

    def __len__(self) -> int:
        return self.spec.num_rows

    def __repr__(self) -> str:
        return f"StoreReader({self.path!r}, rows={len(self)}, k={self.spec.k})"

    # -- metadata --------------------------------------------------------------------------

    def manifest_ids(self) -> tuple[str, ...]:
        """The manifest ids (``utt`` indexes them), read from the store on each call."""
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

    def temperature_index(self, temperature: float) -> int:
        """Column of ``tail_lse`` for ``temperature``; not in the grid -> StoreError."""
        return self.spec.temperature_index(temperature)

    def check_topk(self, k_prime: int) -> int:
        """Return ``k_prime`` if ``0 <= k' <= k``, else raise StoreError."""
        return self.spec.check_topk(k_prime)

    # -- reading ---------------------------------------------------------------------------

    def _empty_block(self, n: int) -> RowBlock:
        return RowBlock.from_arrays(
            {d.name: np.empty(d.shape(n), dtype=d.dtype) for d in self.spec.array_defs()}
        )

    def read_chunk(self, chunk: int) -> RowBlock:
        """All rows of one chunk; raises for unwritten, corrupt or missing data."""
        return self.read_chunks([chunk])[0]

    def read_chunks(self, chunks: Sequence[int]) -> list[RowBlock]:
        """Several chunks, every array of every chunk fetched concurrently.

        Raises :class:`StoreError` for a chunk of an unwritten shard and
        :class:`CorruptShardError` for bytes failing their checksum or missing data.
        """
        spec = self.spec
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
                    f"not written yet; finish the dump with --resume"
                )
        ranges = [spec.chunk_range(c) for c in chunks]
        results = iter(
            gather(
                [
                    array.async_array.getitem(slice(start, stop))
                    for start, stop in ranges
                    for array in self._arrays.values()
                ]
            )
        )
        blocks = []
        for chunk, (start, stop) in zip(chunks, ranges, strict=True):
            arrays = {name: next(results) for name in self._arrays}
            blocks.append(self._checked_block(spec.shard_of_chunk(chunk), start, stop, arrays))
        return blocks

    def _checked_block(
        self, shard: int, start: int, stop: int, results: dict[str, Any]
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
        return RowBlock.from_arrays(arrays)

    def read(self, start: int, stop: int) -> RowBlock:
        """Rows ``start..stop-1`` (global row numbers)."""
        if not 0 <= start <= stop <= len(self):
            raise StoreError(f"rows {start}..{stop} are out of range: {self.path} has {len(self)}")
        rows = self.spec.chunk_rows
        chunks = list(range(start // rows, -(-stop // rows)))
        parts = []
        for i in range(0, len(chunks), _BATCH_CHUNKS):
            batch = chunks[i : i + _BATCH_CHUNKS]
            for chunk, block in zip(batch, self.read_chunks(batch), strict=True):
                lo = chunk * rows
                parts.append(block.slice(max(start - lo, 0), stop - lo))
        return RowBlock.concat(parts) if parts else self._empty_block(0)

    def take(self, index: np.ndarray | Sequence[int]) -> RowBlock:
        """Rows at arbitrary global indices, in the given order (repeats allowed)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise StoreError(f"row {bad} is out of range: {self.path} has {len(self)} rows")
        out = self._empty_block(len(index)).arrays()
        chunks = index // self.spec.chunk_rows
        unique = [int(c) for c in np.unique(chunks)]
        for i in range(0, len(unique), _BATCH_CHUNKS):
            batch = unique[i : i + _BATCH_CHUNKS]
            for chunk, block in zip(batch, self.read_chunks(batch), strict=True):
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
    ) -> Iterator[RowBlock]:
        """Stream this participant's rows of ``epoch`` as blocks of ``block_rows`` rows.

        Chunks come in the order of :meth:`chunks_for`; rows of ``shuffle_chunks``
        consecutive chunks are shuffled together (the shuffle buffer), so memory stays at
        a few chunks whatever the store size. Only the last block may be shorter.
        ``shuffle=False`` streams chunks and rows in store order (evaluation, replay).
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
            parts = self.read_chunks(chunks[i : i + shuffle_chunks])
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
