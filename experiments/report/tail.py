"""Section 7 of the report: x-vector students from a top-32 cache, from top-32 + a sampled
tail and from online full logits (dkd beta 8, T 4; runs planned by
``experiments.results.tail``), compared with ``speaker.evaluation.compare``: hierarchical
bootstrap over seeds and test speakers, TOST against :data:`MARGIN`."""

from __future__ import annotations

import numpy as np

from experiments.report.page import Report
from experiments.report.stats import fmt_ms
from experiments.results.tail import LOSS, SEEDS, TAIL_DRAWS, TOPK
from speaker.evaluation.compare import hierarchical_difference, verdict

#: Equivalence margin in EER points (the results section states none elsewhere: 0.5 points).
MARGIN = 0.5

SIGNALS = (("top-32 (exact tail bucket)", f"xv-{LOSS}-s{{seed}}"),
           (f"top-32 + {TAIL_DRAWS} sampled tail draws", f"xv-{LOSS}-tail-s{{seed}}"),
           ("online (full logits)", f"xv-{LOSS}-online-s{{seed}}"))


def _difference(a: list[dict], b: list[dict]):
    """EER difference mean(a) - mean(b) in points (None without two sides to compare)."""
    if not a or not b:
        return None
    n = min(len(r["eer_boot"]) for r in a + b)
    d = hierarchical_difference([r["eer_boot"][:n] for r in a], [r["eer_boot"][:n] for r in b],
                                [r["eer"] for r in a], [r["eer"] for r in b])
    return d.scaled(100.0)


def write(page: Report) -> None:
    """Add the sampled-tail section to ``page``."""
    page.add(f"## 7. A sampled tail (x-vector, dkd beta 8, T 4, k = {TOPK}, {SEEDS} seeds)", "",
             f"The same teacher and views three ways: a top-{TOPK} cache (the tail one exact "
             f"bucket), the same rows with {TAIL_DRAWS} classes drawn from the tail per "
             "temperature (`--tail sampled`: an unbiased estimate of the full-logit loss, "
             "[sampled_tail.md](sampled_tail.md)), and the live teacher's full logits. "
             "Differences: hierarchical bootstrap over seeds and test speakers; "
             f"\"equivalent\": TOST against ±{MARGIN} EER points.", "",
             "| teacher signal | seeds | EER (%) | EER − online (points) [95 %] | verdict |",
             "|---|---|---|---|---|")
    online = page.r.seeds(SIGNALS[-1][1])
    for label, pattern in SIGNALS:
        rs = page.r.seeds(pattern)
        if not rs:
            page.add(f"| {label} | 0 | not run | | |")
            continue
        d = None if pattern == SIGNALS[-1][1] else _difference(rs, online)
        page.add(f"| {label} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | "
                 + ("" if d is None else f"{d.diff:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]") + " | "
                 + ("" if d is None else verdict(d, MARGIN)) + " |")
    exact, sampled = page.r.seeds(SIGNALS[0][1]), page.r.seeds(SIGNALS[1][1])
    d = _difference(sampled, exact)
    if d is not None:
        page.add("", f"- sampled tail − exact bucket: {d.diff:+.2f} points "
                 f"[{d.lo:+.2f}, {d.hi:+.2f}]: {verdict(d, MARGIN)}.")
        page.summary.update(tail_sampled_minus_exact_eer=round(d.diff, 3),
                            tail_sampled_minus_exact_eer_ci95=[round(d.lo, 3), round(d.hi, 3)])
    for name, rs in (("exact", exact), ("sampled", sampled)):
        d = _difference(rs, online)
        if d is not None and np.isfinite(d.diff):
            page.summary[f"tail_{name}_minus_online_eer"] = round(d.diff, 3)
    page.add("")
