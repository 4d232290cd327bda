"""Section 4 of the report: views per utterance E at the same number of training crops (EER,
cache bytes, dump time)."""

from __future__ import annotations

from experiments.report.page import Report, plot
from experiments.report.stats import fmt_paired, paired, pct


def write(page: Report) -> None:
    """Add the views section to ``page``."""
    s = page.settings
    page.add("## 4. Views per utterance (x-vector dkd, k = {}, seed 0)".format(s["topk"]), "",
             "Same number of training crops for every E (epochs = "
             f"{dict(s['student_epochs'])['xvector']} x {s['views']} / E).", "",
             "| E | rows | soft-label bytes | bytes stored (all arrays) | dump s | EER (%) | "
             "EER − E=1 [95 %] |", "|---|---|---|---|---|---|---|")
    e1 = page.r.get(f"xv-dkd-E{min(s['views_grid'])}-s0")
    pts = []
    for e in s["views_grid"]:
        d, st = page.r.get(f"dump-E{e}"), page.r.get(f"xv-dkd-E{e}-s0")
        p = paired([st], [e1]) if st and e1 and st is not e1 else None
        dumped = (f"{d['rows']} | {d['soft_label_bytes']:,} | {d['stored_bytes']:,} | "
                  f"{d['wall_s']:.0f}") if d else "not run | | |"
        page.add(f"| {e} | {dumped} | {pct(st)} | {fmt_paired(p) if p else ''} |")
        if st and d:
            pts.append((e, 100 * st["eer"], d["soft_label_bytes"] / 1e6, d["wall_s"]))
    if pts:
        path = page.plots / "views.png"

        def draw(ax) -> None:
            e, eer, mb, _ = zip(*pts, strict=True)
            ax.plot(e, eer, marker="o", label="EER (%)")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("views per utterance E")
            ax.set_ylabel("EER (%)")
            ax2 = ax.twinx()
            ax2.plot(e, mb, marker="s", color="gray", label="soft labels (MB)")
            ax2.set_ylabel("soft-label MB")

        plot(path, draw)
        page.add("", f"![EER and cache size against E]({page.rel(path)})")
    page.add("")
