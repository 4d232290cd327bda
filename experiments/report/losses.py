"""Section 1 of the report: the loss comparison from one cache (every architecture and loss,
verdicts against CE, the paper's orderings)."""

from __future__ import annotations

import statistics

from experiments.report.page import Report
from experiments.report.stats import claim, fmt_ms, fmt_paired, mean_eer, paired, verdict

PAPER_GAIN = 13.67  # % average relative EER gain over embedding-level and conventional KD


def write(page: Report) -> None:
    """Add the losses section to ``page``."""
    s = page.settings
    page.add("## 1. Loss comparison (one cache, k = {})".format(s["topk"]), "",
             "Students read k' = {} of the cache's non-target speakers. `emb`: embedding "
             "KD (the student's embedding has the teacher's size). `kd-w3`: plain KD "
             "weighted like dkd's total (alpha + beta = 3); `dkd-b1`: dkd with beta = "
             "alpha; `dkd-b8t4`: beta 8, T 4.".format(s["topk"]), "")
    teacher = page.r.get("teacher")
    t_eer = 100 * teacher["eer"] if teacher else float("nan")
    page.add(f"Teacher: EER {t_eer:.2f} %" + (
        f" (95 % CI {100 * teacher['eer_ci95'][0]:.2f}-{100 * teacher['eer_ci95'][1]:.2f})"
        if teacher else " (not run)") + ".", "",
        "| student | loss | seeds | EER (%) | minDCF 0.05 | minDCF 0.01 | rel. EER vs ce "
        "| EER − ce (points) [95 %] | verdict vs ce |", "|---|---|---|---|---|---|---|---|---|")
    short = s["short"]
    ce_gap = []
    for arch, losses in (("xvector", s["xv_losses"]), ("resnet34", s["other_losses"]),
                         ("campp", s["other_losses"])):
        ce = page.r.seeds(f"{short[arch]}-ce-s{{seed}}")
        if ce and teacher:
            ce_gap.append(100 * statistics.fmean(r["eer"] for r in ce) - t_eer)
        for loss in losses:
            rs = page.r.seeds(f"{short[arch]}-{loss}-s{{seed}}")
            run = page.r.runs.get(f"{short[arch]}-{loss}-s0")
            if not rs:
                why = run.missing if run and run.missing else "not run"
                page.add(f"| {arch} | {loss} | 0 | {why} | | | | | |")
                continue
            rel = "" if not ce or loss == "ce" else f"{100 * (mean_eer(rs) / mean_eer(ce) - 1):+.1f} %"
            p = None if loss == "ce" else paired(rs, ce)
            page.add(f"| {arch} | {loss} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | "
                     f"{fmt_ms([r['min_dcf_0.05'] for r in rs], 1, 3)} | "
                     f"{fmt_ms([r['min_dcf_0.01'] for r in rs], 1, 3)} | {rel} | "
                     f"{'' if loss == 'ce' else fmt_paired(p)} | "
                     f"{'' if loss == 'ce' else verdict(p, loss, 'ce')} |")
    page.add("")
    ahead = len(ce_gap) == 3 and min(ce_gap) >= 3.0
    page.add("- Teacher at least 3 EER points ahead of every CE student: " + (
        "not measured (CE students missing)" if len(ce_gap) < 3 else
        f"{'yes' if ahead else '**no**'} (smallest gap {min(ce_gap):.2f} points)") + ".")
    page.summary["teacher_3_points_ahead_of_every_ce"] = ahead
    # the orderings the paper and the controls are about (x-vector)
    claims = [("dkd", "ce"), ("dkd", "kd"), ("dkd", "emb"), ("dkd", "kd-w3"),
              ("dkd", "dkd-b1"), ("dkd-b8t4", "dkd"), ("trkd", "dkd"), ("dualgroup", "dkd")]
    for a, b in claims:
        p = paired(page.r.seeds(f"xv-{a}-s{{seed}}"), page.r.seeds(f"xv-{b}-s{{seed}}"))
        page.add(claim(f"x-vector {a} − {b}", p, a, b))
    for arch in ("resnet34", "campp"):
        for a, b in (("dkd", "ce"), ("dkd", "kd"), ("trkd", "dkd")):
            p = paired(page.r.seeds(f"{short[arch]}-{a}-s{{seed}}"),
                       page.r.seeds(f"{short[arch]}-{b}-s{{seed}}"))
            page.add(claim(f"{arch} {a} − {b}", p, a, b))
    dkd = page.r.seeds("xv-dkd-s{seed}")
    gains = []
    for base in ("emb", "kd"):
        rs = page.r.seeds(f"xv-{base}-s{{seed}}")
        if rs and dkd:
            gains.append(100 * (mean_eer(rs) - mean_eer(dkd)) / mean_eer(rs))
    if len(gains) == 2:
        g = statistics.fmean(gains)
        ok = all(verdict(paired(dkd, page.r.seeds(f"xv-{b}-s{{seed}}")), "dkd", b)
                 .startswith("dkd below") for b in ("emb", "kd"))
        page.add(f"- The paper's {PAPER_GAIN} % average relative EER gain over embedding-level "
                 f"and conventional KD: we see {g:.1f} % (x-vector; emb {gains[0]:.1f} %, kd "
                 f"{gains[1]:.1f} %), {'beyond' if ok else 'not beyond'} noise on both.")
        page.summary["dkd_rel_gain_over_emb_kd_pct"] = round(g, 2)
    page.add("")
