"""Fault injection for the command lines (issue 11, items 6, 7, 10, 12 and 15): each test is
the scenario the issue describes, run through the CLI exactly as ``python -m`` runs it, and
checks the exit status, the one ``error:`` line (no traceback) and that nothing written
before changed.

Full and read-only disks are simulated in-process by making the file system call that
would fail raise what the kernel returns (``ENOSPC``/``EROFS``); the slow tests do it for
real on a tiny or read-only tmpfs mounted in a user namespace (skipped where ``unshare``
is not allowed).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

import speaker.evaluation.evaluate
import store.__main__ as store_cli
from speaker.io.manifest import Manifest
from speaker.models.checkpoint import load_checkpoint
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from stage1_teacher import dump
from stage1_teacher import train as teacher_train
from stage2_student import evaluate
from stage2_student import train as student_train
from store import StoreReader, StoreWriter
from store.synthetic import synthetic_rows, synthetic_spec

REPO = Path(__file__).resolve().parents[2]

# The tiny teacher run of tests/stage1_teacher (4 steps of 8 crops per epoch).
TINY_TEACHER = ["--arch", "xvector", "--arch-opt", "channels=32", "--arch-opt", "embed_dim=32",
                "--batch-size", "8", "--crop-seconds", "0.5", "--workers", "0"]
STUDENT = ["--arch", "xvector", "--arch-opt", "channels=32", "--arch-opt", "embed_dim=32",
           "--batch-size", "16", "--workers", "0"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one thread is as fast, and bit-exact comparisons need a fixed count."""


# ---- helpers ------------------------------------------------------------------------------


def assert_one_error(result, *needles: str, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(result.error_lines) == 1, result.stderr[-3000:]
    line = result.error_lines[0]
    for needle in needles:
        assert needle in line, line
    return line


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporaries or staging directories anything left under ``root``."""
    return [str(p) for p in root.rglob("*")
            if ".tmp" in p.name or ".partial" in p.name or ".old-" in p.name]


def fail_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int = errno.ENOSPC,
                      after: int = 0, times: int = 1000, name: str | None = None,
                      calls: tuple[str, ...] = ("replace",)) -> None:
    """Make ``os.replace`` into ``root`` (every atomic write commits with it; ``calls`` may
    add ``"unlink"``) fail with ``code`` -- ``times`` times after ``after`` successful ones,
    and only for files called ``name`` if given. A replaced temporary was written in full,
    so this also checks that it is removed."""
    count = {"n": 0}

    def failing(real: Callable, target_arg: int) -> Callable:
        def call(*args, **kwargs):
            target = Path(args[target_arg]).absolute()
            if target.is_relative_to(root.absolute()) and name in (None, target.name):
                count["n"] += 1
                if after < count["n"] <= after + times:
                    raise OSError(code, os.strerror(code), str(target))
            return real(*args, **kwargs)
        return call

    for call in calls:
        monkeypatch.setattr(os, call, failing(getattr(os, call), 1 if call == "replace" else 0))


def write_manifest(toy_corpus: Path, path: Path, audio: dict[int, Path] | None = None) -> Path:
    """The toy training manifest with absolute paths, utterance ``i`` read from ``audio[i]``."""
    manifest = Manifest.read(toy_corpus / "train" / "manifest.jsonl")
    lines = []
    for i, utt in enumerate(manifest):
        entry = utt.to_dict()
        entry["path"] = str((audio or {}).get(i, utt.path))
        lines.append(json.dumps(entry))
    path.write_text("\n".join(lines) + "\n")
    return path


def float_wav(path: Path, value: float, n: int = 24000) -> Path:
    """A 32-bit float wav whose samples are all ``value`` after the first 100 (NaN, inf)."""
    wave = np.full(n, value, dtype=np.float32)
    wave[:100] = 0.01
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    return path


def only_one_class(toy_corpus: Path, path: Path, keep: str) -> Path:
    """The toy trial list with only its target (``keep="1"``) or non-target (``"0"``) lines."""
    lines = (toy_corpus / "test" / "trials.txt").read_text().splitlines()
    path.write_text("\n".join(line for line in lines if line.split()[0] == keep) + "\n")
    return path


def said(caplog) -> list:
    """The log records that announce a run's augmentation (one line at its start)."""
    return [r for r in caplog.records if r.getMessage().startswith("augmentation:")]


def _store_arrays(path: Path) -> dict[str, np.ndarray]:
    reader = StoreReader.open(path)
    return reader.read(0, len(reader)).arrays()


# ---- item 6: NaN/inf audio ------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("workers", ["0", "1"])
def test_nan_audio_stops_teacher_training_naming_utterance_and_path(
        toy_corpus: Path, tmp_path: Path, run_cli, value: float, workers: str):
    bad = float_wav(tmp_path / "bad.wav", value)
    manifest = write_manifest(toy_corpus, tmp_path / "m.jsonl", {5: bad})
    utt = Manifest.read(manifest)[5].id
    out = tmp_path / "out"
    args = ["--train", manifest, "--out", out, "--epochs", "1", *TINY_TEACHER]
    args[args.index("--workers") + 1] = workers
    result = run_cli(teacher_train.cli, args)
    assert_one_error(result, repr(utt), str(bad), "NaN/inf")
    assert "FloatingPointError" not in result.stderr and "DataLoader" not in result.stderr
    assert not (out / "model.pt").exists() and not (out / "results.json").exists()


def test_nan_audio_stops_the_dump_naming_utterance_and_path(
        toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path, run_main,
        caplog):
    caplog.set_level(logging.INFO)
    bad = float_wav(tmp_path / "bad.wav", np.nan)
    manifest = write_manifest(toy_corpus, tmp_path / "m.jsonl", {7: bad})
    utt = Manifest.read(manifest)[7].id
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, ["--teacher", dump_teachers["a"], "--train", manifest,
                                  "--out", out, *dump_args])
    line = assert_one_error(result, repr(utt), str(bad), "NaN/inf")
    assert "indices" not in line
    # item 12 as well: no --musan/--rirs, and the dump says so before it starts
    assert [r.levelname for r in said(caplog)] == ["WARNING"]
    assert said(caplog)[0].getMessage().startswith("augmentation: none -- no MUSAN/RIR audio")


# ---- item 7: trial lists are checked before training ---------------------------------------


@pytest.mark.parametrize("keep, missing", [("1", "no non-target trials"),
                                           ("0", "no target trials")])
def test_one_class_trial_list_refused_before_teacher_training(
        toy_corpus: Path, tmp_path: Path, run_cli, keep: str, missing: str):
    trials = only_one_class(toy_corpus, tmp_path / "trials.txt", keep)
    out = tmp_path / "out"
    result = run_cli(teacher_train.cli, ["--data", toy_corpus, "--trials", trials, "--out", out,
                                         "--epochs", "1", *TINY_TEACHER])
    assert_one_error(result, str(trials), missing)
    assert not out.exists()  # refused before anything was written, not after the last epoch


@pytest.mark.parametrize("keep, missing", [("1", "no non-target trials"),
                                           ("0", "no target trials")])
def test_one_class_trial_list_refused_before_student_training(
        student_cache, tmp_path: Path, run_cli, keep: str, missing: str):
    trials = only_one_class(student_cache.corpus, tmp_path / "trials.txt", keep)
    out = tmp_path / "out"
    result = run_cli(student_train.cli, [
        "--cache", student_cache.cache, "--data", student_cache.corpus, "--trials", trials,
        "--out", out, "--epochs", "1", *STUDENT])
    assert_one_error(result, str(trials), missing)
    assert not out.exists()


# ---- item 10: full or read-only disks -------------------------------------------------------


def test_full_disk_at_a_student_checkpoint_keeps_the_last_one(
        student_run, tmp_path: Path, run_cli, monkeypatch, assert_same_weights):
    """The disk fills while the epoch-2 checkpoint is written: one line, the epoch-1
    checkpoint and config.json stay as they were, no temporary is left, and ``--resume``
    (disk freed) ends with the weights of an uninterrupted run."""
    out = tmp_path / "run"
    fail_writes_under(monkeypatch, out, after=1, name="model.pt")
    result = run_cli(student_train.cli, student_run.command(out))
    assert_one_error(result, f"cannot write {out / 'model.pt'}", "No space left on device")
    assert load_checkpoint(out / "model.pt").state["epoch"] == 1
    assert not leftovers(out)
    monkeypatch.undo()
    result = run_cli(student_train.cli, [*student_run.command(out), "--resume"])
    assert result.exit_code == 0, result.stderr[-3000:]
    assert_same_weights(out / "model.pt", student_run.out / "model.pt")


def test_full_disk_in_evaluate_keeps_the_previous_report(
        student_cache, tmp_path: Path, run_cli, monkeypatch):
    out = tmp_path / "eval"
    args = ["--data", student_cache.corpus, "--out", out, "--model",
            f"teacher={student_cache.teacher}"]
    assert run_cli(evaluate.cli, args).exit_code == 0
    before = snapshot(out)
    fail_writes_under(monkeypatch, out)
    result = run_cli(evaluate.cli, args)
    assert_one_error(result, f"cannot write {out / 'results.json'}", "No space left on device")
    assert snapshot(out) == before and not leftovers(out)


TINY_TOY = {"speakers": 2, "utts_per_speaker": 2, "duration": 0.5, "test_speakers": 2,
            "test_utts_per_speaker": 2}


def toy_args(out: Path, *extra: str) -> list[str]:
    return ["--out", out, *[a for k, v in TINY_TOY.items()
                            for a in (f"--{k.replace('_', '-')}", str(v))], *extra]


@pytest.mark.parametrize("where", ["audio", "swap"])
def test_full_disk_in_speaker_toy_keeps_the_previous_corpus(
        tmp_path: Path, run_cli, monkeypatch, where: str):
    from speaker.toy import __main__ as toy

    out = tmp_path / "toy"
    generate(ToyConfig(**{**TINY_TOY, "seed": 1}), out)
    before = snapshot(out)
    if where == "audio":  # the disk fills while the third wav is written
        real = Path.write_bytes
        calls = {"n": 0}

        def write_bytes(self, data):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    else:  # the disk turns read-only when the finished corpus is swapped in (after the
        # old one was moved aside: it must be put back)
        fail_writes_under(monkeypatch, tmp_path, code=errno.EROFS, name="toy", times=1)
    result = run_cli(toy.cli, toy_args(out, "--force"))
    reason = "No space left on device" if where == "audio" else "Read-only file system"
    assert_one_error(result, f"cannot write {out}", reason)
    assert snapshot(out) == before and not leftovers(tmp_path)


def _synthetic_store(path: Path) -> Path:
    spec = synthetic_spec(num_rows=200, num_classes=20, k=4, temperatures=(1.0,),
                          num_utterances=50, chunk_rows=32, shard_rows=64)
    writer = StoreWriter.create(path, spec)
    for shard in writer.missing_shards():
        writer.write_shard(shard, synthetic_rows(spec, *writer.shard_rows_range(shard)))
    return path


def test_read_only_disk_in_store_invalidate(tmp_path: Path, run_main, monkeypatch):
    path = _synthetic_store(tmp_path / "logits.zarr")
    before = snapshot(path)
    # a flag set back to its fill value is a chunk file deleted
    fail_writes_under(monkeypatch, path, code=errno.EROFS, calls=("replace", "unlink"))
    result = run_main(store_cli.main, ["invalidate", path, "1", "2"])
    assert_one_error(result, str(path), "Read-only file system")
    assert snapshot(path) == before and not leftovers(path)
    assert StoreReader.open(path).missing_shards() == []


def test_full_disk_in_store_stats_plot_keeps_the_previous_plot(
        tmp_path: Path, run_main, monkeypatch):
    path = _synthetic_store(tmp_path / "logits.zarr")
    plot = tmp_path / "plots" / "stats.png"
    plot.parent.mkdir()
    assert run_main(store_cli.main, ["stats", path, "--plot", plot]).exit_code == 0
    before = snapshot(plot.parent)
    fail_writes_under(monkeypatch, plot.parent)
    result = run_main(store_cli.main, ["stats", path, "--plot", plot])
    assert_one_error(result, f"cannot write plot {plot}", "No space left on device")
    assert snapshot(plot.parent) == before and not leftovers(plot.parent)


# The same on real file systems: a tmpfs of a few pages (ENOSPC) or mounted read-only
# (EROFS), in a user namespace so no privileges are needed.


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_unshare = pytest.mark.skipif(not _unshare_works(),
                                   reason="user namespaces (unshare -rm) not available")


def run_on_small_disk(mount: Path, command: list[str], size_kb: int, read_only: bool = False,
                      seed_from: Path | None = None) -> tuple[int, str, dict[str, str]]:
    """Run ``command`` with a ``size_kb`` tmpfs at ``mount`` (filled from ``seed_from``,
    then made read-only if asked); -> (exit status, stderr, files left on the tmpfs)."""
    mount.mkdir(parents=True, exist_ok=True)
    script = "\n".join([
        f"mount -t tmpfs -o size={size_kb}k none {mount}",
        f"cp -a {seed_from}/. {mount}/" if seed_from else "true",
        f"mount -o remount,ro {mount}" if read_only else "true",
        " ".join(f"'{c}'" for c in command) + " 2> stderr.txt; echo $? > rc.txt",
        f"cd {mount} && find . -type f -exec sha256sum {{}} + > {mount.parent}/files.txt",
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=mount.parent, env=env,
                   check=True, timeout=600)
    files = {}
    for line in (mount.parent / "files.txt").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        files[name.removeprefix("./")] = digest
    return (int((mount.parent / "rc.txt").read_text()),
            (mount.parent / "stderr.txt").read_text(), files)


def assert_one_line(rc: int, stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert rc == 2 and "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.slow
@needs_unshare
def test_student_training_on_a_really_full_disk(student_cache, tmp_path: Path):
    """config.json fits, the first checkpoint does not."""
    out = tmp_path / "disk" / "run"
    rc, err, files = run_on_small_disk(tmp_path / "disk", [
        sys.executable, "-m", "stage2_student.train", "--cache", str(student_cache.cache),
        "--data", str(student_cache.corpus), "--out", str(out), "--epochs", "1", *STUDENT],
        size_kb=12)
    assert_one_line(rc, err, str(out / "model.pt"), "No space left on device")
    assert set(files) == {"run/config.json"}


@pytest.mark.slow
@needs_unshare
@pytest.mark.parametrize("tool", ["toy", "evaluate", "invalidate", "stats"])
def test_read_only_disk(tool: str, student_cache, tmp_path: Path):
    """Each writer on a read-only mount holding its previous output: one line, unchanged."""
    seed = tmp_path / "seed"
    seed.mkdir()
    disk = tmp_path / "disk"
    python = [sys.executable, "-m"]
    if tool == "toy":
        generate(ToyConfig(**TINY_TOY), seed / "toy")
        command = [*python, "speaker.toy", *map(str, toy_args(disk / "toy", "--force"))]
    elif tool == "evaluate":
        (seed / "eval").mkdir()
        (seed / "eval" / "results.json").write_text("{}\n")
        command = [*python, "stage2_student.evaluate", "--data", str(student_cache.corpus),
                   "--out", str(disk / "eval"), "--model", f"t={student_cache.teacher}"]
    else:
        _synthetic_store(seed / "logits.zarr")
        (seed / "stats.png").write_bytes(b"old plot")
        command = ([*python, "store", "invalidate", str(disk / "logits.zarr"), "1"]
                   if tool == "invalidate" else
                   [*python, "store", "stats", str(disk / "logits.zarr"), "--plot",
                    str(disk / "stats.png")])
    rc, err, files = run_on_small_disk(disk, command, size_kb=65536, read_only=True,
                                       seed_from=seed)
    assert_one_line(rc, err, "Read-only file system")
    assert files == snapshot(seed)


# ---- item 12: augmentation that cannot be applied is said and recorded -----------------------


@pytest.mark.parametrize("with_bank", [False, True])
def test_applied_augmentation_is_said_and_recorded(toy_corpus: Path, tmp_path: Path, run_cli,
                                                   caplog, with_bank: bool):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    data = (["--train", toy_corpus / "train", "--musan", toy_corpus / "musan",
             "--rirs", toy_corpus / "rirs"] if with_bank else ["--train", toy_corpus / "train"])
    result = run_cli(teacher_train.cli, [*data, "--out", out, "--epochs", "1", *TINY_TEACHER])
    assert result.exit_code == 0, result.stderr[-3000:]
    records = said(caplog)
    assert len(records) == 1
    line = records[0].getMessage()
    config = json.loads((out / "config.json").read_text())
    assert config["augment"]["aug_prob"] == 0.6  # what the preset asks for
    if with_bank:
        assert records[0].levelname == "INFO"
        assert line == "augmentation: with probability 0.6 one of reverb, noise, music, babble"
        assert config["augmentation"]["kinds"] == ["reverb", "noise", "music", "babble"]
        assert config["augmentation"]["probability"] == 0.6
    else:
        assert records[0].levelname == "WARNING"
        assert line.startswith("augmentation: none -- no MUSAN/RIR audio (--musan/--rirs")
        assert "aug_prob 0.6 adds nothing" in line
        assert config["augmentation"]["kinds"] == []
        assert config["augmentation"]["probability"] == 0.0


# ---- item 15: messages ----------------------------------------------------------------------


def test_missing_file_in_wav_scp_names_list_file_and_line(toy_corpus: Path, tmp_path: Path,
                                                         run_cli):
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    manifest = Manifest.read(toy_corpus / "train" / "manifest.jsonl")
    gone = tmp_path / "gone.wav"
    paths = [u.path if i != 2 else str(gone) for i, u in enumerate(manifest)]
    (kaldi / "wav.scp").write_text("".join(f"{u.id} {p}\n" for u, p in zip(manifest, paths,
                                                                              strict=True)))
    (kaldi / "utt2spk").write_text("".join(f"{u.id} {u.speaker}\n" for u in manifest))
    out = tmp_path / "out"
    result = run_cli(teacher_train.cli, ["--train", kaldi, "--out", out, *TINY_TEACHER])
    assert_one_error(result, f"{kaldi / 'wav.scp'}:3", str(gone), repr(manifest[2].id))
    assert not out.exists()


def test_evaluate_progress_bar_names_the_models(student_cache, tmp_path: Path, run_cli,
                                               monkeypatch):
    labels: list[str] = []
    real = speaker.evaluation.evaluate.tqdm

    def tqdm(*args, **kwargs):
        labels.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(speaker.evaluation.evaluate, "tqdm", tqdm)
    result = run_cli(evaluate.cli, [
        "--data", student_cache.corpus, "--out", tmp_path / "eval",
        "--model", f"teacher={student_cache.teacher}", "--model", f"again={student_cache.teacher}"])
    assert result.exit_code == 0, result.stderr[-3000:]
    assert labels == ["embedding (teacher, again)"]  # one batched pass embeds both


def sigterm_at(calls: int) -> Callable[[Callable], Callable]:
    """Wrap a per-batch function so that its ``calls``-th call sends this process SIGTERM
    (as ``kill PID`` would), after which the wrapped call carries on."""
    count = {"n": 0}

    def wrap(fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            count["n"] += 1
            if count["n"] == calls:
                os.kill(os.getpid(), signal.SIGTERM)
            return fn(*args, **kwargs)
        return wrapped

    return wrap


TERMINATED = "interrupted (SIGTERM); rerun the same command with --resume to continue"


def test_sigterm_stops_teacher_training_like_ctrl_c_and_resumes(
        toy_corpus: Path, tmp_path: Path, run_cli, monkeypatch, assert_same_weights):
    """SIGTERM in epoch 2 of 2: one line, exit 143, the epoch-1 checkpoint kept; the resumed
    run ends with the weights of an uninterrupted one."""
    args = ["--train", toy_corpus / "train", "--epochs", "2", *TINY_TEACHER]
    reference = tmp_path / "reference"
    assert run_cli(teacher_train.cli, [*args, "--out", reference]).exit_code == 0
    out = tmp_path / "run"
    monkeypatch.setattr(teacher_train, "ce_step", sigterm_at(6)(teacher_train.ce_step))
    result = run_cli(teacher_train.cli, [*args, "--out", out])
    assert_one_error(result, TERMINATED, code=128 + signal.SIGTERM)
    assert load_checkpoint(out / "model.pt").state["epoch"] == 1 and not leftovers(out)
    monkeypatch.undo()
    result = run_cli(teacher_train.cli, [*args, "--out", out, "--resume"])
    assert result.exit_code == 0, result.stderr[-3000:]
    assert_same_weights(out / "model.pt", reference / "model.pt")


def test_sigterm_stops_the_dump_like_ctrl_c_and_resumes(
        tiny_dump: Path, toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path,
        run_main, monkeypatch):
    """SIGTERM in the third batch (shard 0 done): one line, exit 143, shard 0 kept; the
    resumed store equals an uninterrupted dump array by array."""
    out = tmp_path / "logits.zarr"
    args = ["--teacher", dump_teachers["a"], "--data", toy_corpus, "--out", out, *dump_args,
            "--embeddings"]
    monkeypatch.setattr(dump, "batch_rows", sigterm_at(4)(dump.batch_rows))
    result = run_main(dump.main, args)
    assert_one_error(result, TERMINATED, code=128 + signal.SIGTERM)
    assert StoreReader.open(out, allow_incomplete=True).missing_shards() == [1, 2]
    monkeypatch.undo()
    result = run_main(dump.main, [*args, "--resume"])
    assert result.exit_code == 0, result.stderr[-3000:]
    want, got = _store_arrays(tiny_dump), _store_arrays(out)
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name].view(np.uint8), got[name].view(np.uint8)), name


@pytest.mark.slow
def test_sigterm_from_outside_ends_a_teacher_run_in_one_line(toy_corpus: Path, tmp_path: Path):
    """A real ``kill PID`` once the first checkpoint is on disk."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "stage1_teacher.train", "--train", str(toy_corpus / "train"),
               "--out", str(out), "--epochs", "50", *TINY_TEACHER]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "model.pt").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert lines == [f"error: {TERMINATED}"] and "Traceback" not in err
    assert load_checkpoint(out / "model.pt").state["epoch"] >= 1 and not leftovers(out)
    shutil.rmtree(out)
