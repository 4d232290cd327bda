"""Comparing two systems trained with several seeds: hierarchical bootstrap intervals of an EER
difference and the verdicts drawn from them.

A system is a set of training runs (one per seed); each run keeps its EER on the same ``B``
speaker-bootstrap replicates of the test trials (:func:`speaker.evaluation.metrics.bootstrap_eers`
with one seed for every run, so replicate ``b`` resamples the same test speakers everywhere).
The difference ``mean over A's seeds - mean over B's seeds`` then has two sources of noise:
which test speakers were drawn, and which training seeds. :func:`hierarchical_difference`
resamples both: resample ``r`` draws seeds with replacement (jointly for both systems when their
seeds are paired, i.e. seed ``i`` of A and of B share initialisation and data order) and one
speaker replicate ``b``, and takes the difference of the seed means on replicate ``b``. With one
seed per system it is the paired speaker bootstrap.

Verdicts (:func:`verdict`), one rule everywhere:

- ``"different"``: the 95 % interval excludes 0;
- ``"equivalent"``: two one-sided tests at 5 % against the stated margin ``delta``, i.e. the
  90 % interval lies inside ``(-delta, +delta)`` (TOST), and the 95 % interval includes 0;
- ``"within noise"`` (no margin given) or ``"not shown equivalent"``: neither.

One-sided, for "does A cost accuracy against B?" (lower is better, as for EER):
:func:`not_worse` holds when the test at 5 % shows A - B below ``+delta``, i.e. the 90 %
interval's upper end lies below the margin (non-inferiority; A may still be better by more).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = 0.10 + 0.01 * rng.standard_normal((3, 500))   # 3 seeds x 500 replicates
    >>> b = 0.10 + 0.01 * rng.standard_normal((3, 500))
    >>> d = hierarchical_difference(a, b, n_resamples=1000, seed=0)
    >>> verdict(d, margin=0.05), verdict(d)
    ('equivalent', 'within noise')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from store.errors import UserError

__all__ = ["Difference", "hierarchical_difference", "not_worse", "verdict"]


@dataclass(frozen=True)
class Difference:
    """``diff`` = mean(A) - mean(B) over seeds (full trial lists), with the 2.5/97.5 % (``lo``,
    ``hi``) and 5/95 % (``lo90``, ``hi90``) quantiles of its hierarchical bootstrap; ``seeds``
    = (seeds of A, seeds of B)."""

    diff: float
    lo: float
    hi: float
    lo90: float
    hi90: float
    seeds: tuple[int, int]
    paired: bool

    def scaled(self, factor: float) -> Difference:
        """The same difference in other units (e.g. 100 for EER points)."""
        return Difference(self.diff * factor, self.lo * factor, self.hi * factor,
                          self.lo90 * factor, self.hi90 * factor, self.seeds, self.paired)


def _replicates(runs: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(runs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UserError(f"{what}: expected EER replicates as [seeds, replicates], got shape "
                        f"{arr.shape}")
    return arr


def hierarchical_difference(
    a_boot: ArrayLike,
    b_boot: ArrayLike,
    a_eer: ArrayLike | None = None,
    b_eer: ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    paired: bool | None = None,
) -> Difference:
    """Difference of two systems' mean EERs with a bootstrap over training seeds and test
    speakers (see the module doc).

    ``a_boot``/``b_boot``: ``[seeds, B]`` EERs on the shared speaker replicates (the same
    ``B`` for both); ``a_eer``/``b_eer``: each seed's EER on the full trial list (default: the
    mean of its replicates). ``paired`` (default: when both have the same number of seeds)
    resamples seed indices jointly. Resample ``r`` draws, in this order from
    ``np.random.default_rng(seed)``, the seed indices of A (and, unpaired, of B) and the
    replicate index.
    """
    a, b = _replicates(a_boot, "system A"), _replicates(b_boot, "system B")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"the two systems' runs keep {a.shape[1]} and {b.shape[1]} speaker "
                        "replicates; compare runs scored on the same replicates")
    paired = a.shape[0] == b.shape[0] if paired is None else paired
    if paired and a.shape[0] != b.shape[0]:
        raise UserError(f"paired seeds need as many runs on both sides ({a.shape[0]} vs "
                        f"{b.shape[0]})")
    full_a = a.mean(axis=1) if a_eer is None else np.asarray(a_eer, dtype=np.float64)
    full_b = b.mean(axis=1) if b_eer is None else np.asarray(b_eer, dtype=np.float64)
    rng = np.random.default_rng(seed)
    sa, sb, n_rep = a.shape[0], b.shape[0], a.shape[1]
    diffs = np.empty(n_resamples)
    for r in range(n_resamples):
        ia = rng.integers(sa, size=sa)
        ib = ia if paired else rng.integers(sb, size=sb)
        rep = rng.integers(n_rep)
        diffs[r] = a[ia, rep].mean() - b[ib, rep].mean()
    lo, lo90, hi90, hi = np.quantile(diffs, [0.025, 0.05, 0.95, 0.975])
    return Difference(float(full_a.mean() - full_b.mean()), float(lo), float(hi), float(lo90),
                      float(hi90), (sa, sb), bool(paired))


def verdict(d: Difference, margin: float | None = None) -> str:
    """``"different"``, ``"equivalent"`` (needs ``margin``), ``"not shown equivalent"`` or,
    without a margin, ``"within noise"`` (see the module doc)."""
    if d.lo > 0 or d.hi < 0:
        return "different"
    if margin is None:
        return "within noise"
    if -margin < d.lo90 and d.hi90 < margin:
        return "equivalent"
    return "not shown equivalent"


def not_worse(d: Difference, margin: float) -> bool:
    """A is shown not worse than B by more than ``margin`` (one-sided test at 5 %: the 90 %
    interval's upper end lies below ``+margin``; lower is better).

    Example:
        >>> not_worse(Difference(-0.4, -1.0, 0.1, -0.9, -0.02, (3, 3), True), 0.5)
        True
    """
    return d.hi90 < margin
