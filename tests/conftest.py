"""Fixtures shared across the test tree: a tiny toy corpus (generated once per session) and
a way to run a project CLI in-process exactly as ``python -m ...`` does."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest

from tests.s3_server import s3, s3_server  # noqa: F401  (fixtures: moto's S3 on 127.0.0.1)

if TYPE_CHECKING:  # torch is imported lazily: collection stays fast
    import torch

# Tiny models run as fast on one thread, and a fixed count keeps float results identical
# between in-process runs and the subprocesses they are compared with (the CLIs' automatic
# thread choice honours OMP_NUM_THREADS, and subprocesses inherit it).
os.environ["OMP_NUM_THREADS"] = "1"

# Property tests explore new examples on every local run (and keep the failures they find in
# .hypothesis/); under CI they replay one fixed sequence, so a landing never depends on which
# random examples a run happened to draw. Anything a local run finds is then fixed for good.
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.load_profile("ci")

# In-process CLI runs call logging.basicConfig; with a handler on the root logger that is a
# no-op, so no handler is left pointing at a captured (later closed) stderr.
logging.getLogger().addHandler(logging.NullHandler())

# 8 training speakers x 4 utterances x ~1.5 s, 3 dev and 4 test speakers: ~2 s to make.
TOY = {"speakers": 8, "utts_per_speaker": 4, "duration": 1.5, "test_speakers": 4, "seed": 0,
       "dev_speakers": 3}

@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared data root (train/, test/ + trials.txt, musan/, rirs/); treat as read-only."""
    from speaker.toy.config import ToyConfig
    from speaker.toy.corpus import generate

    out = tmp_path_factory.mktemp("toy") / "corpus"
    generate(ToyConfig(**TOY), out)
    return out


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def run_cli(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[[click.Command, list[str]], CliResult]:
    """``run_cli(command, args)``: run a click command through :func:`store.cli.run` (the
    ``__main__`` path: user errors -> one ``error:`` line, exit 2) in this process.

    Any exception that escapes ``run`` (a would-be traceback) fails the test.
    """
    from store.cli import run

    def invoke(command: click.Command, args: list[str]) -> CliResult:
        capfd.readouterr()
        monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
        code = 0
        try:
            run(command)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return invoke


# ---- stage 1 dump / replay verify (tests/stage1_teacher/test_dump.py, test_verify.py) -------

# 32 utterances x 3 views = 96 rows in 3 shards of 32 (chunks of 16), batches of 12 (12, 12,
# 8 per shard: batches restart at every shard, which a resume relies on). One teacher thread
# makes every run of these arguments bit-identical (see stage1_teacher.dump).
DUMP_ARGS = [
    "--views-per-utt", "3", "--crop-seconds", "1.0", "--topk", "4", "--temperatures", "1,2,4",
    "--batch-size", "12", "--workers", "0", "--threads", "1",
    "--chunk-rows", "16", "--shard-rows", "32", "--seed", "3",
]


@pytest.fixture
def dump_args() -> list[str]:
    """``DUMP_ARGS``: the dump options every dump/verify test shares (96 rows, 3 shards)."""
    return list(DUMP_ARGS)


def _tiny_checkpoint(path: Path, manifest_dir: Path, seed: int) -> Path:
    """A randomly initialised x-vector teacher checkpoint for the toy corpus's classes."""
    import torch

    from speaker.io.manifest import LabelMap, Manifest
    from speaker.models import build
    from speaker.models.checkpoint import save_checkpoint
    from speaker.models.heads import AAMSoftmax

    label_map = LabelMap.from_manifest(Manifest.read(manifest_dir / "manifest.jsonl"))
    torch.manual_seed(seed)
    kwargs = {"channels": 32, "embed_dim": 32}
    model, head = build("xvector", **kwargs).eval(), AAMSoftmax(32, label_map.num_classes)
    save_checkpoint(path, arch="xvector", arch_kwargs=kwargs, model=model, head=head,
                    label_map=label_map.to_dict(), config={"seed": seed})
    return path


@pytest.fixture(scope="session")
def dump_teachers(toy_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two teacher checkpoints of the same architecture and label map, other weights:
    ``{"a": model.pt, "b": model.pt}`` (random init stands in for training)."""
    root = tmp_path_factory.mktemp("teachers")
    return {name: _tiny_checkpoint(root / f"{name}.pt", toy_corpus / "train", seed)
            for seed, name in enumerate(("a", "b"))}


@pytest.fixture(scope="session")
def tiny_dump(toy_corpus: Path, dump_teachers: dict[str, Path],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted dump (teacher "a", ``DUMP_ARGS`` + ``--embeddings``); read-only."""
    from stage1_teacher.dump import cli

    out = tmp_path_factory.mktemp("dump") / "logits.zarr"
    cli.main(["--teacher", str(dump_teachers["a"]), "--data", str(toy_corpus), "--out", str(out),
              *DUMP_ARGS, "--embeddings"], standalone_mode=False)
    return out


@pytest.fixture
def run_main(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[[Callable[[], None], list[str]], CliResult]:
    """``run_main(module.main, args)``: a CLI's ``main()`` -- exactly what ``python -m`` runs,
    with its own ``user_errors`` -- in this process; a would-be traceback fails the test."""

    def invoke(main: Callable[[], None], args: list[str]) -> CliResult:
        capfd.readouterr()
        monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capfd.readouterr()
        return CliResult(code, out, err)

    return invoke


# ---- stage 2: a tiny teacher and its logit cache (tests/stage2_student) -------------------

# Stage-1 settings of the shared cache. Speed perturbation (3 speeds -> 24 classes) and
# augmentation are on, so replay covers the speed choice, noise, music, babble and reverb.
STUDENT_CACHE = {"views_per_utt": 3, "topk": 4, "crop_seconds": 0.5, "speeds": (1.0, 0.9, 1.1),
                 "aug_prob": 0.6, "chunk_rows": 10, "shard_rows": 20, "run_seed": 0}


@dataclass(frozen=True)
class StudentCache:
    """``toy_corpus`` + a 1-epoch x-vector teacher + its cache (96 rows in 10-row chunks,
    the last one short, k=4, T grid 1,2,4, no embeddings); treat as read-only."""

    corpus: Path
    teacher: Path  # model.pt
    cache: Path  # logits.zarr

    @property
    def settings(self) -> dict:
        """The stage-1 settings it was made with (STUDENT_CACHE)."""
        return dict(STUDENT_CACHE)


def student_dump_argv(teacher: Path, corpus: Path, out: Path) -> list[str]:
    """The ``stage1_teacher.dump`` arguments of ``student_cache`` (STUDENT_CACHE), into ``out``."""
    c = STUDENT_CACHE
    return ["--teacher", str(teacher), "--data", str(corpus),
            "--out", str(out), "--views-per-utt", str(c["views_per_utt"]),
            "--topk", str(c["topk"]), "--crop-seconds", str(c["crop_seconds"]),
            "--speeds", ",".join(map(str, c["speeds"])), "--aug-prob", str(c["aug_prob"]),
            "--chunk-rows", str(c["chunk_rows"]), "--shard-rows", str(c["shard_rows"]),
            "--seed", str(c["run_seed"]), "--workers", "0", "--batch-size", "32",
            "--threads", "1"]


@pytest.fixture(scope="session")
def student_cache(toy_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> StudentCache:
    import torch

    from speaker.io.paths import DataPaths
    from speaker.views.augment import AugmentConfig
    from stage1_teacher import dump
    from stage1_teacher.train import resolve_config, train_teacher

    c = STUDENT_CACHE
    root = tmp_path_factory.mktemp("student_cache")
    config = resolve_config("demo", {
        "arch": "xvector", "arch_kwargs": {"channels": 32, "embed_dim": 32}, "epochs": 1,
        "batch_size": 16, "crop_seconds": c["crop_seconds"], "workers": 0, "eval_every": 0,
        "augment": AugmentConfig(aug_prob=c["aug_prob"], speeds=c["speeds"]),
    })
    cache = root / "logits.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust to a busy CPU
    try:
        train_teacher(config, DataPaths(data=toy_corpus), root / "teacher", resume=False)
        dump.cli.main(student_dump_argv(root / "teacher" / "model.pt", toy_corpus, cache),
                      standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    return StudentCache(toy_corpus, root / "teacher" / "model.pt", cache)


# The tiny student run shared by tests/stage2_student (cached DKD, the paper's setting):
# 96 rows -> 6 steps of 16 per epoch, evaluated after the last epoch.
STUDENT_TRAIN = ("--arch", "xvector", "--arch-opt", "channels=32", "--arch-opt", "embed_dim=32",
                 "--epochs", "3", "--batch-size", "16", "--workers", "0")


@dataclass(frozen=True)
class StudentRun:
    """A finished ``stage2_student.train`` run on ``student_cache``; treat as read-only."""

    out: Path  # model.pt, config.json, results.json, det.png
    args: tuple[str, ...]  # its command line without --out

    def command(self, out: Path) -> list[str]:
        """The same command writing to ``out``."""
        return [*self.args, "--out", str(out)]


@pytest.fixture(scope="session")
def student_run(student_cache: StudentCache,
                tmp_path_factory: pytest.TempPathFactory) -> StudentRun:
    import torch

    from stage2_student.train import cli

    args = ("--cache", str(student_cache.cache), "--data", str(student_cache.corpus),
            *STUDENT_TRAIN)
    run = StudentRun(tmp_path_factory.mktemp("student_run") / "run", args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses that resume it get (OMP_NUM_THREADS=1)
    try:
        cli.main(run.command(run.out), standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    return run


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], seconds: float, what: str,
               ended: Callable[[], str]) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it ends before (``ended()`` says
    why) or nothing is ready after ``seconds``."""
    try:
        deadline = time.monotonic() + seconds
        while not ready():
            assert proc.poll() is None, ended()
            assert time.monotonic() < deadline, f"no {what} after {seconds} s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _sigkill_when(command: list[str], ready: Callable[[], bool], env: dict[str, str],
                  what: str, timeout: float = 120) -> None:
    """Run ``command`` from the repository root, SIGKILL it as soon as ``ready()`` holds
    (``what`` names the awaited state in the message if ``timeout`` seconds pass first)."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _kill_when(proc, ready, timeout, what, lambda: proc.stderr.read().decode())
    finally:
        proc.stderr.close()


def _sigkill_once_checkpointed(command: list[str], out: Path, env: dict[str, str]) -> int:
    """Run a training CLI, SIGKILL it as soon as ``out/model.pt`` exists; -> the epoch
    that checkpoint holds (the caller checks it is mid-run)."""
    from speaker.models.checkpoint import load_checkpoint

    _sigkill_when(command, (out / "model.pt").exists, env, "checkpoint")
    return load_checkpoint(out / "model.pt").state["epoch"]


@pytest.fixture
def sigkill_when() -> Callable[[list[str], Callable[[], bool], dict[str, str], str], None]:
    """``sigkill_when(command, ready, env, what)``: a real SIGKILL once ``ready()`` holds."""
    return _sigkill_when


@pytest.fixture
def sigkill_once_checkpointed() -> Callable[[list[str], Path, dict[str, str]], int]:
    """The kill half of the kill-then-resume tests of teacher and student training."""
    return _sigkill_once_checkpointed


def _sigkill_after_first_shard(command: list[str], out: Path, log: Path) -> list[int]:
    """Run a dump CLI, SIGKILL it once a shard of ``out`` is complete; -> the shards left
    missing (the caller checks some are)."""
    from store import StoreReader

    repo = Path(__file__).resolve().parents[1]

    def completed() -> int | None:
        try:
            reader = StoreReader.open(out, allow_incomplete=True)
        except Exception:  # not created yet, or caught between two writes of its metadata
            return None
        return reader.spec.num_shards - len(reader.missing_shards())

    with log.open("w") as sink:
        proc = subprocess.Popen(command, cwd=repo, stdout=sink, stderr=sink)
        _kill_when(proc, lambda: (completed() or 0) >= 1, 300, "completed shard",
                   lambda: "the dump finished before it could be killed")
    return StoreReader.open(out, allow_incomplete=True).missing_shards()


@pytest.fixture
def sigkill_after_first_shard() -> Callable[[list[str], Path, Path], list[int]]:
    """The kill half of the dumps' kill-then-resume tests: ``(command, out, log)`` ->
    missing shards after a SIGKILL that came once one shard was complete."""
    return _sigkill_after_first_shard


def _checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    from speaker.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    state = {f"model.{k}": v for k, v in ckpt.model.state_dict().items()}
    state.update({f"head.{k}": v for k, v in ckpt.head.state_dict().items()})
    return state


def _assert_same_weights(a: Path, b: Path) -> None:
    import torch

    wa, wb = _checkpoint_tensors(a), _checkpoint_tensors(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ in {different}"


@pytest.fixture
def assert_same_weights() -> Callable[[Path, Path], None]:
    """Every model and head tensor of two checkpoints, compared bit for bit."""
    return _assert_same_weights


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
