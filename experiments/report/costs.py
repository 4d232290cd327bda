"""Section 6 of the report: a dump plus N cached students against N online students, measured
and projected to the paper's teacher."""

from __future__ import annotations

from experiments.report.page import Report


def write(page: Report) -> None:
    """Add the costs section to ``page``."""
    s = page.settings
    page.add("## 6. What it costs", "")
    m, dump = page.r.get("costs"), page.r.get(f"dump-E{s['views']}")
    cached, online = page.r.get("xv-dkd-s0"), page.r.get("xv-dkd-online-s0")
    if not (m and dump and cached and online):
        page.add("Not run yet (needs `costs`, `dump-E{}`, `xv-dkd-s0`, "
                 "`xv-dkd-online-s0`).".format(s["views"]), "")
        return
    c = m["measured"]
    rows, epochs = dump["rows"], cached["meta"]["epochs"]
    resumed = [r["name"] for r in (dump, cached, online) if r["resumed"]]
    if resumed:
        page.add(f"**{', '.join(resumed)} resumed after a kill: the times below count only "
                 "its last attempt. Delete its result.json (and working folder) and rerun "
                 "to time it whole.**", "")
    page.add(f"Measured here: one dump (k = {s['topk']}, E = {s['views']}, {rows} rows) "
             f"{dump['wall_s']:.0f} s; one cached x-vector dkd student ({epochs} epochs) "
             f"{cached['wall_s']:.0f} s; one online one {online['wall_s']:.0f} s. Teacher "
             "training is the same for both and left out.", "",
             "| N students | dump + N cached (s) | N online (s) | ratio |", "|---|---|---|---|")
    for n in (1, 3, 10):
        a, b = dump["wall_s"] + n * cached["wall_s"], n * online["wall_s"]
        page.add(f"| {n} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    # paper-sized teacher: replace our teacher's forward by the measured paper forward
    extra = c["paper_forward_s_per_crop"] - c["teacher_forward_s_per_crop"]
    p_dump = dump["wall_s"] + rows * extra
    p_online = online["wall_s"] + epochs * rows * extra
    tiny = " (here a tiny WavLM: `--quick`)" if c["settings"]["paper_opt"] else ""
    page.add("", f"Projected to the paper's teacher: WavLM Large + ECAPA{tiny} "
             f"({c['paper_params_m']:.1f}M parameters, random weights) takes "
             f"{1000 * c['paper_forward_s_per_crop']:.1f} ms per {s['crop_seconds']:g}-s "
             f"crop forward, our teacher {1000 * c['teacher_forward_s_per_crop']:.1f} ms and a "
             f"student training step {1000 * c['student_step_s_per_crop']:.1f} ms per crop "
             f"(measured side by side, batch {c['settings']['batch']}, "
             f"{c['settings']['threads']} threads): paper teacher / student step = "
             f"{c['paper_over_student']:.1f}. Dump and online student get "
             "(paper - ours) x the crops their teacher sees added.", "",
             "| N students | dump + N cached (s) | N online (s) | ratio |", "|---|---|---|---|")
    for n in (1, 3, 10):
        a, b = p_dump + n * cached["wall_s"], n * p_online
        page.add(f"| {n} | {a:.0f} | {b:.0f} | {a / b:.2f} |")
    ratio = (p_dump + 3 * cached["wall_s"]) / p_online
    page.summary.update(
        dump_plus_3_over_one_online_paper_ratio=round(ratio, 3),
        dump_plus_3_over_one_online_ratio=round(
            (dump["wall_s"] + 3 * cached["wall_s"]) / online["wall_s"], 3),
        paper_teacher_forward_over_student_step=round(c["paper_over_student"], 2))
    page.add("", f"- Headline: a dump plus three cached students cost {ratio:.2f}x one "
             f"online-KD student at the paper's teacher/student cost ratio: the claim "
             f"(< 0.5) {'holds' if ratio < 0.5 else '**does not hold**'}.", "")
