"""Section 4 of the report: views per utterance E, what a cache of E views costs (rows, bytes,
dump time) and what its students reach (section 2's cached runs)."""

from __future__ import annotations

from experiments.report.page import Report, plot
from experiments.report.stats import fmt_ms


def write(page: Report) -> None:
    """Add the views section to ``page``."""
    s = page.settings
    lengths = s["length_factors"]
    page.add(f"## 4. Views per utterance (section 2's caches, k = {s['topk']})", "",
             "Each cache holds E views of each utterance of section 2's corpus; its students "
             "(x-vector dkd, mean ± std over seeds) run the same number of crops whatever E "
             "(length / E epochs).", "",
             "| E | rows | soft-label bytes | bytes stored (all arrays) | dump s | "
             + " | ".join(f"EER at {f}x (%)" for f in lengths) + " |",
             "|---|---|---|---|---|" + "---|" * len(lengths))
    pts = []
    for e in s["views_grid"]:
        d = page.r.get(f"dump-half-E{e}")
        eers = [page.r.seeds(f"xv-dkd-half-E{e}-x{f}-s{{seed}}") for f in lengths]
        dumped = (f"{d['rows']} | {d['soft_label_bytes']:,} | {d['stored_bytes']:,} | "
                  f"{d['wall_s']:.0f}") if d else "not run | | |"
        page.add(f"| {e} | {dumped} | "
                 + " | ".join(fmt_ms([r["eer"] for r in rs]) for rs in eers) + " |")
        if d and eers[-1]:
            pts.append((e, 100 * sum(r["eer"] for r in eers[-1]) / len(eers[-1]),
                        d["soft_label_bytes"] / 1e6))
    if pts:
        path = page.plots / "views.png"

        def draw(ax) -> None:
            e, eer, mb = zip(*pts, strict=True)
            ax.plot(e, eer, marker="o", label="EER (%)")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("views per utterance E")
            ax.set_ylabel(f"EER (%) at {lengths[-1]}x")
            ax2 = ax.twinx()
            ax2.plot(e, mb, marker="s", color="gray", label="soft labels (MB)")
            ax2.set_ylabel("soft-label MB")

        plot(path, draw)
        page.add("", f"![EER and cache size against E]({page.rel(path)})")
    page.add("")
