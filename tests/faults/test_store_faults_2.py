"""Fault injection for the cache, round 2 ("Nothing trains on the wrong bytes", store side):
each test is the issue's scenario, run through what a user runs, and asserts the exit
status, the one ``error:`` line (nothing printed before it) and what is left on disk.

Numbering follows the issue: 2 stored features not bound to their rows, 4 ``--views-from``
with changed audio, 6 damage found only mid-epoch, 7 leftovers of killed creates and
refused merges, 8 messages. Fixtures (toy corpus, teachers, ``tiny_dump``,
``student_cache``) come from tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile

from speaker.io.audio import AudioReader
from speaker.io.manifest import LabelMap, Manifest
from speaker.io.paths import DataPaths
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from stage1_teacher import dump, merge
from stage2_student.data import CachedViews, CacheRequest
from store import StoreError, StoreReader, StoreWriter
from store import __main__ as store_cli
from store._zarr import gather
from tests.faults.test_store_faults import HOLD, copy, one_error, snapshot, train_args, train_main

REPO = Path(__file__).resolve().parents[2]
V1_STORE = REPO / "tests" / "store" / "data" / "v1_store"


def features_dump(student_cache, out: Path, seed: int) -> Path:
    """The shared cache's settings with ``--store-features`` and run seed ``seed`` (96 rows,
    shards of 20)."""
    c = student_cache.settings
    dump.cli.main([
        "--teacher", str(student_cache.teacher), "--data", str(student_cache.corpus),
        "--out", str(out), "--views-per-utt", str(c["views_per_utt"]), "--topk", str(c["topk"]),
        "--crop-seconds", str(c["crop_seconds"]), "--speeds", ",".join(map(str, c["speeds"])),
        "--aug-prob", str(c["aug_prob"]), "--chunk-rows", str(c["chunk_rows"]),
        "--shard-rows", str(c["shard_rows"]), "--seed", str(seed), "--workers", "0",
        "--batch-size", "32", "--threads", "1", "--store-features",
    ], standalone_mode=False)
    return out


@pytest.fixture(scope="module")
def feature_dumps(student_cache, tmp_path_factory) -> tuple[Path, Path]:
    """Two feature dumps of the same corpus and teacher with other run seeds (other views)."""
    root = tmp_path_factory.mktemp("feature_dumps")
    return (features_dump(student_cache, root / "a.zarr", 0),
            features_dump(student_cache, root / "b.zarr", 1))


def renderer(cache: Path, corpus: Path) -> ViewRenderer:
    """The renderer stage2_student.train builds: everything from the cache's attributes."""
    data = DataPaths(data=corpus)
    spec = StoreReader.open(cache).spec
    return ViewRenderer(data.train_manifest(), LabelMap.from_dict(spec.label_map),
                        spec.crop_samples, AugmentConfig.from_dict(spec.augment),
                        data.noise_bank(spec.sample_rate), sample_rate=spec.sample_rate)


# ---- 2: stored features bound to their rows -----------------------------------------------


def test_2_a_features_shard_from_another_dump_is_named_and_refused(
    student_cache, feature_dumps, tmp_path, run_main
):
    """Shard 1's features object copied from another dump of the same corpus (its own
    checksums valid): verify names the shard, training refuses before its first step."""
    cache = copy(feature_dumps[0], tmp_path / "logits.zarr")
    shutil.copyfile(feature_dumps[1] / "features" / "c" / "1" / "0" / "0",
                    cache / "features" / "c" / "1" / "0" / "0")
    before = snapshot(cache)
    result = run_main(store_cli.main, ["verify", str(cache)])
    one_error(result, "failed verification", "in shard(s) 1")
    assert "features are not the row's own" in result.stdout
    out = tmp_path / "student"
    one_error(run_main(train_main, train_args(cache, student_cache.corpus, out)),
              "rows 20..29 (shard 1)", "features are not the row's own")
    assert not (out / "model.pt").exists()
    assert snapshot(cache) == before


def test_2_version_2_stores_with_features_still_read(feature_dumps, tmp_path):
    """A version-2 store (no features_checksum) opens and streams its features."""
    cache = copy(feature_dumps[0], tmp_path / "v2.zarr")
    shutil.rmtree(cache / "features_checksum")
    meta = json.loads((cache / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 2
    (cache / "zarr.json").write_text(json.dumps(meta))
    reader = StoreReader.open(cache)
    block = reader.read(0, len(reader), features=True)
    assert not reader.spec.has_features_checksum and block.features_checksum is None
    want = StoreReader.open(feature_dumps[0]).read(0, len(reader), features=True)
    assert np.array_equal(block.features, want.features)


# ---- 4: --views-from with other audio under the same ids ------------------------------------


def test_4_views_from_with_changed_audio_names_the_utterance(
    toy_corpus, tiny_dump, dump_teachers, dump_args, tmp_path, run_main
):
    corpus = copy(toy_corpus, tmp_path / "corpus")
    entry = json.loads((corpus / "train" / "manifest.jsonl").read_text().splitlines()[5])
    wav = corpus / "train" / entry["path"]
    samples, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(wav, (samples // 2).astype(np.int16), rate, subtype="PCM_16")
    out = tmp_path / "relabelled.zarr"
    result = run_main(dump.main, ["--teacher", str(dump_teachers["b"]), "--data", str(corpus),
                                  "--out", str(out), "--views-from", str(tiny_dump),
                                  "--topk", "4", "--workers", "0", "--threads", "1"])
    one_error(result, f"--views-from {tiny_dump}", f"the audio of utterance {entry['id']!r}",
              "is not the audio that cache was dumped from")


# ---- 6: damage found when the cache is opened, not mid-epoch --------------------------------


@pytest.mark.parametrize(("array", "features"), [("features", True), ("tail_lse", False)])
def test_6_a_corrupt_shard_is_refused_when_the_views_are_built(
    student_cache, feature_dumps, tmp_path, array, features
):
    """A flipped byte in the last shard of an array the run reads: building the run's views
    (before the first step) refuses it, naming the shard."""
    cache = copy(feature_dumps[0], tmp_path / "logits.zarr")
    obj = next(p for p in sorted((cache / array / "c" / "4").rglob("*")) if p.is_file())
    data = bytearray(obj.read_bytes())
    data[len(data) // 3] ^= 0xFF
    obj.write_bytes(bytes(data))
    render = renderer(cache, student_cache.corpus)
    with pytest.raises(StoreError, match=f"shard 4 is corrupt: array '{array}'"):
        CachedViews(CacheRequest(cache), render, 16, features=features)


# ---- 7: nothing left to clean up ---------------------------------------------------------------

KILL_DURING_CREATE = """
import os, signal, sys
import store.writer
from store.synthetic import synthetic_spec
real = store.writer._create_arrays
def killed(group, spec):
    real(group, spec)
    os.kill(os.getpid(), signal.SIGKILL)
store.writer._create_arrays = killed
store.writer.StoreWriter.create(sys.argv[1], synthetic_spec(num_rows=64))
"""


def test_7_a_create_killed_or_out_of_space_leaves_nothing_to_clean(
    toy_corpus, tiny_dump, dump_teachers, dump_args, tmp_path, run_main, monkeypatch
):
    out = tmp_path / "logits.zarr"
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_CREATE, str(out)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()

    import store.writer

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "zarr.json"))

    args = ["--teacher", str(dump_teachers["a"]), "--data", str(toy_corpus), "--out", str(out),
            *dump_args, "--embeddings", "--resume"]
    with monkeypatch.context() as patch:
        patch.setattr(store.writer, "root_attrs", no_space)
        one_error(run_main(dump.main, args), "No space left on device", "free space")
    assert not out.exists()
    result = run_main(dump.main, args)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.zarr"]
    want, got = StoreReader.open(tiny_dump), StoreReader.open(out)
    for name, array in want.read(0, 96).arrays().items():
        assert np.array_equal(got.read(0, 96).arrays()[name], array), name


def test_7_a_refused_merge_removes_its_staging_and_names_the_v1_input(
    tiny_dump, tmp_path, run_main
):
    """Version-1 inputs: one line naming the file, no staging left; the staging of a merge
    that was killed does not block the next merge."""
    old = copy(V1_STORE, tmp_path / "old.zarr")
    out = tmp_path / "ens.zarr"
    one_error(run_main(merge.main, [str(tiny_dump), str(old), "--out", str(out)]),
              f"{old} is a format-1 cache")
    one_error(run_main(merge.main, [str(old), str(copy(V1_STORE, tmp_path / "old2.zarr")),
                                    "--out", str(out)]), f"{old} is a format-1 cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr", "old2.zarr"]
    stale = tmp_path / ".ens.zarr.tmp-merge"
    stale.mkdir()
    (stale / "zarr.json").write_text("{}")
    other = copy(tiny_dump, tmp_path / "other.zarr")
    result = run_main(merge.main, [str(tiny_dump), str(other), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and StoreReader.open(out).missing_shards() == []


# ---- 8: messages -------------------------------------------------------------------------------


def test_8_a_truncated_teacher_is_one_line_and_nothing_before_it(toy_corpus, dump_teachers,
                                                                  tmp_path):
    teacher = tmp_path / "model.pt"
    data = dump_teachers["a"].read_bytes()
    teacher.write_bytes(data[: len(data) // 2])
    result = subprocess.run(
        [sys.executable, "-m", "stage1_teacher.dump", "--teacher", str(teacher), "--data",
         str(toy_corpus), "--out", str(tmp_path / "logits.zarr")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: teacher {teacher}"), result.stderr
    assert "copy it again or pass another --teacher" in lines[0]


def test_8_concurrent_fetches_leave_no_task_pending():
    """A fetch that fails while tasks it started are still running (zarr's codecs on a bad
    checksum) returns only once they ended: none is destroyed pending at exit."""
    spawned: list[asyncio.Task] = []

    async def failing() -> None:
        spawned.append(asyncio.ensure_future(asyncio.sleep(0.2)))
        raise ValueError("checksum")

    async def fine() -> int:
        return 1

    results = gather([failing(), fine()])
    assert isinstance(results[0], ValueError) and results[1] == 1
    assert spawned and all(task.done() for task in spawned)


@pytest.mark.parametrize(("code", "advice"), [
    (errno.ENOSPC, "free space on that disk, or choose an --out on another one"),
    (errno.EACCES, "choose a location you can write (--out)"),
    (errno.EROFS, "the file system is read-only: choose a writable --out"),
])
def test_8_a_failing_file_system_says_what_to_do(run_cli, code, advice):
    @click.command()
    def fails() -> None:
        raise OSError(code, os.strerror(code), "/data/logits.zarr/zarr.json")

    result = run_cli(fails, [])
    one_error(result, os.strerror(code), "(/data/logits.zarr/zarr.json)", advice)


def test_8_an_incomplete_store_names_a_real_option_or_the_writer(tiny_dump, tmp_path):
    cache = copy(tiny_dump, tmp_path / "logits.zarr")
    StoreWriter.open(cache).invalidate([2])
    with pytest.raises(StoreError) as refused:
        StoreReader.open(cache)
    assert "allowing incomplete stores" not in str(refused.value)
    assert f"`python -m store verify --allow-incomplete {cache}`" in str(refused.value)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(cache)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as refused:
            StoreReader.open(cache)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    message = str(refused.value)
    assert f"another process (pid {holder.pid} on " in message and "wait for it" in message
    assert "--resume" not in message


def test_8_stats_of_an_incomplete_store_says_it_covers_part(tiny_dump, tmp_path, run_main):
    cache = copy(tiny_dump, tmp_path / "logits.zarr")
    StoreWriter.open(cache).invalidate([1])
    result = run_main(store_cli.main, ["stats", str(cache), "--json"])
    assert result.exit_code == 0, result.stderr
    assert "1 of 3 shards are not written (shards 1)" in result.stderr
    assert "cover the written shards only" in result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["complete_shards"], report["shards"]) == (64, 2, 3)


def test_8_a_manifest_length_that_is_not_the_files_is_refused_naming_the_utterance(toy_corpus):
    manifest = Manifest.read(toy_corpus / "train" / "manifest.jsonl")
    utt = manifest[3]
    wrong = type(utt)(utt.id, utt.speaker, utt.path, utt.num_samples + 4000, utt.sample_rate)
    reader = AudioReader(utt.sample_rate)
    assert len(reader.read(utt, 0, 100)) == 100
    with pytest.raises(Exception, match=f"utterance {utt.id!r}: the manifest lists "
                                        f"{utt.num_samples + 4000} samples but"):
        reader.read(wrong, 0, 100)


# Run a trivial command through store.cli.run in a process that is a `python -m` entry
# point, then signal it right after the command ended (the window before exit).
SIGNAL_AT_EXIT = """
import os, signal, sys
sys.orig_argv = [sys.executable, "-m", "store", "inspect"]
import store
import click
from store.cli import run

@click.command()
def done() -> None:
    print("done", flush=True)

sys.argv = ["store"]
try:
    run(done)
except SystemExit:
    pass
os.kill(os.getpid(), getattr(signal, sys.argv[-1] if len(sys.argv) > 1 else "SIGTERM"))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_8_a_signal_right_at_exit_is_one_line(signame):
    script = SIGNAL_AT_EXIT.replace('sys.argv[-1] if len(sys.argv) > 1 else "SIGTERM"',
                                    repr(signame))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    signum = getattr(signal, signame)
    assert result.returncode == 128 + signum, (result.returncode, result.stderr)
    assert result.stdout == "done\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted ("), result.stderr
    assert "while exiting" in lines[0]


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (the SigCgt mask of /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("module", ["stage1_teacher.dump", "stage2_student.train", "store"])
def test_8_ctrl_c_while_a_command_starts_is_one_line(module):
    """SIGINT as soon as the process handles signals, while it still imports torch/zarr."""
    proc = subprocess.Popen([sys.executable, "-m", module, "--help"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and err.splitlines() == [
        "error: interrupted (Ctrl-C) while starting; nothing was done"], err
