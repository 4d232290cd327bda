"""Hierarchical bootstrap of an EER difference against a direct loop, its reduction to the
paired speaker bootstrap with one seed, and the verdict rule on constructed intervals."""

from __future__ import annotations

import numpy as np
import pytest

from speaker.evaluation.compare import Difference, hierarchical_difference, not_worse, verdict
from store.errors import UserError


def direct(a, b, n, seed, paired):
    """The resampling written out as the docstring states it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ia = rng.integers(len(a), size=len(a))
        ib = ia if paired else rng.integers(len(b), size=len(b))
        rep = rng.integers(a.shape[1])
        out.append(np.mean([a[i, rep] for i in ia]) - np.mean([b[i, rep] for i in ib]))
    return np.quantile(out, [0.025, 0.05, 0.95, 0.975])


@pytest.mark.parametrize("paired,sb", [(True, 3), (False, 2)])
def test_matches_a_direct_loop(paired, sb):
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 40)), rng.random((sb, 40))
    d = hierarchical_difference(a, b, n_resamples=300, seed=7, paired=paired)
    lo, lo90, hi90, hi = direct(a, b, 300, 7, paired)
    assert (d.lo, d.lo90, d.hi90, d.hi) == pytest.approx((lo, lo90, hi90, hi), abs=1e-12)
    assert d.diff == pytest.approx(a.mean() - b.mean()) and d.seeds == (3, sb)


def test_one_seed_is_the_paired_speaker_bootstrap():
    """With one run per system every resample is one shared replicate: the interval is the
    quantiles of the replicate-wise differences (resampled)."""
    rng = np.random.default_rng(2)
    a, b = rng.random((1, 2000)), rng.random((1, 2000))
    d = hierarchical_difference(a, b, n_resamples=20000, seed=0)
    lo, hi = np.quantile(a[0] - b[0], [0.025, 0.975])
    assert d.lo == pytest.approx(lo, abs=0.02) and d.hi == pytest.approx(hi, abs=0.02)


def test_seed_variance_widens_the_interval():
    """Same speaker noise, but seeds that disagree: the interval must grow with the seed spread
    (a speaker-only bootstrap would not see it)."""
    rng = np.random.default_rng(3)
    noise = 0.005 * rng.standard_normal((1, 500))
    calm = np.repeat(noise, 4, axis=0)
    spread = calm + np.array([[-0.05], [0.05], [-0.03], [0.03]])
    base = np.zeros((4, 500))
    narrow = hierarchical_difference(calm, base, seed=0)
    wide = hierarchical_difference(spread, base, seed=0)
    assert (wide.hi - wide.lo) > 2 * (narrow.hi - narrow.lo)


@pytest.mark.parametrize("lo,lo90,hi90,hi,margin,expected", [
    (0.1, 0.2, 0.8, 0.9, None, "different"),
    (-0.9, -0.8, -0.2, -0.1, 0.5, "different"),
    (-0.3, -0.2, 0.2, 0.3, 0.5, "equivalent"),
    (-0.3, -0.2, 0.6, 0.7, 0.5, "not shown equivalent"),
    (-0.3, -0.2, 0.6, 0.7, None, "within noise"),
    (-0.6, -0.5, 0.2, 0.3, 0.5, "not shown equivalent"),  # the margin itself is not inside
])
def test_verdict_rule(lo, lo90, hi90, hi, margin, expected):
    assert verdict(Difference(0.0, lo, hi, lo90, hi90, (3, 3), True), margin) == expected


@pytest.mark.parametrize("hi90, expected", [(0.49, True), (-0.9, True), (0.5, False),
                                             (0.51, False)])
def test_not_worse_is_the_one_sided_upper_bound_below_the_margin(hi90, expected):
    # the lower end does not matter: a system better by more than the margin is not worse
    assert not_worse(Difference(-2.0, -3.0, hi90 + 0.1, -2.9, hi90, (3, 3), True), 0.5) \
        == expected


def test_bad_shapes_are_one_line():
    with pytest.raises(UserError, match="same replicates"):
        hierarchical_difference(np.zeros((2, 10)), np.zeros((2, 11)))
    with pytest.raises(UserError, match="paired seeds"):
        hierarchical_difference(np.zeros((2, 10)), np.zeros((3, 10)), paired=True)
    with pytest.raises(UserError, match="shape"):
        hierarchical_difference(np.zeros(10), np.zeros((3, 10)))
