"""StoreReader: round trip, compatibility errors, streaming split, corruption."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import CorruptShardError, RowBlock, StoreError, StoreReader, StoreWriter
from store.synthetic import synthetic_rows, synthetic_spec


def _loosen(block: RowBlock, logit_dtype, index_dtype) -> RowBlock:
    """What a producer might hand over: wider or other dtypes than the storage ones."""
    return dataclasses.replace(
        block,
        utt=block.utt.astype(index_dtype),
        label=block.label.astype(index_dtype),
        topk_index=block.topk_index.astype(index_dtype),
        topk_logit=block.topk_logit.astype(logit_dtype),
        target_logit=block.target_logit.astype(np.float64),
    )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip(data):
    num_classes = data.draw(st.sampled_from([2, 3, 17, 300, 32767, 32768, 40_000]))
    temps = data.draw(
        st.lists(
            st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    chunk_rows = data.draw(st.integers(1, 48))
    num_chunks = data.draw(st.integers(1, 8))  # few chunks: each chunk read costs ~5 ms
    spec = synthetic_spec(
        num_rows=data.draw(st.integers((num_chunks - 1) * chunk_rows + 1, num_chunks * chunk_rows)),
        num_classes=num_classes,
        k=data.draw(st.integers(1, min(num_classes - 1, 24))),
        temperatures=tuple(temps),
        num_utterances=data.draw(st.sampled_from([0, 7, 60])),
        chunk_rows=chunk_rows,
        shard_rows=chunk_rows * data.draw(st.integers(1, 4)),
        embedding_dim=data.draw(st.sampled_from([0, 3])),
    )
    logit_dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    index_dtype = data.draw(st.sampled_from([np.int32, np.int64]))
    seed = data.draw(st.integers(0, 2**32))
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.zarr"
        writer = StoreWriter.create(path, spec)
        order = data.draw(st.permutations(range(spec.num_shards)))
        for shard in order:
            start, stop = writer.shard_rows_range(shard)
            expected[start] = synthetic_rows(spec, start, stop, seed)
            writer.write_shard(shard, _loosen(expected[start], logit_dtype, index_dtype))
        want = RowBlock.concat([expected[s] for s in sorted(expected)])

        reader = StoreReader.open(path, manifest_hash=spec.manifest_hash, num_classes=num_classes)
        assert len(reader) == spec.num_rows and reader.num_utterances == len(spec.manifest_ids)
        assert reader.spec == dataclasses.replace(spec, manifest_ids=())
        assert reader.manifest_ids() == spec.manifest_ids
        got = reader.read(0, len(reader))
        for name, array in want.arrays().items():
            assert got.arrays()[name].dtype == array.dtype, name
            np.testing.assert_array_equal(got.arrays()[name], array, err_msg=name)

        lo = data.draw(st.integers(0, spec.num_rows))
        hi = data.draw(st.integers(lo, spec.num_rows))
        np.testing.assert_array_equal(reader.read(lo, hi).tail_lse, want.tail_lse[lo:hi])
        index = data.draw(st.lists(st.integers(0, spec.num_rows - 1), max_size=40))
        np.testing.assert_array_equal(reader.take(index).topk_logit, want.topk_logit[index])

        world = data.draw(st.integers(1, 3))
        workers = data.draw(st.integers(1, 3))
        seeds = [
            block.seed
            for rank in range(world)
            for worker in range(workers)
            for block in reader.iter_blocks(
                epoch=data.draw(st.just(2)),
                seed=seed % 1000,
                rank=rank,
                world_size=world,
                worker=worker,
                num_workers=workers,
                shuffle_chunks=data.draw(st.integers(1, 3)),
            )
        ]
        streamed = np.concatenate(seeds)
        assert len(streamed) == spec.num_rows  # every row exactly once over all participants
        np.testing.assert_array_equal(np.sort(streamed), np.sort(want.seed))


def test_open_errors(tmp_path, small_store):
    path, spec = small_store
    with pytest.raises(StoreError, match="no store at"):
        StoreReader.open(tmp_path / "nothing.zarr")
    with pytest.raises(
        StoreError,
        match=r"dumped from manifest synthetic-ma\.\.\., not from the given manifest ffff",
    ):
        StoreReader.open(path, manifest_hash="ffffffffffffffff")
    with pytest.raises(
        StoreError, match="holds logits over 50 teacher classes but 1211 are expected"
    ):
        StoreReader.open(path, num_classes=1211)
    group = zarr.open_group(str(path), mode="r+")
    group.update_attributes({"format_version": 9})
    with pytest.raises(
        StoreError, match="has cache format version 9 but this entkd reads version 1, 2 or 3"
    ):
        StoreReader.open(path)


def test_damaged_array_is_refused(tmp_path, make_spec, write_store):
    path = write_store(tmp_path / "s.zarr", make_spec())
    group = zarr.open_group(str(path), mode="r+")
    del group["tail_lse"]
    group.create_array("tail_lse", shape=(1000, 3), dtype="f4", chunks=(64, 3))
    with pytest.raises(
        StoreError,
        match=r"array 'tail_lse' is float32\[1000, 3\], the format needs float32\[1000, 2\]",
    ):
        StoreReader.open(path)


def test_temperature_and_topk_errors(small_store):
    reader = StoreReader.open(small_store[0])
    assert reader.temperature_index(2.0) == 1
    with pytest.raises(StoreError, match=r"temperature 3 is not in the store's grid \[1.0, 2.0\]"):
        reader.temperature_index(3)
    assert reader.check_topk(8) == 8
    with pytest.raises(StoreError, match="k'=9 is not available"):
        reader.check_topk(9)


def test_incomplete_store(tmp_path, make_spec):
    spec = make_spec()
    writer = StoreWriter.create(tmp_path / "s.zarr", spec)
    for shard in (0, 2):
        start, stop = writer.shard_rows_range(shard)
        writer.write_shard(shard, synthetic_rows(spec, start, stop))
    with pytest.raises(
        StoreError,
        match=r"incomplete: 2 of 4 shards are not written \(shards 1, 3\); finish the dump with --resume",
    ):
        StoreReader.open(tmp_path / "s.zarr")
    reader = StoreReader.open(tmp_path / "s.zarr", allow_incomplete=True)
    assert reader.missing_shards() == [1, 3]
    rows = sum(len(b) for b in reader.iter_blocks(0, 0))
    assert rows == 512
    assert {reader.spec.shard_of_chunk(c) for c in reader.chunks_for(0, 0)} == {0, 2}
    with pytest.raises(
        StoreError, match=r"rows 256\.\.319 of .* are in shard 1, which is not written yet"
    ):
        reader.read(250, 300)


def test_streaming_order_and_blocks(small_store):
    reader = StoreReader.open(small_store[0])
    everything = reader.read(0, len(reader))
    in_order = list(reader.iter_blocks(0, 0, shuffle=False, block_rows=100))
    assert [len(b) for b in in_order] == [100] * 10
    np.testing.assert_array_equal(RowBlock.concat(in_order).seed, everything.seed)

    def order(epoch: int) -> np.ndarray:
        return np.concatenate([b.seed for b in reader.iter_blocks(epoch, seed=3, block_rows=64)])

    assert np.array_equal(order(1), order(1))
    assert not np.array_equal(order(1), order(2))
    assert sorted(order(1)) == sorted(everything.seed)
    assert reader.chunks_for(0, 0) != reader.chunks_for(1, 0)
    with pytest.raises(StoreError, match=r"rank 2 is not in \[0, world_size=2\)"):
        reader.chunks_for(0, 0, rank=2, world_size=2)
    with pytest.raises(StoreError, match="epoch must be a non-negative integer"):
        list(reader.iter_blocks(-1, 0))
    with pytest.raises(StoreError, match="shuffle_chunks must be >= 1"):
        list(reader.iter_blocks(0, 0, shuffle_chunks=0))


def test_shuffle_buffer_is_bounded(small_store, monkeypatch):
    reader = StoreReader.open(small_store[0])
    reads = []
    real = reader.read_chunks
    monkeypatch.setattr(reader, "read_chunks",
                        lambda cs, **kw: reads.extend(cs) or real(cs, **kw))
    blocks = reader.iter_blocks(0, 0, shuffle_chunks=3, block_rows=32)
    first = next(blocks)
    assert len(first) == 32 and len(reads) == 3  # only the shuffle buffer was read
    # Rows of the first block come from the buffered chunks, mixed across them.
    chunk_of_row = np.searchsorted(reader.read(0, len(reader)).seed, first.seed)
    assert len(set(chunk_of_row)) > 1


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["data", "index"])
def test_corrupt_shard_raises(small_store, where):
    path, spec = small_store
    shard_file = path / "topk_logit" / "c" / "2" / "0"
    _flip_byte(shard_file, 100 if where == "data" else shard_file.stat().st_size - 10)
    reader = StoreReader.open(path)
    assert len(reader.read(0, 512)) == 512  # other shards are fine
    with pytest.raises(CorruptShardError, match="shard 2 is corrupt: array 'topk_logit'") as info:
        reader.read(512, 700)
    assert info.value.shard == 2 and info.value.array == "topk_logit"
    assert "invalidate" in str(info.value)
    with pytest.raises(CorruptShardError):
        list(reader.iter_blocks(0, 0))
    with pytest.raises(CorruptShardError):
        reader.take([5, 520])


def test_missing_shard_file_raises(small_store):
    path, _ = small_store
    (path / "seed" / "c" / "1").unlink()
    with pytest.raises(StoreError, match=r"shard\(s\) 1 are marked complete but 1 of their "
                       r"objects are missing \(first: seed/c/1\)"):
        StoreReader.open(path)
    # Opened without the object check, the read itself still refuses the fill values.
    with pytest.raises(
        CorruptShardError, match="shard 1 is marked complete but has no data for seed"
    ):
        StoreReader.open(path, check_files=False).read(256, 260)


def test_reader_pickles_as_path(small_store):
    reader = StoreReader.open(small_store[0], num_classes=50)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read(10, 20).seed, reader.read(10, 20).seed)
    assert clone.spec == reader.spec


# ---- format version 1 --------------------------------------------------------------------------

V1_STORE = Path(__file__).resolve().parent / "data" / "v1_store"


def test_version_1_store_still_reads(tmp_path):
    """A store written by the version-1 writer (committed in tests/store/data, with the rows
    it was given): opens, reads and streams the same rows, without crop checksums; only a
    reader writes nothing to it, and the version-2 writer refuses to resume it."""
    path = shutil.copytree(V1_STORE, tmp_path / "v1.zarr")
    want = np.load(V1_STORE.parent / "v1_rows.npz")
    reader = StoreReader.open(path, num_classes=12)
    assert reader.spec.format_version == 1 and not reader.spec.has_crop_checksum
    assert reader.manifest_ids()[:2] == ("utt0000000", "utt0000001")
    got = reader.read(0, 40)
    assert got.crop_checksum is None and got.features is None
    assert sorted(got.arrays()) == sorted(want.files)
    for name in want.files:
        assert np.array_equal(got.arrays()[name], want[name]), name
    streamed = RowBlock.concat(list(reader.iter_blocks(0, 0, block_rows=7)))
    assert sorted(streamed.seed.tolist()) == sorted(want["seed"].tolist())
    with pytest.raises(StoreError, match="has cache format version 1 but this entkd writes "
                                         "version 3"):
        StoreWriter.open(path)
