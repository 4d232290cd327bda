"""Section 1 of the report: losses and controls on every student from one cache (verdicts
against CE; whether decoupling helps beyond KD's weight and temperature; the paper's relative
gain per student; TRKD and dual-group with the papers' and the chosen settings)."""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.paths import DOCS
from experiments.report.page import Report
from experiments.report.stats import compare, fmt_diff, fmt_ms, is_lower, judge, mean_eer, rounded

PAPER_GAIN = 13.67  # % average relative EER gain over embedding-level and conventional KD


def chosen_tag(settings: dict, role: str) -> str | None:
    """The run tag of the chosen ``role`` setting (None: no choice yet)."""
    c = settings["chosen"].get(role)
    return c["tag"] if c else None


def describe(settings: dict) -> str:
    """What each loss tag is, for the section's preamble."""
    parts = ["`ce`: AAM cross-entropy alone", "`emb`: embedding KD (the student's embedding "
             "has the teacher's size)", "`kd`: plain KD, T 1", "`kd-w3`: plain KD weighted "
             "like dkd's total (alpha + beta = 3)", "`dkd`: the paper's (alpha 1, beta 2, T 1)"]
    for role in ("dkd", "trkd", "dualgroup"):
        c = settings["chosen"].get(role)
        if c:
            parts.append(f"`{c['tag']}`: {role} `{' '.join(c['flags'][2:])}` ({c['source']})")
    if settings.get("kd_control"):
        parts.append(f"`{settings['kd_control']}`: plain KD at the chosen dkd's temperature "
                     "and total weight")
    parts += ["`trkd`, `dualgroup`: the papers' defaults (TRKD lambda_M 1, lambda_F 8)"]
    return "; ".join(parts) + "."


def write(page: Report) -> None:
    """Add the losses section to ``page``."""
    s = page.settings
    short = s["short"]
    page.add(f"## 1. Losses and controls on every student (one cache, k' = {s['topk']})", "",
             describe(s), "")
    teacher = page.r.get("teacher")
    t_eer = 100 * teacher["eer"] if teacher else float("nan")
    page.add(f"Teacher: EER {t_eer:.2f} %" + (
        f" (95 % CI {100 * teacher['eer_ci95'][0]:.2f}-{100 * teacher['eer_ci95'][1]:.2f})"
        if teacher else " (not run)") + ".", "",
        "| student | loss | seeds | EER (%) | minDCF 0.05 | rel. EER vs ce "
        "| EER − ce (points) [95 %] | verdict vs ce |", "|---|---|---|---|---|---|---|---|")

    def runs(arch: str, loss: str | None) -> list[dict]:
        return page.r.seeds(f"{short[arch]}-{loss}-s{{seed}}") if loss else []

    ce_gap = []
    for arch, losses in s["student_losses"].items():
        ce = runs(arch, "ce")
        if ce and teacher:
            ce_gap.append(100 * mean_eer(ce) - t_eer)
        for loss in losses:
            rs = runs(arch, loss)
            run = page.r.runs.get(f"{short[arch]}-{loss}-s0")
            if not rs:
                why = run.missing if run and run.missing else "not run"
                page.add(f"| {arch} | {loss} | 0 | {why} | | | | |")
                continue
            rel = "" if not ce or loss == "ce" else \
                f"{100 * (mean_eer(rs) / mean_eer(ce) - 1):+.1f} %"
            d = None if loss == "ce" else compare(rs, ce)
            page.add(f"| {arch} | {loss} | {len(rs)} | {fmt_ms([r['eer'] for r in rs])} | "
                     f"{fmt_ms([r['min_dcf_0.05'] for r in rs], 1, 3)} | {rel} | "
                     f"{'' if loss == 'ce' else fmt_diff(d)} | "
                     f"{'' if loss == 'ce' else judge(d, loss, 'ce')} |")
    page.add("")
    ahead = None if len(ce_gap) < 3 else min(ce_gap) >= 3.0
    page.add("- Teacher at least 3 EER points ahead of every CE student: " + (
        "not measured (CE students missing)" if len(ce_gap) < 3 else
        f"{'yes' if ahead else '**no**'} (smallest gap {min(ce_gap):.2f} points)") + ".", "")
    page.summary["teacher_3_points_ahead_of_every_ce"] = ahead
    student_costs(page)
    decoupling(page, runs)
    paper_gain(page, runs)
    other_losses(page, runs)


def decoupling(page: Report, runs) -> None:
    """Per student: DKD against plain KD at the same total weight and temperature."""
    s = page.settings
    best, control = chosen_tag(s, "dkd"), s.get("kd_control")
    page.add("### Does decoupling help beyond weight and temperature?", "",
             "DKD against plain KD with the same total weight at the same temperature: the "
             "paper's dkd against `kd-w3`, and the chosen dkd setting against its KD control "
             f"(`{best}` − `{control}`). \"yes\" needs DKD lower in both pairs; \"no\" means "
             "a KD control lower in one, or both pairs equivalent.", "",
             f"| student | dkd − kd-w3 [95 %] | verdict | {best} − {control} [95 %] | verdict "
             "| decoupling helps |", "|---|---|---|---|---|---|")
    gaps = {}
    for arch in s["student_losses"]:
        d1 = compare(runs(arch, "dkd"), runs(arch, "kd-w3"))
        d2 = compare(runs(arch, best), runs(arch, control))
        verdicts = [judge(d, "dkd", "kd") for d in (d1, d2)]
        if None in (d1, d2):
            answer = "not run"
        elif is_lower(d1) and is_lower(d2):
            answer = "yes"
        elif "different (kd lower)" in verdicts or verdicts == ["equivalent"] * 2:
            answer = "**no**"
        else:
            answer = "not shown"
        page.add(f"| {arch} | {fmt_diff(d1)} | {verdicts[0]} | {fmt_diff(d2)} | {verdicts[1]} "
                 f"| {answer} |")
        gaps[arch] = rounded(d1.diff) if d1 else None
    page.summary["dkd_minus_kdw3_eer"] = gaps
    page.add("")


def paper_gain(page: Report, runs) -> None:
    """The paper's average relative gain of DKD over embedding KD and KD, per student."""
    page.add(f"### The paper's {PAPER_GAIN} % relative gain, per student", "",
             "Relative EER gain of the paper's dkd over `emb` and over `kd` ((base − dkd) / "
             "base), their mean against the paper's average, and whether dkd is shown lower "
             "than each.", "",
             "| student | gain over emb | gain over kd | mean | dkd − emb | dkd − kd |",
             "|---|---|---|---|---|---|")
    means = {}
    for arch in page.settings["student_losses"]:
        dkd = runs(arch, "dkd")
        cells, gains = [], []
        for base in ("emb", "kd"):
            rs = runs(arch, base)
            if rs and dkd:
                gains.append(100 * (mean_eer(rs) - mean_eer(dkd)) / mean_eer(rs))
            cells.append(judge(compare(dkd, rs), "dkd", base))
        g = statistics.fmean(gains) if len(gains) == 2 else None
        means[arch] = rounded(g, 2)
        shown = " | ".join(f"{x:.1f} %" for x in gains) if g is not None else "not run | not run"
        page.add(f"| {arch} | {shown} | {'' if g is None else f'{g:.1f} %'} | {cells[0]} | "
                 f"{cells[1]} |")
    page.summary["dkd_rel_gain_over_emb_kd_pct"] = means
    seen = ", ".join(f"{a} {g:.1f} %" for a, g in means.items() if g is not None)
    page.add("", f"- The paper reports {PAPER_GAIN} %; here: {seen or 'not run'}.", "")


def other_losses(page: Report, runs) -> None:
    """TRKD and dual-group on the x-vector: the papers' defaults and the chosen settings."""
    s = page.settings
    page.add("### TRKD and dual-group (x-vector), both ways", "",
             "| loss | setting | EER (%) | − dkd [95 %] | verdict | − ce [95 %] | verdict |",
             "|---|---|---|---|---|---|---|")
    dkd, ce = runs("xvector", "dkd"), runs("xvector", "ce")
    for role in ("trkd", "dualgroup"):
        tag = chosen_tag(s, role)
        for name, setting in ((role, "the paper's defaults"),
                              (tag, f"`{tag}` ({s['chosen'][role]['source']})" if tag else
                               "dev-tuned: no setting chosen yet")):
            rs = runs("xvector", name)
            d_dkd, d_ce = compare(rs, dkd), compare(rs, ce)
            page.add(f"| {role} | {setting} | {fmt_ms([r['eer'] for r in rs])} | "
                     f"{fmt_diff(d_dkd)} | {judge(d_dkd, role, 'dkd') if rs else ''} | "
                     f"{fmt_diff(d_ce)} | {judge(d_ce, role, 'ce') if rs else ''} |")
    page.add("")


def model_rows(path: Path) -> dict[str, dict[str, str]]:
    """docs/models.md's table: model name -> column -> cell (empty when the page is absent).

    >>> model_rows(Path("/nonexistent/models.md"))
    {}
    """
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    if not lines:
        return {}
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return {r[0]: dict(zip(head, r, strict=False)) for r in rows if len(r) == len(head)}


def student_costs(page: Report, models: Path = DOCS / "models.md") -> None:
    """What each student costs beside its accuracy: parameters, MACs and the latency of one
    2-s utterance, from docs/models.md (``scripts/bench_models.py``; its machine and load
    are on that page)."""
    rows = model_rows(models)
    page.add("### What each student costs", "",
             "From [models.md](models.md) (`scripts/bench_models.py`: one thread, batch 1; "
             "that page gives its machine and load).", "",
             "| student | width | params (M) | GMACs / s audio | 2-s latency, eager / ONNX (ms) |",
             "|---|---|---|---|---|")
    for arch, recipe in page.settings["students"].items():
        row = rows.get(f"demo student: {recipe['width']}")
        if row is None:
            page.add(f"| {arch} | {recipe['width']} | not measured | | |")
            continue
        page.add(f"| {arch} | {recipe['width']} | {row.get('params (M)', '')} | "
                 f"{row.get('GMACs / s audio', '')} | {row.get('eager 2 s (ms)', '')} / "
                 f"{row.get('onnx 2 s (ms)', '')} |")
    page.add("")
