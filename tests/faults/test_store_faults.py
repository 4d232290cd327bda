"""Fault injection for the cache (issue 11, the store/dump/stage-2 items): each test is the
issue's scenario, run through the command a user runs, and asserts the exit status, the one
``error:`` line (no traceback) and that nothing written before changed.

Numbering follows the issue: 1 wrong audio under the same ids, 2 edited spec attributes,
3 deleted shard + edited fill value, 4 rows breaking the invariants, 5 damaged zarr.json,
8 leftover stores of failed dumps, 9 two dumps of one store, 11 damage found at open,
13 unfinished teacher, 14 k too large. Fixtures (toy corpus, teachers, ``tiny_dump``,
``student_cache``) come from tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import zarr

from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from speaker.views.view import row_order
from stage1_teacher import dump, verify
from stage2_student import train
from store import StoreReader, StoreWriter
from store import __main__ as store_cli
from store.cli import run
from store.lock import lock_path

REPO = Path(__file__).resolve().parents[2]
SHARD_ROWS = 32  # of DUMP_ARGS (tests/conftest.py): 96 rows in 3 shards


def train_main() -> None:
    """What ``python -m stage2_student.train`` runs."""
    run(train.cli)


def train_args(cache: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--cache", str(cache), "--data", str(corpus), "--out", str(out), "--arch",
            "xvector", "--arch-opt", "channels=16", "--arch-opt", "embed_dim=16", "--epochs",
            "1", "--batch-size", "16", "--workers", "0", *extra]


def one_error(result, *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line holding every needle, and no traceback."""
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    for needle in needles:
        assert needle in line, line
    return line


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` -> sha256 of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def cache(student_cache, tmp_path: Path) -> Path:
    """A copy of the shared stage-2 cache (96 rows, chunks of 10, shards of 20) to damage."""
    return copy(student_cache.cache, tmp_path / "logits.zarr")


# ---- 1: other audio under the same ids ----------------------------------------------------


def test_1_changed_audio_with_the_same_ids_is_refused(student_cache, cache, tmp_path, run_main):
    """Same ids, speakers and lengths (so the same manifest hash), other samples in one file:
    training and the replay check name the utterance."""
    corpus = copy(student_cache.corpus, tmp_path / "corpus")
    entry = json.loads((corpus / "train" / "manifest.jsonl").read_text().splitlines()[5])
    wav = corpus / "train" / entry["path"]
    samples, rate = soundfile.read(wav, dtype="int16")
    soundfile.write(wav, (samples // 2).astype(np.int16), rate, subtype="PCM_16")
    before = snapshot(cache)

    out = tmp_path / "student"
    result = run_main(train_main, train_args(cache, corpus, out))
    one_error(result, f"the audio of utterance {entry['id']!r}", str(wav),
              "is not the audio the cache was dumped from", "re-dump")
    assert not (out / "model.pt").exists()

    checked = run_main(verify.main, [str(cache), "--teacher", str(student_cache.teacher),
                                     "--data", str(corpus), "--rows", "96"])
    assert checked.exit_code == 1 and len(checked.error_lines) == 1, checked.stderr
    assert "read other audio than the dump did" in checked.error_lines[0]
    assert repr(entry["id"]) in checked.error_lines[0]
    assert snapshot(cache) == before


# ---- 2: edited spec attributes ---------------------------------------------------------------


def test_2_edited_spec_attributes_are_refused(student_cache, cache, tmp_path, run_main):
    """``spec.temperatures`` reordered in zarr.json (valid JSON): training at T=2 would read
    the T=4 column; every command refuses the attribute block instead."""
    meta = cache / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["spec"]["temperatures"] = [1.0, 4.0, 2.0]
    meta.write_text(json.dumps(doc))
    before = snapshot(cache)
    needles = (f"{cache}/zarr.json", "the 'spec' attribute block does not match its checksum")
    out = tmp_path / "student"
    one_error(run_main(train_main, train_args(cache, student_cache.corpus, out,
                                              "--temperature", "2")), *needles)
    one_error(run_main(store_cli.main, ["verify", str(cache)]), *needles)
    one_error(run_main(store_cli.main, ["inspect", str(cache)]), *needles)
    assert not out.exists() or not (out / "model.pt").exists()
    assert snapshot(cache) == before


# ---- 3 and 11: deleted shard objects, edited fill values, damaged flags -----------------------


def test_3_deleted_shard_with_edited_fill_value_is_refused(student_cache, cache, tmp_path,
                                                            run_main):
    """The deleted object would read as the edited fill (target_logit = 0): verify and
    training refuse the edited metadata, naming the file."""
    (cache / "target_logit" / "c" / "1").unlink()
    meta = cache / "target_logit" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["fill_value"] = 0.0
    meta.write_text(json.dumps(doc))
    before = snapshot(cache)
    needles = (f"{cache}/target_logit/zarr.json", "fill_value is 0.0, the format's is nan")
    one_error(run_main(store_cli.main, ["verify", str(cache)]), *needles)
    one_error(run_main(train_main, train_args(cache, student_cache.corpus,
                                              tmp_path / "student")), *needles)
    assert snapshot(cache) == before


def test_3_verify_names_every_complete_shard_without_its_objects(cache, run_main):
    (cache / "target_logit" / "c" / "1").unlink()
    (cache / "topk_index" / "c" / "3" / "0").unlink()
    before = snapshot(cache)
    result = run_main(store_cli.main, ["verify", str(cache)])
    one_error(result, "failed verification", "in shard(s) 1, 3")
    assert "bad: shard 1 is marked complete but has no object target_logit/c/1" in result.stdout
    assert "bad: shard 3 is marked complete but has no object topk_index/c/3/0" in result.stdout
    assert snapshot(cache) == before


def test_11_damage_is_found_when_the_cache_is_opened(student_cache, cache, tmp_path, run_main):
    """A deleted object of the last shard: training refuses before its first step (no
    epoch runs), naming the shard and the command that marks it for rewrite."""
    (cache / "tail_lse" / "c" / "4" / "0").unlink()
    before = snapshot(cache)
    out = tmp_path / "student"
    result = run_main(train_main, train_args(cache, student_cache.corpus, out))
    one_error(result, "shard(s) 4 are marked complete but 1 of their objects are missing",
              "tail_lse/c/4/0", f"python -m store invalidate {cache} 4")
    assert "epoch 1/1" not in result.stderr and not (out / "model.pt").exists()
    assert snapshot(cache) == before


def test_11_damaged_completion_record_is_found_when_the_cache_is_opened(
    student_cache, cache, tmp_path, run_main
):
    flag = cache / "shard_complete" / "c" / "2"
    data = bytearray(flag.read_bytes())
    data[0] ^= 0x01
    flag.write_bytes(bytes(data))
    before = snapshot(cache)
    out = tmp_path / "student"
    result = run_main(train_main, train_args(cache, student_cache.corpus, out))
    one_error(result, "the shard_complete flags are corrupt")
    assert "epoch 1/1" not in result.stderr and not (out / "model.pt").exists()
    assert snapshot(cache) == before


# ---- 4: rows breaking the invariants ---------------------------------------------------------


@pytest.mark.parametrize(("array", "row", "value", "problem"), [
    ("target_logit", 25, np.nan, "target_logit is not finite at row 25"),
    ("topk_logit", 57, np.inf, "topk_logit is not finite in float16"),
])
def test_4_rows_breaking_the_invariants_are_refused(student_cache, cache, tmp_path, run_main,
                                                    array, row, value, problem):
    """NaN/inf written by another tool, with valid checksums: training names the row range
    instead of training at the bad temperature; verify reports the same row."""
    data = zarr.open_array(str(cache / array), mode="r+")
    data[row] = value
    before = snapshot(cache)
    chunk = row // 10 * 10
    line = one_error(run_main(train_main, train_args(cache, student_cache.corpus,
                                                     tmp_path / "student")),
                     f"rows {chunk}..{chunk + 9} (shard {row // 20}) break the cache format",
                     problem, "store verify")
    assert "ZeroDivisionError" not in line and "FloatingPointError" not in line
    result = run_main(store_cli.main, ["verify", str(cache)])
    one_error(result, "failed verification", f"in shard(s) {row // 20}")
    assert f"bad: shard {row // 20}: {problem}" in result.stdout
    assert snapshot(cache) == before


# ---- 5: damaged zarr.json ----------------------------------------------------------------------


@pytest.mark.parametrize("damage", [b'{"attributes": {"spec', b"\xff\xfe{\x00"])
@pytest.mark.parametrize("which", ["zarr.json", "label/zarr.json"])
def test_5_damaged_metadata_is_one_line_naming_the_file(
    student_cache, cache, tmp_path, run_main, damage, which, dump_teachers
):
    (cache / which).write_bytes(damage)
    before = snapshot(cache)
    needles = (f"{cache}/{which} is damaged",)
    for command in (["inspect", str(cache)], ["verify", str(cache)], ["stats", str(cache)]):
        one_error(run_main(store_cli.main, command), *needles)
    one_error(run_main(train_main, train_args(cache, student_cache.corpus,
                                              tmp_path / "student")), *needles)
    if which == "zarr.json":  # a resumed dump opens the store before anything else
        speeds = ",".join(map(str, student_cache.settings["speeds"]))
        one_error(run_main(dump.main, ["--teacher", str(student_cache.teacher), "--data",
                                       str(student_cache.corpus), "--out", str(cache),
                                       "--speeds", speeds, "--resume"]), *needles)
    assert snapshot(cache) == before


# ---- 8: stores left by failed dumps ------------------------------------------------------------


def manifest_with_bad_audio(corpus: Path, tmp_path: Path, utt: int) -> list[str]:
    """Data options: the toy training manifest with utterance ``utt`` read from a file that
    is not audio (its length is still listed, so the manifest hash is the corpus's)."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    lines = []
    for i, line in enumerate((corpus / "train" / "manifest.jsonl").read_text().splitlines()):
        entry = json.loads(line)
        entry["path"] = str(bad if i == utt else corpus / "train" / entry["path"])
        lines.append(json.dumps(entry))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return ["--train", str(manifest), "--musan", str(corpus / "musan"),
            "--rirs", str(corpus / "rirs")]


def first_row_of_each_utterance(rows: int, views: int, seed: int) -> np.ndarray:
    utt_of_row = row_order(rows, seed) // views
    return np.array([np.flatnonzero(utt_of_row == u).min() for u in range(rows // views)])


def test_8_a_dump_failing_before_its_first_shard_leaves_nothing(
    toy_corpus, dump_teachers, dump_args, tmp_path, run_main
):
    # an utterance first read in the first batch, but not by the probe of row 0 (which
    # runs before the store is created)
    utt_of_row = row_order(96, 3) // 3
    utt = int(next(u for u in utt_of_row[1:] if u != utt_of_row[0]))
    out = tmp_path / "logits.zarr"
    data = manifest_with_bad_audio(toy_corpus, tmp_path, utt)
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), *data, "--out",
                                  str(out), *dump_args])
    one_error(result, "cannot read audio", "bad.wav", f"nothing was written ({out} removed)")
    assert not out.exists() and not lock_path(out).exists()


def test_8_a_dump_failing_later_says_how_to_resume_and_resumes(
    toy_corpus, tiny_dump, dump_teachers, dump_args, tmp_path, run_main
):
    """Unreadable audio first needed in shard 1 or 2: shard 0 stays complete, the line says
    what to do, and --resume with the audio fixed gives the uninterrupted dump."""
    first = first_row_of_each_utterance(96, 3, 3)
    utt = int(np.argmax(first))
    assert first[utt] >= SHARD_ROWS
    out = tmp_path / "logits.zarr"
    args = ["--out", str(out), *dump_args, "--embeddings"]
    data = manifest_with_bad_audio(toy_corpus, tmp_path, utt)
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), *data, *args])
    done = first[utt] // SHARD_ROWS
    one_error(result, "cannot read audio", f"{out} keeps {done} of 3 shards",
              "rerun with --resume", f"`rm -r {out}`")
    assert StoreReader.open(out, allow_incomplete=True).missing_shards() == \
        list(range(done, 3))
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), "--data",
                                  str(toy_corpus), *args, "--resume"])
    assert result.exit_code == 0, result.stderr
    want, got = StoreReader.open(tiny_dump), StoreReader.open(out)
    for name, array in want.read(0, 96).arrays().items():
        assert np.array_equal(got.read(0, 96).arrays()[name], array), name


def test_8_resuming_with_other_settings_names_the_command_that_clears_it(
    tiny_dump, toy_corpus, dump_teachers, dump_args, tmp_path, run_main
):
    out = copy(tiny_dump, tmp_path / "logits.zarr")
    before = snapshot(out)
    result = run_main(dump.main, ["--teacher", str(dump_teachers["b"]), "--data",
                                  str(toy_corpus), "--out", str(out), *dump_args,
                                  "--embeddings", "--resume"])
    one_error(result, "dumped with different teacher", f"`rm -r {out}`")
    assert snapshot(out) == before


# ---- 9: two dumps of one store -----------------------------------------------------------------

HOLD = """
import sys
from store.lock import StoreLock
lock = StoreLock.acquire(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


def test_9_a_second_dump_is_told_another_process_holds_the_store(
    tiny_dump, toy_corpus, dump_teachers, dump_args, tmp_path, run_main, caplog
):
    """While another process writes the store, a --resume dump is refused naming it; once
    that process is killed (its lock file left behind, stale), --resume takes over."""
    out = copy(tiny_dump, tmp_path / "logits.zarr")
    StoreWriter.open(out).invalidate([2])
    before = snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["--teacher", str(dump_teachers["a"]), "--data", str(toy_corpus), "--out",
                str(out), *dump_args, "--embeddings", "--resume"]
        result = run_main(dump.main, args)
        one_error(result, f"another process (pid {holder.pid} on ", f"is writing {out}",
                  "wait for it to finish")
        assert snapshot(out) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # stale: its process is gone
    caplog.set_level(logging.INFO, logger="store.lock")
    result = run_main(dump.main, args)
    assert result.exit_code == 0, result.stderr
    assert f"taking over the stale lock {lock_path(out)}" in caplog.text
    assert not lock_path(out).exists()
    assert StoreReader.open(out).missing_shards() == []


# ---- 13, 14: what the dump records and says ----------------------------------------------------


def test_13_unfinished_teacher_is_warned_about_and_recorded(
    toy_corpus, dump_teachers, dump_args, tmp_path, run_main, caplog
):
    loaded = load_checkpoint(dump_teachers["a"])
    teacher = tmp_path / "unfinished.pt"
    save_checkpoint(teacher, arch=loaded.arch, arch_kwargs=loaded.arch_kwargs,
                    model=loaded.model, head=loaded.head, label_map=loaded.label_map,
                    config={"epochs": 8}, state={"epoch": 3})
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, ["--teacher", str(teacher), "--data", str(toy_corpus),
                                  "--out", str(out), *dump_args])
    assert result.exit_code == 0, result.stderr
    assert f"teacher {teacher} stopped after epoch 3 of 8" in caplog.text
    info = StoreReader.open(out).spec.teacher
    assert (info.epoch, info.epochs, info.complete, info.margin_kind) == (3, 8, False, "aam")
    inspected = run_main(store_cli.main, ["inspect", str(out)])
    assert "margin 0.2 (aam), trained 3/8 epochs" in inspected.stdout


def test_13_finished_teacher_is_recorded_complete(student_cache):
    info = StoreReader.open(student_cache.cache).spec.teacher
    assert (info.epoch, info.epochs, info.complete) == (1, 1, True)


def test_14_k_is_capped_at_the_non_target_count(toy_corpus, dump_teachers, dump_args,
                                                tmp_path, run_main, caplog):
    out = tmp_path / "logits.zarr"
    args = [*dump_args]
    args[args.index("--topk") + 1] = "20"
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), "--data",
                                  str(toy_corpus), "--out", str(out), *args])
    assert result.exit_code == 0, result.stderr
    assert ("--topk 20 exceeds the 7 non-target classes of this 8-class teacher: keeping all "
            "of them (k=7)") in caplog.text
    reader = StoreReader.open(out)
    assert reader.spec.k == 7 and (reader.read(0, 96).tail_lse == -np.inf).all()
