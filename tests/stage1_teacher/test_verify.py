"""``python -m stage1_teacher.verify``: replaying rows passes for the teacher that wrote them,
fails (exit 1) for another teacher, for tampered embeddings and for a wrong top-k set, and
refuses (exit 2, one line) stores it cannot replay.

Fixtures (toy corpus, teachers "a"/"b", the reference dump ``tiny_dump`` made with teacher
"a" and ``--embeddings``) come from tests/conftest.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from stage1_teacher import verify
from stage1_teacher.soft_labels import summarize_logits
from store import StoreReader, StoreWriter

COLUMNS = ("target_logit", "topk_logit", "topk_order", "tail_lse", "embedding")


def verify_args(store: Path, teacher, data: Path, rows: int = 96) -> list[str]:
    return [str(store), "--teacher", str(teacher), "--data", str(data), "--rows", str(rows)]


def reported(stdout: str) -> dict[str, float]:
    """``{name: max |diff|}`` and ``{"ratio": worst ratio}`` from the lines verify prints,
    e.g. ``  target_logit  max |diff| 3.1e-05   = 0.0153x tolerance  pass  (...)``."""
    out = {"ratio": 0.0}
    for line in stdout.splitlines():
        m = re.match(r"  (\w+) +max \|diff\| (\S+) += (\S+)x tolerance  (pass|FAIL)", line)
        if m:
            out[m[1]] = float(m[2])
            out["ratio"] = max(out["ratio"], float(m[3]))
            assert (m[4] == "pass") == (float(m[3]) <= 1.0), line
    return out


def copy_store(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy.zarr"
    shutil.copytree(src, out)
    return out


def test_passes_for_the_teacher_that_wrote_the_cache(tiny_dump: Path, toy_corpus: Path,
                                                      dump_teachers, run_main):
    result = run_main(verify.main, verify_args(tiny_dump, dump_teachers["a"], toy_corpus))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ok: 96 rows" in result.stdout
    assert "passes when |cached - fresh| <= 0.002 + 0.002 |cached|" in result.stdout
    assert "crop_checksum 96 of 96 crops read the audio the cache was dumped from  pass" \
        in result.stdout
    values = reported(result.stdout)
    assert set(values) == {*COLUMNS, "ratio"}, result.stdout
    assert values["ratio"] <= 1.0
    assert values["topk_order"] == 0.0


def test_fails_for_another_teacher(tiny_dump: Path, toy_corpus: Path, dump_teachers, run_main):
    """Same architecture and label map, other weights: the replay must not pass."""
    result = run_main(verify.main, verify_args(tiny_dump, dump_teachers["b"], toy_corpus, 32))
    assert result.exit_code == 1, result.stdout + result.stderr
    assert len(result.error_lines) == 1 and "beyond fp16 tolerance" in result.error_lines[0]
    assert "Traceback" not in result.stderr
    assert reported(result.stdout)["target_logit"] > 0.1


def test_compares_embeddings(tiny_dump: Path, toy_corpus: Path, dump_teachers, tmp_path: Path,
                             run_main):
    """Embeddings 1% off in one shard: every logit column still replays, verify fails."""
    store = copy_store(tiny_dump, tmp_path)
    writer = StoreWriter.open(store)
    start, stop = writer.shard_rows_range(1)
    block = StoreReader.open(store).read(start, stop)
    block.embedding = (block.embedding.astype(np.float32) * 1.01 + 0.01).astype(np.float16)
    writer.write_shard(1, block)

    result = run_main(verify.main, verify_args(store, dump_teachers["a"], toy_corpus))
    assert result.exit_code == 1, result.stdout + result.stderr
    values = reported(result.stdout)
    assert values["embedding"] > 0.01
    for name in ("target_logit", "topk_logit", "topk_order", "tail_lse"):
        assert values[name] < 0.01, (name, values)


def test_top_k_that_is_not_the_teachers_top_k_fails():
    """Cached logits and tail consistent with the fresh ones, but the cached classes are
    not the k largest: only ``topk_order`` can tell."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 10)).astype(np.float32) * 5
    labels = rng.integers(0, 10, 6)
    k, temperatures = 3, (1.0, 2.0)
    right = summarize_logits(*map(_tensor, (logits, labels)), k, temperatures)
    # keep the 1st, 2nd and 4th non-target classes instead of the 1st to 3rd
    wide = summarize_logits(*map(_tensor, (logits, labels)), k + 1, temperatures)
    index = wide.topk_index[:, [0, 1, 3]]
    block = SimpleNamespace(label=labels, topk_index=index,
                            topk_logit=np.take_along_axis(logits, index.astype(np.int64), 1),
                            target_logit=right.target_logit, tail_lse=right.tail_lse)
    fresh = verify._fresh_columns(logits, block, temperatures)
    block.tail_lse = fresh["tail_lse"][0].astype(np.float32)  # a consistent tail for them
    fresh = verify._fresh_columns(logits, block, temperatures)
    for name in ("target_logit", "topk_logit", "tail_lse"):
        new, old = fresh[name]
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-6)
    new, old = fresh["topk_order"]
    gap = wide.topk_logit[:, 2] - wide.topk_logit[:, 3]
    np.testing.assert_allclose(new - old, gap, rtol=1e-5, atol=1e-5)
    assert (new - old > 0).all()

    block = SimpleNamespace(label=labels, topk_index=right.topk_index,
                            topk_logit=right.topk_logit, target_logit=right.target_logit,
                            tail_lse=right.tail_lse)
    new, old = verify._fresh_columns(logits, block, temperatures)["topk_order"]
    assert np.array_equal(new, old)


def _tensor(a: np.ndarray):
    import torch

    return torch.from_numpy(a)


def test_teacher_with_other_class_count(tiny_dump: Path, toy_corpus: Path, run_main):
    result = run_main(verify.main, verify_args(tiny_dump, "tests.stage1_teacher.dump_teachers:wrong_classes",
                                               toy_corpus, 8))
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1 and "7 classes" in result.error_lines[0]


def test_incomplete_store_is_refused(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                     tmp_path: Path, run_main):
    store = copy_store(tiny_dump, tmp_path)
    StoreWriter.open(store).invalidate([2])
    result = run_main(verify.main, verify_args(store, dump_teachers["a"], toy_corpus, 8))
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1 and "incomplete" in result.error_lines[0]


def test_other_manifest_is_refused(tiny_dump: Path, toy_corpus: Path, dump_teachers, run_main):
    args = [*verify_args(tiny_dump, dump_teachers["a"], toy_corpus, 8),
            "--train", str(toy_corpus / "test" / "manifest.jsonl")]
    result = run_main(verify.main, args)
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1 and "manifest" in result.error_lines[0]
