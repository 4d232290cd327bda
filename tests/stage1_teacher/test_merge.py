"""``python -m stage1_teacher.merge``: the ensemble of full logits where the inputs keep every
class (no approximation left), a cache merged with itself is itself within fp16, and caches
of other views or without T = 1 are refused with one line and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from stage1_teacher import merge
from stage1_teacher.soft_labels import rows_of_logits, summarize_logits
from store import StoreReader

TEMPS = (1.0, 2.0, 4.0)


def full_ensemble(logits: list[torch.Tensor]) -> torch.Tensor:
    """Mean of the teachers' probabilities at T=1, as logits shifted by the mean
    log-normaliser (the definition in stage1_teacher.merge), from the full logits."""
    z = torch.stack([x.double() for x in logits])
    lse = torch.logsumexp(z, dim=2, keepdim=True)
    mean_p = torch.logsumexp(z - lse, dim=0) - np.log(len(logits))
    return mean_p + lse.mean(dim=0)


def test_exact_when_the_inputs_keep_every_class() -> None:
    g = torch.Generator().manual_seed(0)
    classes, n = 12, 40
    shared = torch.randn(n, classes, generator=g) * 4
    logits = [(shared + torch.randn(n, classes, generator=g) * s).half().float()
              for s in (1.0, 3.0, 0.5)]
    labels = torch.randint(0, classes, (n,), generator=g)
    blocks = [rows_of_logits(x, labels, classes - 1, TEMPS) for x in logits]
    merged = merge.merge_rows(blocks, classes, TEMPS, k=4)
    expected = summarize_logits(full_ensemble(logits).float(), labels, 4, TEMPS)
    np.testing.assert_allclose(merged.target_logit, expected.target_logit, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(merged.topk_index, expected.topk_index)
    np.testing.assert_allclose(merged.topk_logit.astype(np.float32),
                               expected.topk_logit.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(merged.tail_lse, expected.tail_lse, rtol=1e-5, atol=1e-5)


def test_one_teacher_twice_is_itself_with_a_tail() -> None:
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(30, 50, generator=g) * 8).half().float()
    labels = torch.randint(0, 50, (30,), generator=g)
    block = rows_of_logits(logits, labels, 6, TEMPS)
    merged = merge.merge_rows([block, block], 50, TEMPS, k=6)
    np.testing.assert_allclose(merged.target_logit, block.target_logit, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(merged.topk_logit, block.topk_logit)
    np.testing.assert_allclose(merged.tail_lse, block.tail_lse, rtol=1e-6, atol=1e-5)


def test_merging_a_cache_with_itself(tiny_dump: Path, tmp_path: Path, run_main) -> None:
    out = tmp_path / "self.zarr"
    result = run_main(merge.main, [str(tiny_dump), str(tiny_dump), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    a, b = StoreReader.open(tiny_dump), StoreReader.open(out)
    x, y = a.read(0, len(a)), b.read(0, len(b))
    for name in ("utt", "start", "seed", "label"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    np.testing.assert_allclose(y.target_logit, x.target_logit, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(y.topk_logit, x.topk_logit)  # fp16 both: same values
    np.testing.assert_allclose(y.tail_lse, x.tail_lse, rtol=1e-3, atol=1e-3)
    assert b.spec.teacher.arch.startswith("ensemble:") and y.embedding is None
    assert b.spec.extra["ensemble"]["members"] == [str(tiny_dump)] * 2


def test_other_views_are_refused(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                 dump_args: list[str], tmp_path: Path, run_main) -> None:
    from stage1_teacher import dump

    other = tmp_path / "other.zarr"
    args = [a if a != "3" else "4" for a in dump_args]  # --seed 4: other views (and rows)
    dump.cli.main(["--teacher", str(dump_teachers["b"]), "--data", str(toy_corpus),
                   "--out", str(other), *args[:-1], "5"], standalone_mode=False)
    out = tmp_path / "ens.zarr"
    result = run_main(merge.main, [str(tiny_dump), str(other), "--out", str(out)])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "differs" in result.error_lines[0]
    assert not out.exists() and not list(tmp_path.glob(".ens.zarr*"))


def test_grid_without_one_is_refused(tiny_dump: Path, tmp_path: Path, run_main,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(tiny_dump, copy)
    real = merge.StoreReader.open

    def open_without_one(path, *a, **kw):
        reader = real(path, *a, **kw)
        import dataclasses

        reader.spec = dataclasses.replace(reader.spec, temperatures=(2.0, 4.0, 8.0))
        return reader

    monkeypatch.setattr(merge.StoreReader, "open", open_without_one)
    result = run_main(merge.main, [str(tiny_dump), str(copy), "--out", str(tmp_path / "e.zarr")])
    assert result.exit_code == 2 and "lacks 1.0" in result.error_lines[0]
