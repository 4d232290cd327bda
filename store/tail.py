"""The sampled tail's row contract and its reference sampler (numpy only, no torch).

Per row and per temperature ``T`` of the grid, the tail is every non-target class outside the
row's top-k. Besides its exact log-mass (``tail_lse``), a cache with a sampled tail keeps M
classes drawn with replacement from the teacher's distribution over that tail at T,

    P(draw = j) = exp(z_j / T) / exp(tail_lse)      for j in the tail,

each with the teacher's logit ``z_j`` (no temperature, no margin). Any loss term of the form
``sum_j q_j f_j`` over the tail is then estimated without bias by ``Q_tail * mean_m f(j_m)``
(docs/sampled_tail.md has the math and the tests that prove it).

:func:`draw_tail` is the one definition of a draw; :func:`tail_rng` the one RNG layout. The
dump (stage 1) calls them per stored row and temperature (:func:`draw_store_rows`: the
``tail_index`` / ``tail_logit`` columns of a block of rows); online mode
(``stage2_student.losses.sampled``) calls them on a live teacher's logits, so both give the
same draws for the same seeds. It lives in ``store`` because both stages use it, and imports
only numpy.

Example::

    >>> z = np.array([5.0, 3.0, 0.0, 0.0, 1.0, -9.0], np.float32)
    >>> d = draw_tail(z, target=0, topk_index=[1], temperature=1.0, m=6, rng=tail_rng(7, 0, 0))
    >>> d.index, d.logit, round(float(d.lse), 4)
    (array([3, 3, 4, 4, 4, 4]), array([0., 0., 1., 1., 1., 1.], dtype=float32), 1.5515)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["TailDraws", "TailDraw", "draw_tail", "tail_rng", "draw_tail_rows", "draw_store_rows",
           "as_counts", "SAMPLER"]

SAMPLER = "draw_tail/1"  # the sampler's name and version, for a store's spec


@dataclass(frozen=True)
class TailDraws:
    """The sampled tail of a batch at one temperature: what the cache stores per row.

    index: [B, M] int (int16 or int32 as ``topk_index``), the drawn classes; never the
        label nor one of the row's top-k; -1 = no draw (padding, weight 0).
    logit: [B, M] float16 or float32, the teacher's logit ``z_j`` of each drawn class
        (no temperature, no margin; ignored where index is -1).
    count: None (the M columns are M draws with replacement, each of weight 1/M), or [B, M]
        non-negative numbers: column m stands for ``count`` draws of ``index`` (unique ids
        with counts, -1 / 0 padding). Weights are ``count / row sum``, so real-valued
        counts (an importance-weighted list of tail classes) are accepted too.

    >>> TailDraws(np.array([[4, 4, 9]]), np.array([[1.0, 1.0, -2.0]], np.float16)).m
    3
    """

    index: np.ndarray
    logit: np.ndarray
    count: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.index.ndim != 2 or self.logit.shape != self.index.shape:
            raise ValueError(f"tail index {self.index.shape} and logit {self.logit.shape} "
                             "must both be [B, M]")
        if self.count is not None and self.count.shape != self.index.shape:
            raise ValueError(f"tail count {self.count.shape} must be [B, M] = "
                             f"{self.index.shape}")

    @property
    def m(self) -> int:
        """Columns per row (draws, or slots of unique ids with counts)."""
        return self.index.shape[1]


class TailDraw(NamedTuple):
    """One row's draws: ``index`` [M] int64 class ids in ascending order (-1 when the tail
    is empty), ``logit`` [M] float32 their teacher logits (-inf when empty), and ``lse`` the
    tail's exact ``logsumexp(z_j / T)`` in float64 (-inf when empty)."""

    index: np.ndarray
    logit: np.ndarray
    lse: float


def tail_rng(run_seed: int, row: int, temperature_index: int) -> np.random.Generator:
    """The generator of one stored row's draws at one temperature of the grid:
    ``np.random.default_rng([run_seed, row, temperature_index])`` with ``row`` the store
    row (not the utterance) and ``temperature_index`` the column of ``tail_lse``.

    >>> float(tail_rng(0, 5, 1).random())  # the layout is fixed: this value never changes
    0.37339939632417873
    """
    return np.random.default_rng([int(run_seed), int(row), int(temperature_index)])


def draw_tail(logits: np.ndarray, target: int, topk_index: Sequence[int] | np.ndarray,
              temperature: float, m: int, rng: np.random.Generator) -> TailDraw:
    """Draw ``m`` tail classes with replacement from the teacher's distribution at T.

    Args:
        logits: [C] the teacher's full logits of the row (float32 as the dump has them,
            without margin).
        target: the row's label (excluded).
        topk_index: the row's kept non-targets (excluded).
        temperature: T > 0.
        m: draws (>= 0).
        rng: the row's generator (:func:`tail_rng` in a cache).

    The tail's classes in ascending id order get weights ``exp(z_j/T - max)`` in float64;
    ``m`` uniforms ``rng.random(m)`` scaled by their sum pick classes by
    ``searchsorted(cumsum, u, side="right")`` (inverse CDF; one ``random`` call per row,
    nothing else drawn), and the picks are returned sorted by class id (the estimator does
    not depend on the order; sorted ids compress better and make counts adjacent).
    """
    z = np.asarray(logits, np.float64)
    if z.ndim != 1:
        raise ValueError(f"logits must be one row [C], got shape {z.shape}")
    if not (np.isfinite(temperature) and temperature > 0) or m < 0:
        raise ValueError(f"temperature must be > 0 and m >= 0, got {temperature}, {m}")
    member = np.ones(z.shape[0], bool)
    member[int(target)] = False
    member[np.asarray(topk_index, np.int64)] = False
    classes = np.flatnonzero(member)
    if classes.size == 0:  # k = C - 1: nothing to draw from
        return TailDraw(np.full(m, -1, np.int64), np.full(m, -np.inf, np.float32), -np.inf)
    u = z[classes] / temperature
    top = u.max()
    cdf = np.cumsum(np.exp(u - top))
    pick = np.searchsorted(cdf, rng.random(m) * cdf[-1], side="right")
    pick = np.sort(np.minimum(pick, classes.size - 1))
    index = classes[pick]
    return TailDraw(index, z[index].astype(np.float32), float(top + np.log(cdf[-1])))


def draw_tail_rows(logits: np.ndarray, labels: np.ndarray, topk_index: np.ndarray,
                   temperature: float, m: int,
                   rngs: Sequence[np.random.Generator]) -> tuple[TailDraws, np.ndarray]:
    """:func:`draw_tail` for every row of a batch, row ``i`` with ``rngs[i]``.

    Returns (TailDraws with int64 index and float32 logit [B, m], tail_lse [B] float64).
    """
    rows = [draw_tail(logits[i], labels[i], topk_index[i], temperature, m, rngs[i])
            for i in range(len(logits))]
    index = np.stack([r.index for r in rows]) if rows else np.empty((0, m), np.int64)
    logit = np.stack([r.logit for r in rows]) if rows else np.empty((0, m), np.float32)
    return TailDraws(index, logit), np.array([r.lse for r in rows], np.float64)


def draw_store_rows(logits: np.ndarray, labels: np.ndarray, topk_index: np.ndarray,
                    temperatures: Sequence[float], m: int, run_seed: int, rows: np.ndarray,
                    index_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The ``tail_index`` [B, nT, m] (``index_dtype``) and ``tail_logit`` [B, nT, m]
    (float16) columns of store rows ``rows`` (global row numbers) from the teacher's full
    float32 ``logits`` [B, C]: row ``i`` at temperature column ``t`` is
    ``draw_tail(logits[i], labels[i], topk_index[i], temperatures[t], m,
    tail_rng(run_seed, rows[i], t))``.

    >>> z = np.array([[5.0, 3.0, 0.0, 0.0, 1.0, -9.0]], np.float32)
    >>> i, x = draw_store_rows(z, np.array([0]), np.array([[1]]), (1.0,), 6, 7, np.array([0]),
    ...                        np.dtype(np.int16))
    >>> i.tolist(), x.dtype
    ([[[3, 3, 4, 4, 4, 4]]], dtype('float16'))
    """
    b, n_t = len(logits), len(temperatures)
    index = np.empty((b, n_t, m), index_dtype)
    logit = np.empty((b, n_t, m), np.float16)
    for i in range(b):
        z = np.asarray(logits[i], np.float32)
        for t, temperature in enumerate(temperatures):
            d = draw_tail(z, int(labels[i]), topk_index[i], temperature, m,
                          tail_rng(run_seed, int(rows[i]), t))
            index[i, t], logit[i, t] = d.index, d.logit
    return index, logit


def as_counts(draws: TailDraws) -> TailDraws:
    """The same draws as unique ids with counts (uint16), padded with -1 / 0 to M columns.

    >>> d = as_counts(TailDraws(np.array([[4, 4, 9]]), np.array([[1.0, 1.0, -2.0]])))
    >>> d.index.tolist(), d.count.tolist()
    ([[4, 9, -1]], [[2, 1, 0]])
    """
    b, m = draws.index.shape
    index = np.full((b, m), -1, draws.index.dtype)
    logit = np.zeros((b, m), draws.logit.dtype)
    count = np.zeros((b, m), np.uint16)
    for i in range(b):
        ids, first, n = np.unique(draws.index[i], return_index=True, return_counts=True)
        keep = ids >= 0
        u = int(keep.sum())
        index[i, :u], logit[i, :u], count[i, :u] = ids[keep], draws.logit[i, first[keep]], n[keep]
    return TailDraws(index, logit, count)
