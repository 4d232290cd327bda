"""Section 3 of the report: the number of training speakers (the paper's first claim). The main
table keeps each speaker's utterances (more speakers = more data, as the paper states it); the
second keeps the total number of utterances fixed."""

from __future__ import annotations

import numpy as np

from experiments.report.page import Report, plot
from experiments.report.stats import (
    claim,
    compare,
    fmt_diff,
    fmt_ms,
    is_lower,
    judge,
    mean_std,
    pct,
    rounded,
)


def _names(share: float, fixed_total: bool) -> tuple[str | None, str, str]:
    """(subset run, teacher run, student pattern with {loss} and {seed}) of one share."""
    p = round(100 * share)
    if fixed_total:
        return f"subset-spk{p}", f"teacher-spk{p}", f"xv-{{loss}}-spk{p}-s{{seed}}"
    if share >= 1.0:  # all the speakers with all their utterances: section 1's runs
        return None, "teacher", "xv-{loss}-s{seed}"
    return f"subset-spk{p}-all", f"teacher-spk{p}-all", f"xv-{{loss}}-spk{p}-all-s{{seed}}"


def _table(page: Report, fixed_total: bool) -> dict:
    """One design's table, its claim lines and plot; -> the summary's numbers."""
    s = page.settings
    main = page.r.get("dump-main")
    page.add("| speakers (share) | utterances | teacher EER | ce EER | dkd EER | "
             "dkd − ce [95 %] | verdict |", "|---|---|---|---|---|---|---|")
    pts: dict[str, list] = {"ce": [], "dkd": []}
    for share in s["spk_shares"]:
        subset, teacher, pattern = _names(share, fixed_total)
        sub = page.r.get(subset) if subset else main and {
            "speakers": main["classes"], "utterances": main["rows"] // s["views"]}
        ce, dkd = (page.r.seeds(pattern.format(loss=loss, seed="{seed}"))
                   for loss in ("ce", "dkd"))
        d = compare(dkd, ce)
        spk = sub["speakers"] if sub else None
        page.add(f"| {spk or '?'} ({100 * share:.0f} %) | {sub['utterances'] if sub else '?'} | "
                 f"{pct(page.r.get(teacher))} | {fmt_ms([r['eer'] for r in ce])} | "
                 f"{fmt_ms([r['eer'] for r in dkd])} | {fmt_diff(d)} | "
                 f"{judge(d, 'dkd', 'ce') if ce and dkd else ''} |")
        for loss, rs in (("ce", ce), ("dkd", dkd)):
            if rs and spk:
                pts[loss].append((spk, *mean_std([100 * r["eer"] for r in rs])))
    _, _, lo = _names(min(s["spk_shares"]), fixed_total)
    _, _, hi = _names(max(s["spk_shares"]), fixed_total)
    page.add("")
    out = {}
    for loss in ("ce", "dkd"):
        d = compare(page.r.seeds(hi.format(loss=loss, seed="{seed}")),
                    page.r.seeds(lo.format(loss=loss, seed="{seed}")))
        page.add(claim(f"{loss}: most speakers − fewest speakers", d, "most speakers",
                       "fewest"))
        out[loss] = d
    name = "speakers-fixed-total.png" if fixed_total else "speakers.png"
    if any(pts.values()):
        path = page.plots / name

        def draw(ax) -> None:
            for loss, xs in pts.items():
                if xs:
                    x, m, sd = zip(*xs, strict=True)
                    ax.errorbar(x, m, yerr=[0 if np.isnan(v) else v for v in sd],
                                marker="o", capsize=3, label=loss)
            ax.set_xlabel("training speakers" + (" (same number of utterances)"
                                                 if fixed_total else " (all their utterances)"))
            ax.set_ylabel("EER (%)")
            ax.legend()

        plot(path, draw)
        page.add("", f"![EER against the number of training speakers]({page.rel(path)})")
    return out


def _holds(d) -> str:
    if d is None:
        return "not measured (runs missing)"
    if is_lower(d):
        return "**holds**: the dkd student with the most speakers is shown lower"
    if judge(d, "a", "b").startswith("different"):
        return "**does not hold**: the dkd student with the most speakers is shown higher"
    return "**not shown**: the difference is not beyond the noise"


def write(page: Report) -> None:
    """Add the speakers section to ``page``."""
    s = page.settings
    page.add("## 3. Training speakers", "",
             "The paper's claim: more training (non-target) speakers make a better student. "
             "As the paper states it, more speakers means more data: each subset keeps all "
             "the utterances of its speakers, a teacher is trained on each subset (same "
             "epochs) and its students train for the same epochs as section 1's (the whole "
             "set is section 1's teacher and students).", "")
    main = _table(page, fixed_total=False)
    page.add("", f"- The paper's claim on this corpus: {_holds(main['dkd'])}.", "")
    page.summary.update(
        more_speakers_minus_fewest_dkd_eer=rounded(main["dkd"].diff) if main["dkd"] else None,
        more_speakers_claim=judge(main["dkd"], "more speakers", "fewer"))
    page.add("### Second design: the same number of utterances", "",
             f"Every subset keeps {100 * s['spk_utterances']:.0f} % of all utterances (fewer "
             "per speaker as speakers are added), so the number of speakers is varied alone; "
             "student epochs scaled so every student takes as many steps as in section 1. "
             "This is not the paper's setting.", "")
    fixed = _table(page, fixed_total=True)
    page.add("", f"- More speakers at a fixed number of utterances: {_holds(fixed['dkd'])}.", "")
