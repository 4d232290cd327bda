"""Section 6 of the report: what a dump plus N cached students costs against N online students
on fresh views -- measured here with this teacher first, then, as a separate projection, with a
WavLM-Large-sized teacher in place of ours."""

from __future__ import annotations

import statistics

from experiments.report.page import Report
from experiments.report.stats import rounded

PROJECTED_EPOCHS = (2, 4, 20, 150)
PROJECTED_VIEWS = (2, 4, 8, 20)


def _mean_wall(rs: list[dict]) -> float | None:
    return statistics.fmean(r["wall_s"] for r in rs) if rs else None


def write(page: Report) -> None:
    """Add the costs section to ``page``."""
    s = page.settings
    e, lengths = s["views"], s["length_factors"]
    crops_per_utt = dict(s["student_epochs"])["xvector"] * e
    page.add("## 6. What it costs", "")
    page.summary.update(dump_plus_3_over_3_online_measured=None,
                        projected_dump_plus_3_over_3_online_wavlm_large=None,
                        projected_wavlm_large_forward_over_student_step=None)
    dump = page.r.get(f"dump-half-E{e}")
    walls = {f: (_mean_wall(page.r.seeds(f"xv-dkd-half-E{e}-x{f}-s{{seed}}")),
                 _mean_wall(page.r.seeds(f"xv-dkd-half-fresh-x{f}-s{{seed}}"))) for f in lengths}
    if dump is None or None in walls[lengths[0]]:
        page.add(f"Not run yet (needs `dump-half-E{e}` and section 2's cached E = {e} and "
                 "online-fresh students).", "")
        return
    resumed = [r["name"] for f in lengths for pattern in ("E{e}", "fresh")
               for r in page.r.seeds(f"xv-dkd-half-{pattern.format(e=e)}-x{f}-s{{seed}}")
               if r["resumed"]] + ([dump["name"]] if dump["resumed"] else [])
    if resumed:
        page.add(f"**{', '.join(resumed)} resumed after a kill: their times count only the "
                 "last attempt. Delete their result.json (and working folders) and rerun to "
                 "time them whole.**", "")
    page.add(f"### Measured here (this teacher, section 2's corpus, E = {e})", "",
             f"One dump ({dump['rows']} rows) took {dump['wall_s']:.0f} s; each student's "
             "time is the mean wall time of its seeds' training runs (one thread each, two "
             "students sharing the 2 cores). Teacher training is the same for both and left "
             "out; so is evaluation.", "",
             "| run length | N students | dump + N cached (s) | N online fresh (s) | ratio |",
             "|---|---|---|---|---|")
    for f in lengths:
        cached, online = walls[f]
        if cached is None or online is None:
            page.add(f"| {f}x | | not run | | |")
            continue
        for n in (1, 3, 10):
            a, b = dump["wall_s"] + n * cached, n * online
            page.add(f"| {f}x ({f * crops_per_utt} crops/utt) | {n} | {a:.0f} | {b:.0f} | "
                     f"{a / b:.2f} |")
    cached, online = walls[lengths[0]]
    measured = (dump["wall_s"] + 3 * cached) / (3 * online)
    page.summary["dump_plus_3_over_3_online_measured"] = rounded(measured)
    page.add("", f"- Headline, measured: a dump plus three cached students cost "
             f"{measured:.2f}x three online-fresh students at the present run length (1x).", "")
    projection(page, dump, cached, online, crops_per_utt)


def projection(page: Report, dump: dict, cached: float, online: float,
               crops_per_utt: int) -> None:
    """The same comparison with a WavLM-Large-sized teacher's forward in place of ours."""
    m = page.r.get("costs")
    page.add("### Projection to a WavLM-Large-sized teacher (not measured end to end)", "")
    if m is None:
        page.add("Not run yet (needs `costs`).", "")
        return
    c = m["measured"]
    utts = dump["rows"] / page.settings["views"]
    s_crop = cached / (crops_per_utt * utts)  # a cached student, per crop it trains on
    o_crop = online / (crops_per_utt * utts)  # an online-fresh student, per crop
    d_row = dump["wall_s"] / dump["rows"]  # the dump, per row
    delta = c["paper_forward_s_per_crop"] - c["teacher_forward_s_per_crop"]
    tiny = " (here a tiny WavLM: `--quick`)" if c["settings"]["paper_opt"] else ""

    def ratio(n: int, epochs: float, views: int) -> float:
        return (views * (d_row + delta) + n * epochs * s_crop) / (n * epochs * (o_crop + delta))

    page.add(f"Inputs, measured here: WavLM Large + ECAPA{tiny} ({c['paper_params_m']:.1f}M "
             f"parameters, random weights) takes {1000 * c['paper_forward_s_per_crop']:.1f} ms "
             f"per crop forward and our teacher {1000 * c['teacher_forward_s_per_crop']:.1f} ms "
             f"(side by side, batch {c['settings']['batch']}, {c['settings']['threads']} "
             f"threads), so each teacher forward costs Δ = {1000 * delta:.1f} ms more. From "
             f"section 2's runs: a cached student s = {1000 * s_crop:.2f} ms per crop, an "
             f"online-fresh one o = {1000 * o_crop:.2f} ms per crop (our teacher's forward "
             f"included), the dump d = {1000 * d_row:.2f} ms per row.", "",
             "Formula, per utterance, for N students of c crops per utterance each (c = "
             "epochs at one crop per utterance per epoch) and a cache of E views: "
             "ratio = (E (d + Δ) + N c s) / (N c (o + Δ)). The table is N = 3; it assumes "
             "the teacher forward is the only cost that grows with the teacher.", "",
             "| student epochs c | " + " | ".join(f"E = {v}" for v in PROJECTED_VIEWS) + " |",
             "|---|" + "---|" * len(PROJECTED_VIEWS))
    for epochs in PROJECTED_EPOCHS:
        page.add(f"| {epochs} | " + " | ".join(f"{ratio(3, epochs, v):.3f}"
                                             for v in PROJECTED_VIEWS) + " |")
    present = ratio(3, crops_per_utt, page.settings["views"])
    page.summary.update(
        projected_dump_plus_3_over_3_online_wavlm_large=rounded(present),
        projected_wavlm_large_forward_over_student_step=rounded(c["paper_over_student"], 2))
    page.add("", f"- Projection at the present length (c = {crops_per_utt}, E = "
             f"{page.settings['views']}): {present:.3f}x; the projected share falls as c "
             "grows (the dump is paid once) and grows with E.", "")
