"""Fault injection for training runs (issue "Nothing trains on the wrong bytes", the
train-side findings): a resumed student against a re-dumped cache or a rewritten online
teacher, two writers into one run directory (also under another spelling of its path, and
for the dump's store), and architecture options of the wrong type or range. Each scenario
runs through the CLI as ``python -m`` runs it: exit status 2, one ``error:`` line naming what
is wrong, and nothing written before changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import speaker.models.__main__ as models_cli
from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from stage1_teacher import dump
from stage1_teacher import train as teacher_train
from stage2_student import train as student_train
from store.lock import StoreLock
from tests.faults.test_cli_faults import STUDENT, TINY_TEACHER, assert_one_error, snapshot


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models: one thread is as fast on a busy machine."""


def student_args(cache: Path, corpus: Path, out: Path, *extra: str) -> list:
    """A one-epoch tiny student on ``cache``, without the test set (nothing to evaluate)."""
    return ["--cache", cache, "--train", corpus / "train" / "manifest.jsonl",
            "--musan", corpus / "musan", "--rirs", corpus / "rirs", *STUDENT,
            "--epochs", "1", "--out", out, *extra]


def redump(student_cache, cache: Path, **change: str) -> None:
    """Dump ``student_cache``'s teacher into ``cache`` again, in place, with its settings
    (tests/conftest.py STUDENT_CACHE) and the ``change``d options."""
    c = student_cache.settings
    options = {"--views-per-utt": c["views_per_utt"], "--topk": c["topk"],
               "--crop-seconds": c["crop_seconds"], "--speeds": ",".join(map(str, c["speeds"])),
               "--aug-prob": c["aug_prob"], "--chunk-rows": c["chunk_rows"],
               "--shard-rows": c["shard_rows"], "--seed": c["run_seed"], "--workers": 0,
               "--batch-size": 32, "--threads": 1, **change}
    shutil.rmtree(cache)
    dump.cli.main(["--teacher", str(student_cache.teacher), "--data", str(student_cache.corpus),
                   "--out", str(cache), *(str(a) for kv in options.items() for a in kv)],
                  standalone_mode=False)


# ---- 1. --resume checks what it trains on, not only where it is ----------------------------


@pytest.mark.parametrize("change, needle", [({"--seed": "1"}, "cache.run_seed: 0 -> 1"),
                                            ({"--aug-prob": "0.3"}, "cache.augment_hash")])
def test_resume_against_a_redumped_cache_is_refused(student_cache, tmp_path: Path, run_cli,
                                                    change, needle):
    cache, out = tmp_path / "logits.zarr", tmp_path / "run"
    shutil.copytree(student_cache.cache, cache)
    args = student_args(cache, student_cache.corpus, out)
    assert run_cli(student_train.cli, args).exit_code == 0
    before = snapshot(out)
    redump(student_cache, cache, **change)
    line = assert_one_error(run_cli(student_train.cli, [*args, "--resume"]), str(out / "model.pt"),
                            "other inputs", needle, "choose another --out")
    assert line.startswith("error: ")
    assert snapshot(out) == before


def test_resume_with_a_rewritten_online_teacher_is_refused(student_cache, tmp_path: Path,
                                                           run_cli):
    teacher, out = tmp_path / "teacher.pt", tmp_path / "run"
    shutil.copy(student_cache.teacher, teacher)
    args = student_args(student_cache.cache, student_cache.corpus, out, "--online-teacher",
                        teacher)
    assert run_cli(student_train.cli, args).exit_code == 0
    before = snapshot(out)
    loaded = load_checkpoint(teacher)
    with torch.no_grad():
        loaded.head.weight.add_(0.01)  # another teacher at the same path
    save_checkpoint(teacher, arch=loaded.arch, arch_kwargs=loaded.arch_kwargs,
                    model=loaded.model, head=loaded.head, label_map=loaded.label_map,
                    config=loaded.config, state=loaded.state)
    assert_one_error(run_cli(student_train.cli, [*args, "--resume"]), "other inputs",
                     "online_teacher_sha256")
    assert snapshot(out) == before


# ---- 3. one writer per run directory, whatever the spelling of its path --------------------


@pytest.fixture
def run_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A run directory and a symlink to it."""
    real = tmp_path / "run"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    return real, link


@pytest.mark.parametrize("spelling", ["same", "symlink"])
def test_second_student_into_a_busy_run_directory_is_refused(student_cache, run_dirs,
                                                             run_cli, spelling):
    real, link = run_dirs
    out = real if spelling == "same" else link
    with StoreLock.acquire(real):  # the first run, writing
        result = run_cli(student_train.cli,
                         student_args(student_cache.cache, student_cache.corpus, out))
    assert_one_error(result, "another process", f"pid {os.getpid()}",
                     "wait for it to finish")
    assert list(real.iterdir()) == []


@pytest.mark.parametrize("spelling", ["same", "symlink"])
def test_second_teacher_into_a_busy_run_directory_is_refused(toy_corpus: Path, run_dirs,
                                                             run_cli, spelling):
    real, link = run_dirs
    out = real if spelling == "same" else link
    with StoreLock.acquire(real):
        result = run_cli(teacher_train.cli, ["--data", toy_corpus, "--out", out, "--epochs", "1",
                                             *TINY_TEACHER])
    assert_one_error(result, "another process", "wait for it to finish")
    assert list(real.iterdir()) == []


def test_dump_through_a_symlink_to_a_busy_store_is_refused(toy_corpus: Path, dump_teachers,
                                                           dump_args, tmp_path: Path,
                                                           run_cli):
    real = tmp_path / "logits.zarr"
    link = tmp_path / "link.zarr"
    link.symlink_to(real)  # the store is being created by the first dump
    with StoreLock.acquire(real):
        result = run_cli(dump.cli, ["--teacher", dump_teachers["a"], "--data", toy_corpus,
                                    "--out", link, *dump_args])
    assert_one_error(result, "another process", str(link))
    assert not real.exists()


# ---- 5. architecture options are checked against the factory's arguments -------------------

# --arch-opt value -> what the error line must say
BAD_ARCH_OPTS = [("channels=abc", ("channels='abc'", "an integer >= 1")),
                 ("channels=0", ("channels=0", "an integer >= 1")),
                 ("embed_dim=1.5", ("embed_dim=1.5", "an integer >= 1")),
                 ("nosuch=1", ("nosuch", "accepted: channels"))]


def assert_only_the_error(result, *needles: str) -> None:
    assert_one_error(result, *needles)
    assert result.stderr.strip().splitlines() == result.error_lines, result.stderr
    assert "unsupported operand" not in result.stderr


@pytest.mark.parametrize("opt, needles", BAD_ARCH_OPTS)
def test_bad_arch_opt_of_the_teacher(toy_corpus: Path, tmp_path: Path, run_cli, opt, needles):
    out = tmp_path / "run"
    result = run_cli(teacher_train.cli, ["--data", toy_corpus, "--out", out, "--arch", "xvector",
                                         "--arch-opt", opt])
    assert_only_the_error(result, "'xvector'", *needles)
    assert not out.exists()


@pytest.mark.parametrize("opt, needles", BAD_ARCH_OPTS)
def test_bad_arch_opt_of_the_student(student_cache, tmp_path: Path, run_cli, opt, needles):
    out = tmp_path / "run"
    result = run_cli(student_train.cli, ["--cache", student_cache.cache, "--data",
                                         student_cache.corpus, "--out", out, "--arch-opt", opt])
    assert_only_the_error(result, "'xvector'", *needles)
    assert not out.exists()


@pytest.mark.parametrize("opt, needles", BAD_ARCH_OPTS)
def test_bad_arch_opt_of_the_parameter_count(run_cli, opt, needles):
    result = run_cli(models_cli.cli, ["--arch", "xvector", "--arch-opt", opt])
    assert_only_the_error(result, "'xvector'", *needles)
