"""Fault injection for the cache on an object store (issue "Nothing trains on the wrong bytes,
round 2", item 9): the S3 server (moto, tests/s3_server.py) goes away in the middle of a dump
or a merge. Each command must end with one ``error:`` line naming the store and what to do,
mark nothing complete that is not, and the same command with ``--resume`` must finish the
job, bit-equal to a run that was never interrupted (``tiny_dump``, tests/conftest.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stage1_teacher import dump, merge
from store import StoreReader, StoreWriter
from tests.faults.test_store_faults import one_error
from tests.stage1_teacher.test_dump import assert_same_store

# Fail at once when the server is gone instead of retrying for ~10 s per request.
NO_RETRIES = ["--storage-option",
              'config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 2}']


def cut_connection_at_shard(monkeypatch, s3, cut: int) -> list[int]:
    """Stop the server just before shard ``cut`` is written (and keep it down until the test
    starts it again); -> the shards the writer was asked to write."""
    asked: list[int] = []
    write_shard = StoreWriter.write_shard

    def dropping(self, shard, block):
        asked.append(shard)
        if shard == cut:
            s3.server.stop()
        return write_shard(self, shard, block)

    monkeypatch.setattr(StoreWriter, "write_shard", dropping)
    return asked


@pytest.mark.slow  # ~16 s (+10 s for tiny_dump): two dumps against the server
def test_9_connection_dropped_mid_dump_is_named_and_resumable(
    s3, tiny_dump, toy_corpus, dump_teachers, dump_args, tmp_path, monkeypatch, run_main
):
    url = s3.url("logits.zarr")
    command = ["--teacher", str(dump_teachers["a"]), "--data", str(toy_corpus), "--out", url,
               *dump_args, "--embeddings", *s3.flags]
    asked = cut_connection_at_shard(monkeypatch, s3, cut=1)
    failed = run_main(dump.main, [*command, *NO_RETRIES])
    line = one_error(failed, url, "lost the connection", "shard 1",
                     "rerun with --resume")
    assert asked == [0, 1]
    monkeypatch.undo()
    s3.server.start()

    # Shard 0 is kept, shard 1 is not marked complete; the lock object is left behind
    # (the store was unreachable when the dump released it) and is taken over.
    reader = StoreReader.open(url, storage_options=s3.options, allow_incomplete=True)
    assert reader.missing_shards() == [1, 2], line
    assert json.loads(s3.fs.cat(f"{s3.bucket}/logits.zarr.lock"))["lease_s"] > 0
    resumed = run_main(dump.main, [*command, "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    assert "wrote 64 rows" in resumed.stdout
    assert_same_store(s3.download("logits.zarr", tmp_path / "back.zarr"), tiny_dump)
    assert not s3.fs.exists(f"{s3.bucket}/logits.zarr.lock")


@pytest.mark.slow  # ~22 s: four merges, three of them against the server
def test_9_connection_dropped_mid_merge_is_finished_by_resume(
    s3, tiny_dump, tmp_path, monkeypatch, run_main
):
    source = s3.upload(tiny_dump, "a.zarr")
    out = s3.url("ens.zarr")
    cut_connection_at_shard(monkeypatch, s3, cut=2)
    failed = run_main(merge.main, [source, source, "--out", out, *s3.flags, *NO_RETRIES])
    one_error(failed, out, "lost the connection", "same command and --resume")
    monkeypatch.undo()
    s3.server.start()

    refused = run_main(merge.main, [source, source, "--out", out, *s3.flags])
    one_error(refused, out, "--resume to finish an interrupted merge")
    resumed = run_main(merge.main, [source, source, "--out", out, *s3.flags, "--resume"])
    assert resumed.exit_code == 0, resumed.stderr
    local = run_main(merge.main, [tiny_dump, tiny_dump, "--out", tmp_path / "ens.zarr"])
    assert local.exit_code == 0, local.stderr
    a = StoreReader.open(out, storage_options=s3.options)
    b = StoreReader.open(tmp_path / "ens.zarr")
    for name, values in a.read(0, len(a)).arrays().items():
        assert np.array_equal(values, b.read(0, len(b)).arrays()[name]), name
