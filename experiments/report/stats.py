"""The noise and verdicts of the report.

Each model's result keeps the EERs of the same speaker-bootstrap replicates
(``experiments.evaluation.N_BOOT``; replicate b resamples the same test speakers for every
model), so the EER difference of two groups of runs (seeds paired by index) has a paired
bootstrap interval: the 2.5/97.5 % quantiles over replicates of (mean over A's seeds - mean
over B's seeds). An ordering is claimed only where that interval excludes 0 or the
difference of the means exceeds the seed spread (the larger of the two groups' std);
otherwise the report says "within noise". Missing runs are reported as "not run".

Example::

    >>> fmt_ms([0.10, 0.12])
    '11.00 ± 1.41'
"""

from __future__ import annotations

import statistics

import numpy as np


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


def paired(a: list[dict], b: list[dict]) -> dict[str, float] | None:
    """EER difference mean(A) - mean(B) (points), its paired bootstrap 95 % interval and the
    seed spread; seeds paired by index (only seeds both have)."""
    n = min(len(a), len(b))
    if n == 0:
        return None
    a, b = a[:n], b[:n]
    boot = min(len(r["eer_boot"]) for r in a + b)
    ra = np.mean([r["eer_boot"][:boot] for r in a], axis=0)
    rb = np.mean([r["eer_boot"][:boot] for r in b], axis=0)
    diff = 100 * (statistics.fmean(r["eer"] for r in a) - statistics.fmean(r["eer"] for r in b))
    lo, hi = (100 * np.quantile(ra - rb, [0.025, 0.975])) if boot else (np.nan, np.nan)
    spread = max(mean_std([100 * r["eer"] for r in a])[1],
                 mean_std([100 * r["eer"] for r in b])[1])
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "spread": spread, "seeds": n}


def verdict(p: dict[str, float] | None, a: str, b: str) -> str:
    """'A below B', 'A above B' or 'within noise' (see the module doc)."""
    if p is None:
        return "not run"
    beyond_boot = p["lo"] > 0 or p["hi"] < 0
    beyond_seeds = not np.isnan(p["spread"]) and abs(p["diff"]) > p["spread"]
    if not (beyond_boot or beyond_seeds):
        return "within noise"
    why = " and ".join(w for w, ok in (("bootstrap", beyond_boot), ("seed spread", beyond_seeds))
                       if ok)
    return f"{a} {'below' if p['diff'] < 0 else 'above'} {b} (beyond the {why})"


def fmt_paired(p: dict[str, float] | None, unit: str = "") -> str:
    """``+d [lo, hi]`` of a :func:`paired` difference."""
    if p is None:
        return "not run"
    return f"{p['diff']:+.2f}{unit} [{p['lo']:+.2f}, {p['hi']:+.2f}]"


def claim(what: str, p: dict[str, float] | None, a: str, b: str) -> str:
    """One verdict line: '- WHAT: +d points [lo, hi]: verdict.'"""
    if p is None:
        return f"- {what}: not run."
    return f"- {what}: {fmt_paired(p, ' points')}: {verdict(p, a, b)}."
