"""Section 5 of the report: the teacher's confidence per cache (``store stats``) and the loss
ordering under a less-trained teacher."""

from __future__ import annotations

import numpy as np

from experiments.report.page import Report
from experiments.report.stats import claim, compare, fmt_diff, fmt_ms, judge, pct


def write(page: Report) -> None:
    """Add the confidence section to ``page``."""
    page.add("## 5. Teacher confidence", "",
             "`store stats` of every cache: the teacher's target probability over the "
             "cached rows (T = 1) and the non-target mass its top-k' keeps. A teacher near "
             "p_target = 1 on every row transfers little through TCKD or plain KD.", "",
             "| cache | teacher | teacher EER | rows | median p_target | rows with "
             "p_target > 0.9 | non-target mass kept by k' = 4 / 8 / 32 |",
             "|---|---|---|---|---|---|---|")
    for name, run in page.r.runs.items():
        if run.kind != "dump":
            continue
        d = page.r.get(name)
        if d is None:
            page.add(f"| {name} | {run.meta['teacher']} | | not run | | | |")
            continue
        st = d["stats"]
        t = page.r.get(run.meta["teacher"])
        hist, edges = np.array(st["target_prob_hist"]), np.array(st["bin_edges"])
        high = hist[edges[:-1] >= 0.9 - 1e-9].sum() / max(1, hist.sum())
        kept = st["kept_mass_mean"]
        kk = " / ".join(f"{kept[k - 1]:.3f}" if k <= len(kept) else "-" for k in (4, 8, 32))
        plot = page.plots / f"{name}-stats.png"
        page.add(f"| [{name}]({page.rel(plot)}) | {run.meta['teacher']} | "
                 f"{pct(t)} | {st['rows']} | {st['target_prob_median']:.3f} | {100 * high:.1f} % | "
                 f"{kk} |")
    page.add("", "Loss ordering under the less-trained teacher (`teacher-weak`, "
             f"{page.settings['weak_teacher_epochs']} epochs instead of "
             f"{page.settings['teacher_epochs']}; its cache relabels the main cache's crops) "
             "against the main teacher (x-vector, same seeds):", "",
             "| teacher | ce | kd | dkd | dkd − ce [95 %] | dkd − kd [95 %] |",
             "|---|---|---|---|---|---|")
    for tag, label in (("", "teacher"), ("-weak", "teacher-weak")):
        g = {loss: page.r.seeds(f"xv-{loss}{tag}-s{{seed}}") for loss in ("ce", "kd", "dkd")}
        pc, pk = compare(g["dkd"], g["ce"]), compare(g["dkd"], g["kd"])
        page.add(f"| {label} | {fmt_ms([r['eer'] for r in g['ce']])} | "
                 f"{fmt_ms([r['eer'] for r in g['kd']])} | {fmt_ms([r['eer'] for r in g['dkd']])} | "
                 f"{fmt_diff(pc)} ({judge(pc, 'dkd', 'ce')}) | "
                 f"{fmt_diff(pk)} ({judge(pk, 'dkd', 'kd')}) |")
    best = (page.settings["chosen"].get("dkd") or {}).get("tag")
    if best:
        d = compare(page.r.seeds(f"xv-{best}-s{{seed}}"), page.r.seeds("xv-dkd-s{seed}"))
        page.add("", claim(f"The chosen dkd setting against the paper's: {best} − dkd "
                           "(x-vector, section 1)", d, best, "dkd"))
    page.add("")
