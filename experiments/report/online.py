"""Section 2 of the report: cached against online KD (k' of the cache against the live
teacher's full logits), with wall time per epoch."""

from __future__ import annotations

from experiments.report.page import Report
from experiments.report.stats import fmt_paired, mean_std, paired, verdict

RESUMED = " (resumed after a kill: its last attempt's epochs)"


def write(page: Report) -> None:
    """Add the online section to ``page``."""
    s = page.settings
    online = page.r.get("xv-dkd-online-s0")
    main = page.r.get("dump-main")
    kall = f"C-1 = {main['k']}" if main else "C-1"
    page.add("## 2. Cached vs online KD (x-vector dkd, seed 0, same views)", "",
             "Online: the live teacher's full logits on the same crops. Wall time "
             "per epoch includes start-up and one-thread training; two runs shared the "
             "cores at a time.", "",
             "| teacher signal | EER (%) | EER − online (points) [95 %] | verdict | "
             "wall s / epoch |", "|---|---|---|---|---|")
    rows = [("online (full logits)", "xv-dkd-online-s0")]
    rows += [(f"cache k = {k}", f"xv-dkd-k{k}-s0" if k != s["topk"] else "xv-dkd-s0")
             for k in s["topk_grid"]]
    rows += [(f"cache k = {kall}", "xv-dkd-kall-s0")]
    for label, name in rows:
        r = page.r.get(name)
        if r is None:
            page.add(f"| {label} | not run | | | |")
            continue
        p = None if name.endswith("online-s0") or online is None else paired([r], [online])
        page.add(f"| {label} | {100 * r['eer']:.2f} | "
                 f"{'' if name.endswith('online-s0') else fmt_paired(p)} | "
                 f"{'' if name.endswith('online-s0') else verdict(p, 'cache', 'online')} | "
                 f"{r['wall_s_per_epoch']:.1f}{RESUMED if r['resumed'] else ''} |")
    sd = mean_std([100 * r["eer"] for r in page.r.seeds("xv-dkd-s{seed}")])[1]
    page.add("", f"One seed per row: the seed std of the x-vector dkd EER (section 1) is "
             f"{sd:.2f} points, for scale; verdicts here rest on the paired bootstrap.")
    k32 = page.r.get("xv-dkd-s0")
    if k32 and online:
        p = paired([k32], [online])
        ratio = online["wall_s_per_epoch"] / k32["wall_s_per_epoch"]
        page.summary.update(cached_k32_minus_online_eer=round(p["diff"], 3),
                            cached_k32_minus_online_eer_ci95=[round(p["lo"], 3),
                                                              round(p["hi"], 3)],
                            online_epoch_over_cached_epoch=round(ratio, 3))
        promise = verdict(p, "cache", "online") == "within noise"
        page.add("", f"- The cache's promise (k = {s['topk']} within noise of online, at a "
                 "fraction "
                 f"of the time): EER gap {fmt_paired(p)} points, "
                 f"{'within noise' if promise else '**not** within noise'}; an online epoch "
                 f"takes {ratio:.2f}x a cached one.")
    page.add("")
