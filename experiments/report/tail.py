"""Section 7 of the report: x-vector students from a top-32 cache, from top-32 + a sampled
tail and from online full logits, at the DKD setting chosen on dev (runs planned by
``experiments.results.tail``), compared the way every section is (:mod:`experiments.report.stats`:
hierarchical bootstrap over seeds and test speakers, TOST against its margin)."""

from __future__ import annotations

from experiments.recipes import CHOSEN
from experiments.report.page import Report
from experiments.report.stats import MARGIN, compare, fmt_diff, fmt_ms, fmt_tost, judge, rounded
from experiments.results.tail import LOSS, SEEDS, TAIL_DRAWS, TOPK

SIGNALS = ((f"top-{TOPK} (exact tail bucket)", f"xv-{LOSS}-s{{seed}}"),
           (f"top-{TOPK} + {TAIL_DRAWS} sampled tail draws", f"xv-{LOSS}-tail-s{{seed}}"),
           ("online (full logits)", f"xv-{LOSS}-online-s{{seed}}"))


def write(page: Report) -> None:
    """Add the sampled-tail section to ``page``."""
    dkd = CHOSEN["dkd"]
    page.add(f"## 7. A sampled tail (x-vector, dkd beta {dkd.flag('--beta')}, "
             f"T {dkd.flag('--temperature')}, k = {TOPK}, {SEEDS} seeds)", "",
             f"The same teacher and views three ways: a top-{TOPK} cache (the tail one exact "
             f"bucket), the same rows with {TAIL_DRAWS} classes drawn from the tail per "
             "temperature (`--tail sampled`: an unbiased estimate of the full-logit loss, "
             "[sampled_tail.md](sampled_tail.md)), and the live teacher's full "
             "logits. Differences and verdicts as in every section (header), with the "
             f"±{MARGIN}-point margin.", "",
             "| teacher signal | seeds | EER (%) | EER − online (points) [95 %] | 90 % interval "
             "| verdict |", "|---|---|---|---|---|---|")
    exact, sampled, online = (page.r.seeds(pattern) for _, pattern in SIGNALS)
    for (label, _), rs, reference in zip(SIGNALS, (exact, sampled, online), (False, False, True),
                                         strict=True):
        if not rs:
            page.add(f"| {label} | 0 | not run | | | |")
        elif reference:
            page.add(f"| {label} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | | | |")
        else:
            d = compare(rs, online)
            page.add(f"| {label} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | "
                     f"{fmt_diff(d)} | {fmt_tost(d)} | {judge(d, label, 'online')} |")
    d = compare(sampled, exact)
    page.add("", f"- sampled tail − exact bucket: {fmt_diff(d, ' points')}: "
             f"{judge(d, 'sampled tail', 'exact bucket')}.", "")
    if d is not None:
        page.summary.update(tail_sampled_minus_exact_eer=rounded(d.diff),
                            tail_sampled_minus_exact_eer_ci95=[rounded(d.lo), rounded(d.hi)])
    for name, rs in (("exact", exact), ("sampled", sampled)):
        d = compare(rs, online)
        if d is not None:
            page.summary[f"tail_{name}_minus_online_eer"] = rounded(d.diff)
