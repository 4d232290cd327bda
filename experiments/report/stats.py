"""The noise and verdicts of the report: one rule, :mod:`speaker.evaluation.compare`'s.

Each model's result keeps its EER on the same speaker-bootstrap replicates
(``experiments.evaluation.N_BOOT``; replicate b resamples the same test speakers for every
model). A system is a group of runs, one per training seed; the EER difference of two systems
(mean over seeds) gets a hierarchical bootstrap over training seeds and test speakers
(``N_RESAMPLES`` resamples, seeds paired where both systems have the same ones). Verdicts:

- "different": the 95 % interval excludes 0 (the page says which is lower);
- "equivalent": the 90 % interval lies inside +-``MARGIN`` EER points (two one-sided tests at
  5 %, TOST);
- "not shown equivalent": neither.

Missing runs are reported as "not run".

Example::

    >>> fmt_ms([0.10, 0.12])
    '11.00 ± 1.41'
"""

from __future__ import annotations

import statistics

import numpy as np

from speaker.evaluation.compare import Difference, hierarchical_difference, verdict

MARGIN = 0.5  # EER points: the equivalence margin of every verdict (the header says why)
N_RESAMPLES = 1000


def mean_eer(rs: list[dict]) -> float:
    """Mean EER over seeds."""
    return statistics.fmean(r["eer"] for r in rs)


def pct(r: dict | None) -> str:
    """A run's EER in %, or "not run"."""
    return f"{100 * r['eer']:.2f}" if r else "not run"


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample std (NaN where undefined)."""
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


def fmt_ms(xs: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of ``scale * xs`` (the std only over two or more seeds)."""
    m, s = mean_std([scale * x for x in xs])
    if not xs:
        return "not run"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if len(xs) > 1 else "")


def compare(a: list[dict], b: list[dict]) -> Difference | None:
    """EER difference mean(A) - mean(B) in points with its hierarchical bootstrap (None
    where a side has no run or the two were scored on other replicates)."""
    if not a or not b:
        return None
    boot_a, boot_b = ([r["eer_boot"] for r in rs] for rs in (a, b))
    if len({len(x) for x in boot_a + boot_b}) != 1 or not boot_a[0]:
        return None
    seeds = [[r.get("meta", {}).get("seed", i) for i, r in enumerate(rs)] for rs in (a, b)]
    d = hierarchical_difference(boot_a, boot_b, [r["eer"] for r in a], [r["eer"] for r in b],
                                n_resamples=N_RESAMPLES, seed=0, paired=seeds[0] == seeds[1])
    return d.scaled(100.0)


def judge(d: Difference | None, a: str, b: str, margin: float = MARGIN) -> str:
    """The verdict on ``A - B`` (see the module doc), naming the lower one if different."""
    if d is None:
        return "not run"
    v = verdict(d, margin)
    if v == "different":
        return f"different ({a if d.diff < 0 else b} lower)"
    return v


def is_lower(d: Difference | None) -> bool:
    """A is shown lower than B (the interval excludes 0 below it)."""
    return d is not None and d.hi < 0


def fmt_diff(d: Difference | None, unit: str = "") -> str:
    """``+d [lo, hi]`` (the 95 % interval) of a :func:`compare` difference."""
    if d is None:
        return "not run"
    return f"{d.diff:+.2f}{unit} [{d.lo:+.2f}, {d.hi:+.2f}]"


def fmt_tost(d: Difference | None) -> str:
    """``[lo, hi]``: the 90 % interval the equivalence and not-worse tests read ("" without a
    difference)."""
    return "" if d is None else f"[{d.lo90:+.2f}, {d.hi90:+.2f}]"


def claim(what: str, d: Difference | None, a: str, b: str) -> str:
    """One verdict line: '- WHAT: +d points [lo, hi]: verdict.'"""
    if d is None:
        return f"- {what}: not run."
    return f"- {what}: {fmt_diff(d, ' points')}: {judge(d, a, b)}."


def rounded(x: float | None, digits: int = 3) -> float | None:
    """``x`` rounded for the JSON summary (None stays None, NaN becomes None)."""
    return None if x is None or np.isnan(x) else round(float(x), digits)
