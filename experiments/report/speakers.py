"""Section 3 of the report: shares of the training speakers at the same number of utterances
(the paper's first claim)."""

from __future__ import annotations

import numpy as np

from experiments.report.page import Report, plot
from experiments.report.stats import claim, fmt_ms, fmt_paired, mean_std, paired, pct, verdict


def write(page: Report) -> None:
    """Add the speakers section to ``page``."""
    s = page.settings
    page.add("## 3. Non-target speakers (same number of training utterances)", "",
             f"Teacher and students trained on a share of the speakers, each keeping "
             f"{100 * s['spk_utterances']:.0f} % of all utterances (the paper's first "
             "claim: more non-target speakers help). Student epochs scaled so every "
             "student takes the same number of steps as in section 1.", "",
             "| speakers (share) | utterances | teacher EER | ce EER | dkd EER | "
             "dkd − ce [95 %] | verdict |", "|---|---|---|---|---|---|---|")
    pts = {"ce": [], "dkd": []}
    for share in s["spk_shares"]:
        tag = f"spk{round(100 * share)}"
        sub, t = page.r.get(f"subset-{tag}"), page.r.get(f"teacher-{tag}")
        ce, dkd = (page.r.seeds(f"xv-{loss}-{tag}-s{{seed}}") for loss in ("ce", "dkd"))
        p = paired(dkd, ce)
        spk = sub["speakers"] if sub else None
        page.add(f"| {spk if spk else '?'} ({100 * share:.0f} %) | "
                 f"{sub['utterances'] if sub else '?'} | "
                 f"{pct(t)} | {fmt_ms([r['eer'] for r in ce])} | {fmt_ms([r['eer'] for r in dkd])} | "
                 f"{fmt_paired(p)} | {verdict(p, 'dkd', 'ce')} |")
        for loss, rs in (("ce", ce), ("dkd", dkd)):
            if rs and spk:
                pts[loss].append((spk, *mean_std([100 * r["eer"] for r in rs])))
    lo_tag, hi_tag = (f"spk{round(100 * x)}" for x in (min(s["spk_shares"]),
                                                       max(s["spk_shares"])))
    page.add("")
    for loss in ("ce", "dkd"):
        p = paired(page.r.seeds(f"xv-{loss}-{hi_tag}-s{{seed}}"),
                   page.r.seeds(f"xv-{loss}-{lo_tag}-s{{seed}}"))
        page.add(claim(f"{loss}: all speakers − fewest speakers", p, "more speakers",
                       "fewer"))
    if any(pts.values()):
        path = page.plots / "speakers.png"

        def draw(ax) -> None:
            for loss, xs in pts.items():
                if xs:
                    x, m, sd = zip(*xs, strict=True)
                    ax.errorbar(x, m, yerr=[0 if np.isnan(v) else v for v in sd],
                                marker="o", capsize=3, label=loss)
            ax.set_xlabel("training speakers (same number of utterances)")
            ax.set_ylabel("EER (%)")
            ax.legend()

        plot(path, draw)
        page.add("", f"![EER against the number of training speakers]({page.rel(path)})")
    page.add("")
