"""``python -m stage1_teacher.dump --tail-samples M``: the draws are ``store.tail.draw_tail`` of
the teacher's logits with each row's generator, nothing else in the cache changes, a killed dump
resumes to the same draws, ``stage1_teacher.verify`` replays them, and ``merge`` refuses them.

The reference (``tiny_dump``) and the teachers come from tests/conftest.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.teachers.load import load_teacher
from stage1_teacher import dump, merge, verify
from store import StoreReader
from store.tail import SAMPLER, draw_store_rows
from tests.stage1_teacher.test_dump import (
    REPO,
    SHARD_ROWS,
    assert_same_store,
    dump_cmd,
    read_all,
    renderer,
)

M = 5


@pytest.fixture(scope="module")
def tail_dump(tiny_dump: Path, toy_corpus: Path, dump_teachers, tmp_path_factory) -> Path:
    """``tiny_dump``'s settings with ``--tail-samples 5`` (k = 4 of 8 classes: a 3-class tail)."""
    from tests.conftest import DUMP_ARGS

    out = tmp_path_factory.mktemp("tail") / "logits.zarr"
    dump.cli.main(dump_cmd(dump_teachers["a"], toy_corpus, out,
                           [*DUMP_ARGS, "--embeddings", "--tail-samples", str(M)]),
                  standalone_mode=False)
    return out


def test_the_tail_adds_two_arrays_and_changes_nothing_else(tail_dump: Path, tiny_dump: Path):
    spec = StoreReader.open(tail_dump).spec
    assert (spec.tail_draws, spec.tail_sampler) == (M, SAMPLER)
    assert spec.extra["dump"]["tail_samples"] == M
    assert "tail_samples" not in StoreReader.open(tiny_dump).spec.extra["dump"]
    with_tail, without = read_all(tail_dump), read_all(tiny_dump)
    assert set(with_tail) - set(without) == {"tail_index", "tail_logit"}
    for name, array in without.items():
        assert array.tobytes() == with_tail[name].tobytes(), name
    assert with_tail["tail_index"].shape == (96, 3, M)


def test_the_draws_are_draw_tail_of_the_teachers_logits(tail_dump: Path, toy_corpus: Path,
                                                        dump_teachers):
    reader = StoreReader.open(tail_dump)
    rows = np.arange(SHARD_ROWS, SHARD_ROWS + 12)  # the dump's first batch of shard 1
    block = reader.take(rows)
    render = renderer(toy_corpus, reader, "fbank")
    x = torch.stack([render(u, s, d)[0] for u, s, d in zip(block.utt, block.start, block.seed,
                                                            strict=True)])
    logits = load_teacher(str(dump_teachers["a"]))(x)[0].numpy()
    index, logit = draw_store_rows(logits, block.label, block.topk_index.astype(np.int64),
                                   (1.0, 2.0, 4.0), M, 3, rows, np.dtype(np.int16))
    assert np.array_equal(block.tail_index, index)
    assert block.tail_logit.tobytes() == logit.tobytes()
    # a hotter temperature spreads the draws: at T = 4 they are not all one class
    assert len(np.unique(block.tail_index[:, 2])) > 1


def test_store_verify_and_replay_accept_the_draws(tail_dump: Path, toy_corpus: Path,
                                                  dump_teachers, run_main):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "store", "verify", str(tail_dump)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = run_main(verify.main, [str(tail_dump), "--teacher", str(dump_teachers["a"]),
                                    "--data", str(toy_corpus), "--rows", "24"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "tail_logit" in result.stdout and "replayed to the same class" in result.stdout
    other = run_main(verify.main, [str(tail_dump), "--teacher", str(dump_teachers["b"]),
                                   "--data", str(toy_corpus), "--rows", "24"])
    assert other.exit_code == 1


def test_sigkill_then_resume_gives_the_same_draws(tail_dump: Path, toy_corpus: Path,
                                                  dump_teachers, dump_args: list[str],
                                                  tmp_path: Path, sigkill_after_first_shard):
    import subprocess

    out = tmp_path / "logits.zarr"
    command = [sys.executable, "-m", "stage1_teacher.dump",
               *dump_cmd(dump_teachers["a"], toy_corpus, out,
                         [*dump_args, "--embeddings", "--tail-samples", str(M)])]
    missing = sigkill_after_first_shard(command, out, tmp_path / "killed.log")
    assert 1 <= len(missing) < 3, f"kill came too late or too early: missing {missing}"
    done = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {len(missing) * SHARD_ROWS} rows" in done.stdout
    assert_same_store(out, tail_dump)


def test_resume_with_other_draws_is_refused(tail_dump: Path, toy_corpus: Path, dump_teachers,
                                            dump_args: list[str], tmp_path: Path, run_main):
    import shutil

    out = tmp_path / "copy.zarr"
    shutil.copytree(tail_dump, out)
    result = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, out,
                                          [*dump_args, "--embeddings", "--tail-samples", "7",
                                           "--resume"]))
    assert result.exit_code == 2 and len(result.error_lines) == 1
    assert "tail_draws" in result.error_lines[0]


def test_merge_refuses_sampled_tails(tail_dump: Path, tiny_dump: Path, tmp_path: Path,
                                     run_main):
    out = tmp_path / "ens.zarr"
    result = run_main(merge.main, [str(tiny_dump), str(tail_dump), "--out", str(out)])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "cannot be merged" in result.error_lines[0] and not out.exists()
