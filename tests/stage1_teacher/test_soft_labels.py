"""summarize_logits against a numpy brute force: top-k non-target classes sorted by logit,
the target never among them, the tail logsumexp per temperature (-inf when k = C - 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage1_teacher.soft_labels import summarize_logits

TEMPERATURES = (0.5, 1.0, 2.0, 4.0)


def brute_force(logits: np.ndarray, labels: np.ndarray, k: int, temperatures):
    """Row by row in float64: sort the non-targets, keep k, logsumexp the rest per T."""
    target, index, top, tail = [], [], [], []
    for z, y in zip(logits.astype(np.float64), labels, strict=True):
        others = [c for c in range(len(z)) if c != y]
        ranked = sorted(others, key=lambda c: -z[c])
        kept, rest = ranked[:k], ranked[k:]
        target.append(z[y])
        index.append(kept)
        top.append(z[kept])
        row = []
        for t in temperatures:
            if not rest:
                row.append(-np.inf)
            else:
                v = z[rest] / t
                row.append(v.max() + np.log(np.exp(v - v.max()).sum()))
        tail.append(row)
    return np.array(target), np.array(index), np.array(top), np.array(tail)


def random_logits(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # distinct values (no ties) on the scale of AAM logits, s * cos with s = 32
    logits = (rng.standard_normal((rows, classes)) * 8).astype(np.float32)
    labels = rng.integers(0, classes, rows)
    # make the target the largest logit in some rows and the smallest in others
    logits[0, labels[0]] = logits[0].max() + 5
    logits[1, labels[1]] = logits[1].min() - 5
    return logits, labels


@pytest.mark.parametrize(
    ("classes", "k"),
    [(2, 1), (7, 1), (7, 3), (7, 6), (50, 10), (50, 49), (300, 32)],
)
def test_matches_brute_force(classes: int, k: int):
    logits, labels = random_logits(12, classes, seed=classes * 100 + k)
    soft = summarize_logits(torch.from_numpy(logits), torch.from_numpy(labels), k, TEMPERATURES)
    target, index, top, tail = brute_force(logits, labels, k, TEMPERATURES)

    assert soft.target_logit.dtype == np.float32 and soft.target_logit.shape == (12,)
    assert soft.topk_index.shape == (12, k) and soft.topk_logit.shape == (12, k)
    assert soft.tail_lse.shape == (12, len(TEMPERATURES)) and soft.tail_lse.dtype == np.float32
    np.testing.assert_array_equal(soft.target_logit, target.astype(np.float32))
    np.testing.assert_array_equal(soft.topk_index, index)
    np.testing.assert_array_equal(soft.topk_logit, top.astype(np.float32))
    assert not (soft.topk_index == labels[:, None]).any(), "target among the top-k"
    assert (np.diff(soft.topk_logit, axis=1) <= 0).all(), "top-k not sorted descending"
    if k == classes - 1:
        assert (soft.tail_lse == -np.inf).all()
    else:
        assert np.isfinite(soft.tail_lse).all()
        np.testing.assert_allclose(soft.tail_lse, tail, rtol=1e-6, atol=1e-5)


def test_target_is_excluded_even_when_it_is_the_largest_logit():
    logits = torch.tensor([[0.0, 9.0, 1.0, 2.0], [5.0, 4.0, 3.0, 9.0]])
    labels = torch.tensor([1, 3])
    soft = summarize_logits(logits, labels, k=2, temperatures=(1.0,))
    np.testing.assert_array_equal(soft.target_logit, [9.0, 9.0])
    np.testing.assert_array_equal(soft.topk_index, [[3, 2], [0, 1]])
    np.testing.assert_array_equal(soft.topk_logit, [[2.0, 1.0], [5.0, 4.0]])
    np.testing.assert_allclose(soft.tail_lse[:, 0], [0.0, 3.0])


def test_tail_temperature_scaling():
    """tail_lse[:, j] = logsumexp(z / T_j) over the tail, not logsumexp(z) / T_j."""
    logits = torch.tensor([[10.0, 4.0, 2.0, 2.0, 0.0]])
    soft = summarize_logits(logits, torch.tensor([0]), k=1, temperatures=(1.0, 2.0))
    rest = np.array([2.0, 2.0, 0.0])
    expected = [np.log(np.exp(rest / t).sum()) for t in (1.0, 2.0)]
    np.testing.assert_allclose(soft.tail_lse[0], expected, rtol=1e-6)


def test_half_precision_logits_are_summarised_in_float32():
    logits, labels = random_logits(4, 20, seed=3)
    soft = summarize_logits(torch.from_numpy(logits).half(), torch.from_numpy(labels), 5, (1.0,))
    assert soft.target_logit.dtype == np.float32 and soft.tail_lse.dtype == np.float32


@pytest.mark.parametrize("k", [0, 7, 8])
def test_k_out_of_range(k: int):
    with pytest.raises(ValueError, match=r"k=.*\[1, 6\]"):
        summarize_logits(torch.zeros(2, 7), torch.tensor([0, 1]), k, (1.0,))
