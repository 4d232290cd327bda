"""StoreWriter: create/open rules, whole-shard writes, kill + resume, concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from store import StoreError, StoreReader, StoreWriter
from store.synthetic import synthetic_rows, synthetic_spec

PROC = Path(__file__).with_name("writer_proc.py")
# 20 shards of 1024 rows (the last one shorter) so a writer process runs for a while.
PROC_SPEC = {
    "num_rows": 20_000,
    "num_classes": 300,
    "k": 16,
    "temperatures": [1.0, 3.0],
    "num_utterances": 4000,
    "chunk_rows": 256,
    "shard_rows": 1024,
}


def test_create_refuses_existing_path(tmp_path, make_spec):
    spec = make_spec()
    StoreWriter.create(tmp_path / "a.zarr", spec)
    with pytest.raises(StoreError, match=r"a\.zarr already exists; pass --resume"):
        StoreWriter.create(tmp_path / "a.zarr", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="already exists"):
        StoreWriter.create(tmp_path / "empty", spec)


def test_shards_progress_and_ranges(tmp_path, make_spec):
    spec = make_spec()
    writer = StoreWriter.create(tmp_path / "s.zarr", spec)
    assert writer.num_shards == 4 and writer.missing_shards() == [0, 1, 2, 3]
    assert writer.missing_row_ranges() == [(0, 1000)]
    start, stop = writer.shard_rows_range(1)
    writer.write_shard(1, synthetic_rows(spec, start, stop))
    assert writer.missing_shards() == [0, 2, 3]
    assert writer.missing_row_ranges() == [(0, 256), (512, 1000)]
    assert StoreWriter.open(tmp_path / "s.zarr").missing_shards() == [0, 2, 3]
    assert writer.missing_shards(rank=0, world_size=2) == [0, 2]
    assert writer.missing_shards(rank=1, world_size=2) == [3]
    with pytest.raises(StoreError, match="rank 2 is not in"):
        writer.missing_shards(rank=2, world_size=2)


def test_write_shard_rejects_partial_and_invalid_rows(tmp_path, make_spec):
    spec = make_spec()
    writer = StoreWriter.create(tmp_path / "s.zarr", spec)
    with pytest.raises(
        StoreError,
        match=r"shard 1 of .* needs all its rows 256\.\.511 \(256 rows\), got a block of 100",
    ):
        writer.write_shard(1, synthetic_rows(spec, 256, 356))
    block = synthetic_rows(spec, 256, 512)
    block.label[44] = 99
    with pytest.raises(
        StoreError, match=r"shard 1 of .*: invalid rows: label outside \[0, 50\) at row 300"
    ):
        writer.write_shard(1, block)
    assert writer.missing_shards() == [0, 1, 2, 3]
    with pytest.raises(StoreError, match="shard 9 is out of range"):
        writer.write_shard(9, block)


def test_open_checks_spec(tmp_path, make_spec):
    spec = make_spec()
    StoreWriter.create(tmp_path / "s.zarr", spec)
    assert StoreWriter.open(tmp_path / "s.zarr", spec).spec == spec
    other = dataclasses.replace(spec, k=4, manifest_hash="other")
    with pytest.raises(StoreError, match="created with different k, manifest_hash than this run"):
        StoreWriter.open(tmp_path / "s.zarr", other)
    with pytest.raises(StoreError, match="no store at"):
        StoreWriter.open(tmp_path / "missing.zarr")


def test_interrupted_create_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "half.zarr"), mode="w-")  # killed before the attributes
    with pytest.raises(StoreError, match=r"half\.zarr is not an entkd cache store"):
        StoreWriter.open(tmp_path / "half.zarr")
    with pytest.raises(StoreError, match="not an entkd cache store"):
        StoreReader.open(tmp_path / "half.zarr")


def test_rewrite_and_invalidate(tmp_path, make_spec, write_store):
    spec = make_spec()
    path = write_store(tmp_path / "s.zarr", spec, seed=0)
    writer = StoreWriter.open(path)
    start, stop = writer.shard_rows_range(2)
    new = synthetic_rows(spec, start, stop, seed=5)
    writer.write_shard(2, new)
    np.testing.assert_array_equal(StoreReader.open(path).read(start, stop).seed, new.seed)
    writer.invalidate([0, 3])
    assert writer.missing_shards() == [0, 3]
    with pytest.raises(
        StoreError, match=r"incomplete: 2 of 4 shards are not written \(shards 0, 3\)"
    ):
        StoreReader.open(path)


def _reference(tmp_path: Path) -> StoreReader:
    spec = synthetic_spec(**PROC_SPEC)
    writer = StoreWriter.create(tmp_path / "reference.zarr", spec)
    for shard in writer.missing_shards():
        start, stop = writer.shard_rows_range(shard)
        writer.write_shard(shard, synthetic_rows(spec, start, stop, seed=7))
    return StoreReader.open(tmp_path / "reference.zarr")


def _assert_same_rows(a: StoreReader, b: StoreReader) -> None:
    left, right = a.read(0, len(a)).arrays(), b.read(0, len(b)).arrays()
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def _run_writer(path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROC), str(path), json.dumps(PROC_SPEC), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("die_after", ["data", "partial"])
def test_self_kill_inside_shard_then_resume(tmp_path, die_after):
    path = tmp_path / "killed.zarr"
    StoreWriter.create(path, synthetic_spec(**PROC_SPEC))
    proc = _run_writer(path, "--die-in-shard", "5", "--die-after", die_after)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert out.split() == [w for s in range(5) for w in ("done", str(s))]
    writer = StoreWriter.open(path)
    assert writer.missing_shards() == list(range(5, 20))  # shard 5 has (some) data, no flag
    resume = _run_writer(path)
    assert resume.wait(timeout=60) == 0
    _assert_same_rows(StoreReader.open(path), _reference(tmp_path))


def test_sigkill_at_random_point_then_resume(tmp_path):
    path = tmp_path / "killed.zarr"
    StoreWriter.create(path, synthetic_spec(**PROC_SPEC))
    # The pause keeps >= 14 shards (~0.3 s) ahead when the kill lands, however loaded the
    # machine; where it lands (inside a write or between shards) is up to the scheduler.
    proc = _run_writer(path, "--pause", "0.02")
    for _ in range(6):
        assert proc.stdout.readline().startswith("done")
    time.sleep(np.random.default_rng().uniform(0.0, 0.04))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    missing = StoreWriter.open(path).missing_shards()
    assert 0 < len(missing) <= 14 and missing == list(range(20 - len(missing), 20))
    with pytest.raises(StoreError, match="is incomplete"):
        StoreReader.open(path)
    assert _run_writer(path).wait(timeout=60) == 0
    _assert_same_rows(StoreReader.open(path), _reference(tmp_path))


def test_two_processes_write_disjoint_shards(tmp_path, capsys, monkeypatch):
    path = tmp_path / "shared.zarr"
    StoreWriter.create(path, synthetic_spec(**PROC_SPEC))
    procs = [_run_writer(path, "--rank", str(r), "--world", "2") for r in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(int(w) for out in outs for w in out.split()[1::2]) == list(range(20))
    from store.__main__ import main

    monkeypatch.setattr(sys, "argv", ["store", "verify", str(path)])
    main()
    assert capsys.readouterr().out.startswith(f"ok: {path}: 20000 rows in 20 shards")
    _assert_same_rows(StoreReader.open(path), _reference(tmp_path))
