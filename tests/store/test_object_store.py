"""The cache on an object store: write, read, verify, dump (and resume after SIGKILL), train
and merge against moto's S3 server (tests/s3_server.py, 127.0.0.1 only), through zarr's
fsspec path (``s3://bucket/logits.zarr``) with ``--storage-option`` flags or the ``AWS_*``
environment; the lock object's rule (store/lease.py); an interrupted create finished by
``--resume``. The dumps are compared bit for bit with the local ``tiny_dump``
(tests/conftest.py: teacher "a", ``DUMP_ARGS`` + ``--embeddings``, 96 rows in 3 shards).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from stage1_teacher import dump, merge, verify
from stage2_student import train
from store import RowBlock, StoreError, StoreReader, StoreWriter
from store import __main__ as store_cli
from store.lease import LeaseLock, lock_url
from store.lock import StoreLock, current_writer
from store.remote import CREATING
from store.synthetic import synthetic_rows
from tests.stage1_teacher.test_dump import assert_same_store

REPO = Path(__file__).resolve().parents[2]


def dump_cmd(teacher: Path, corpus: Path, out: str, extra: list[str]) -> list[str]:
    return ["--teacher", str(teacher), "--data", str(corpus), "--out", out, *extra,
            "--embeddings"]


# ---- the store itself --------------------------------------------------------------------


# 3 shards (the last one short) of 2 chunks: every request is a round trip to the server.
GEOMETRY = {"num_rows": 300, "chunk_rows": 64, "shard_rows": 128}


def test_store_round_trip_and_store_commands(s3, make_spec, run_cli, tmp_path):
    spec = make_spec(**GEOMETRY)
    url = s3.url("small.zarr")
    writer = StoreWriter.create(url, spec, storage_options=s3.options)
    blocks = [synthetic_rows(spec, *writer.shard_rows_range(shard), 0)
              for shard in range(spec.num_shards)]
    for shard in writer.missing_shards():
        writer.write_shard(shard, blocks[shard])
    reader = StoreReader.open(url, storage_options=s3.options)
    assert reader.check_data() == spec.num_rows
    expected = RowBlock.concat(blocks).arrays()
    got = reader.read(0, spec.num_rows).arrays()
    assert all(np.array_equal(got[name], expected[name]) for name in expected)

    ok = run_cli(store_cli.cli, ["verify", url, *s3.flags])
    assert ok.exit_code == 0 and f"ok: {url}" in ok.stdout, ok.stderr
    info = run_cli(store_cli.cli, ["inspect", url, "--json", *s3.flags])
    assert json.loads(info.stdout)["complete_shards"] == spec.num_shards
    assert run_cli(store_cli.cli, ["stats", url, *s3.flags]).exit_code == 0
    assert run_cli(store_cli.cli, ["invalidate", url, "1", *s3.flags]).exit_code == 0
    refused = run_cli(store_cli.cli, ["verify", url, *s3.flags])
    assert refused.exit_code == 2 and "shards 1 are not written" in refused.stderr

    # A missing store, options for a local path, and an object deleted under a complete shard.
    missing = run_cli(store_cli.cli, ["verify", s3.url("nothing.zarr"), *s3.flags])
    assert missing.error_lines == [f"error: no store at {s3.url('nothing.zarr')} (check the path)"]
    local = run_cli(store_cli.cli, ["verify", str(tmp_path / "x.zarr"), *s3.flags])
    assert len(local.error_lines) == 1 and "object-store URLs" in local.error_lines[0]
    s3.fs.rm(f"{s3.bucket}/small.zarr/topk_logit/c/2/0")
    with pytest.raises(StoreError, match=r"shard\(s\) 2 are marked complete but"):
        StoreReader.open(url, storage_options=s3.options, allow_incomplete=True)


def test_interrupted_create_is_refused_then_finished_by_resume(s3, make_spec, monkeypatch):
    spec = make_spec(**GEOMETRY)
    url = s3.url("half.zarr")

    def killed(group, spec):  # arrays written, attributes never
        group.create_array("utt", shape=(spec.num_rows,), dtype="int32")
        raise KeyboardInterrupt

    monkeypatch.setattr("store.writer._fill_new", killed)
    with pytest.raises(KeyboardInterrupt):
        StoreWriter.create(url, spec, storage_options=s3.options)
    monkeypatch.undo()
    group = zarr.open_group(url, mode="r", storage_options=s3.options)
    assert CREATING in group.attrs
    with pytest.raises(StoreError, match="not an entkd cache"):
        StoreReader.open(url, storage_options=s3.options)
    with pytest.raises(StoreError, match="interrupted; pass --resume"):
        StoreWriter.create(url, spec, storage_options=s3.options)
    writer = StoreWriter.create(url, spec, storage_options=s3.options, finish_interrupted=True)
    assert writer.missing_shards() == list(range(spec.num_shards))
    assert CREATING not in zarr.open_group(url, mode="r", storage_options=s3.options).attrs


# ---- the lock object -----------------------------------------------------------------------


def put_lock(s3, url: str, **body) -> None:
    s3.fs.pipe_file(lock_url(url).removeprefix("s3://"), json.dumps(body).encode())


def test_second_writer_is_refused_while_the_first_holds_the_lock(s3):
    url = s3.url("locked.zarr")
    with StoreLock.acquire(url, s3.options) as held:
        assert isinstance(held, LeaseLock)
        assert current_writer(url, s3.options) == f"pid {held._body['pid']} on {socket.gethostname()}"
        with pytest.raises(StoreError, match=r"another process \(pid .*\) is writing .*locked"):
            StoreLock.acquire(url, s3.options)
        held.check()  # still ours
    assert not s3.fs.exists(lock_url(url).removeprefix("s3://"))
    StoreLock.acquire(url, s3.options).release()  # free again


def test_heartbeat_keeps_a_short_lease_and_a_takeover_is_noticed(s3):
    url = s3.url("beat.zarr")
    lock = LeaseLock.acquire(url, s3.options, lease_s=1.0)
    try:
        time.sleep(2.5)  # two and a half leases: renewed every quarter lease
        with pytest.raises(StoreError, match="is writing"):
            LeaseLock.acquire(url, s3.options)
        put_lock(s3, url, owner="someone", pid=1, host="elsewhere", lease_s=60)
        time.sleep(0.6)  # the next heartbeat finds the object changed
        with pytest.raises(StoreError, match="lost the lock .*taken over by pid 1 on elsewhere"):
            lock.check()
    finally:
        lock.release()
    assert s3.fs.exists(lock_url(url).removeprefix("s3://"))  # not ours: left in place


def test_stale_leases_are_taken_over(s3, caplog):
    # Another host whose lease ran out (by the store's clock) ...
    url = s3.url("stale.zarr")
    put_lock(s3, url, owner="x", pid=1, host="elsewhere", lease_s=1)
    with pytest.raises(StoreError, match="is writing"):
        LeaseLock.acquire(url, s3.options)
    time.sleep(3.1)  # lease + the second LastModified may round away
    with caplog.at_level("INFO", logger="store.lease"):
        LeaseLock.acquire(url, s3.options).release()
    assert "lease of 1 s ran out" in caplog.text
    # ... and, at once, a process of this host that is no longer running.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    put_lock(s3, url, owner="y", pid=dead.pid, host=socket.gethostname(), lease_s=600)
    assert current_writer(url, s3.options) is None
    LeaseLock.acquire(url, s3.options).release()


# ---- dump, verify, train, merge -------------------------------------------------------------


@pytest.mark.slow  # ~35 s: a dump, two merges and two trainings, dozens of requests each
def test_dump_verify_train_merge_on_s3(s3, tiny_dump, toy_corpus, dump_teachers, dump_args,
                                       student_cache, run_main, run_cli, tmp_path):
    url = s3.url("logits.zarr")
    done = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, url,
                                         [*dump_args, *s3.flags]))
    assert done.exit_code == 0, done.stderr
    assert_same_store(s3.download("logits.zarr", tmp_path / "back.zarr"), tiny_dump)
    assert run_cli(store_cli.cli, ["verify", url, *s3.flags]).exit_code == 0
    again = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, url,
                                          [*dump_args, *s3.flags]))
    assert again.exit_code == 2 and f"{url} exists; pass --resume" in again.error_lines[0]

    # merge two S3 caches into S3 = the same merge done locally
    ens = s3.url("ens.zarr")
    merged = run_main(merge.main, [url, url, "--out", ens, *s3.flags])
    assert merged.exit_code == 0, merged.stderr
    local = run_main(merge.main, [tiny_dump, tiny_dump, "--out", tmp_path / "ens.zarr"])
    assert local.exit_code == 0, local.stderr
    back = s3.download("ens.zarr", tmp_path / "ens-back.zarr")
    a, b = StoreReader.open(back), StoreReader.open(tmp_path / "ens.zarr")
    for name, values in a.read(0, len(a)).arrays().items():
        assert np.array_equal(values, b.read(0, len(b)).arrays()[name]), name

    # train from an S3 cache (the stage-2 fixture's, uploaded) = train from it locally
    cache = s3.upload(student_cache.cache, "student.zarr")
    common = ["--data", str(student_cache.corpus), "--arch", "xvector", "--arch-opt",
              "channels=16", "--arch-opt", "embed_dim=16", "--epochs", "1", "--batch-size",
              "32", "--workers", "2"]  # DataLoader workers reopen the store after fork
    remote = run_cli(train.cli, ["--cache", cache, *s3.flags, *common,
                                   "--out", tmp_path / "remote"])
    assert remote.exit_code == 0, remote.stderr
    local = run_cli(train.cli, ["--cache", student_cache.cache, *common,
                                  "--out", tmp_path / "local"])
    assert local.exit_code == 0, local.stderr
    assert remote.stdout.splitlines()[-1] == local.stdout.splitlines()[-1]
    assert json.loads((tmp_path / "remote" / "config.json").read_text())["cache"] == cache


def test_replay_and_relabel_an_s3_cache_as_a_local_one(s3, tiny_dump, toy_corpus,
                                                       dump_teachers, run_main, tmp_path):
    """stage1_teacher.verify and dump --views-from read the cache through its URL: the same
    rows and differences as from the local copy; the options go to the URL, not the local
    --out, and are refused where no store is a URL."""
    url = s3.upload(tiny_dump, "replay.zarr")
    args = ["--teacher", str(dump_teachers["a"]), "--data", str(toy_corpus), "--rows", "40"]
    remote = run_main(verify.main, [url, *args, *s3.flags])
    local = run_main(verify.main, [str(tiny_dump), *args])
    assert remote.exit_code == 0 and "ok: 40 rows" in remote.stdout, remote.stderr
    assert remote.stdout == local.stdout.replace(str(tiny_dump), url)
    options_on_a_path = run_main(verify.main, [str(tiny_dump), *args, *s3.flags])
    assert options_on_a_path.exit_code == 2 and len(options_on_a_path.error_lines) == 1

    relabel = ["--teacher", str(dump_teachers["b"]), "--data", str(toy_corpus), "--topk", "3",
               "--workers", "0", "--threads", "1"]
    from_url = run_main(dump.main, [*relabel, "--views-from", url, *s3.flags,
                                    "--out", str(tmp_path / "from-url.zarr")])
    assert from_url.exit_code == 0, from_url.stderr
    from_path = run_main(dump.main, [*relabel, "--views-from", str(tiny_dump),
                                     "--out", str(tmp_path / "from-path.zarr")])
    assert from_path.exit_code == 0, from_path.stderr
    a = StoreReader.open(tmp_path / "from-url.zarr")
    b = StoreReader.open(tmp_path / "from-path.zarr")
    for name, values in a.read(0, len(a)).arrays().items():
        assert np.array_equal(values, b.read(0, len(b)).arrays()[name]), name
    assert a.spec.extra["views_from"]["path"] == url
    nowhere = run_main(dump.main, [*relabel, "--views-from", str(tiny_dump), *s3.flags,
                                   "--out", str(tmp_path / "x.zarr")])
    assert nowhere.exit_code == 2 and len(nowhere.error_lines) == 1
    assert "object-store URLs" in nowhere.error_lines[0]


@pytest.mark.slow  # ~50 s: two dump subprocesses
def test_sigkill_then_resume_on_s3_equals_uninterrupted_dump(
    s3, tiny_dump, toy_corpus, dump_teachers, dump_args, tmp_path, sigkill_when
):
    """Through the environment (AWS_ENDPOINT_URL, ...): no --storage-option at all."""
    url = s3.url("killed.zarr")
    command = [sys.executable, "-m", "stage1_teacher.dump",
               *dump_cmd(dump_teachers["a"], toy_corpus, url, dump_args)]
    sigkill_when(command, lambda: any_shard_complete(s3, "killed.zarr"), s3.env,
                 "shard completed", timeout=300)
    missing = StoreReader.open(url, storage_options=s3.options,
                               allow_incomplete=True).missing_shards()
    assert 1 <= len(missing) < 3, f"kill came too late or too early: missing {missing}"
    assert s3.fs.exists(f"{s3.bucket}/killed.zarr.lock")  # left by the kill
    done = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=s3.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {len(missing) * 32} rows" in done.stdout
    assert "taking over the stale lock" in done.stderr
    assert_same_store(s3.download("killed.zarr", tmp_path / "back.zarr"), tiny_dump)


def any_shard_complete(s3, name: str) -> bool:
    """One request per poll (opening the store takes dozens): is a flag object there?"""
    fs = s3.fs
    return bool(fs.glob(f"{s3.bucket}/{name}/shard_complete/c/*"))


def test_a_dump_refused_while_another_holds_the_lock(s3, toy_corpus, dump_teachers, dump_args,
                                                     run_main):
    url = s3.url("busy.zarr")
    put_lock(s3, url, owner="z", pid=4242, host="elsewhere", lease_s=600)
    refused = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, url,
                                            [*dump_args, *s3.flags]))
    assert refused.exit_code == 2
    assert refused.error_lines[0].startswith(
        f"error: another process (pid 4242 on elsewhere) is writing {url}")
    assert not s3.fs.exists(f"{s3.bucket}/busy.zarr")

