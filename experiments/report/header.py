"""The report's header: where and when it was written, what ran, the corpus, the test set,
the noise rule and every setting."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from experiments.evaluation import N_BOOT
from experiments.machine import machine
from experiments.recipes import PLACEHOLDER
from experiments.report.page import Report
from experiments.report.stats import MARGIN, N_RESAMPLES, rounded


def write(page: Report) -> None:
    """Add the header section to ``page``."""
    done = sum(r is not None for r in page.r.res.values())
    walls = [r["wall_s"] for r in page.r.res.values() if r is not None]
    quick = page.settings["size"] == "quick"
    page.add("# Results: the paper's claims and the cache's worth", "",
             "Written by `scripts/results.py` from the result files under "
             f"`{page.rel(page.layout.results)}/runs/` (do not edit by hand: rerun "
             "`make results`, or `scripts/results.py --report-only`).", "")
    if quick:
        page.add("**This is a `--quick` smoke run: tiny corpus and epochs. Its numbers "
                 "test the pipeline, not the claims.**", "")
    sessions = page.layout.results / "sessions.json"
    wall = sum(s["wall_s"] for s in json.loads(sessions.read_text())) if sessions.exists() \
        else float("nan")
    page.add(f"- Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on: {machine()}.",
             f"- Runs finished: {done} of {len(page.r.res)}; wall time of the "
             "`make results` sessions that ran them: "
             + (f"{wall / 60:.1f} min" if not math.isnan(wall) else "none recorded yet") + " (sum of the "
             f"runs' own wall times: {sum(walls) / 60:.1f} min, students "
             f"{page.settings['lanes']} at a time).")
    if done < len(page.r.res):
        page.add(f"- **Incomplete: {len(page.r.res) - done} planned runs have no result yet "
                 "(\"not run\" below); `make results` continues where it stopped.**")
    page.summary.update(runs_finished=done, runs_planned=len(page.r.res),
                        measured_minutes=rounded(wall / 60, 1), quick=quick)
    stale = [n for n, r in page.r.res.items() if r is not None and r["kind"] == "student"
             and r.get("teacher_sha256") != (page.r.get(r["meta"]["cache"]) or {}).get(
                 "teacher_sha256")]
    if stale:
        page.add(f"- **Warning**: {len(stale)} students learnt from an earlier dump of their "
                 "cache (its teacher was retrained since, e.g. in a session without the "
                 "working folder); delete their result.json files and rerun: "
                 + ", ".join(stale) + ".")
    corpus = page.r.get("corpus")
    if corpus is not None:
        c = corpus["corpus"]
        page.add(f"- Corpus: synthetic (`speaker.toy`), {json.dumps(c)}.")
    else:
        page.add(f"- Corpus: the prepared data root `{page.settings['data']}`.")
    ev = next((r for r in page.r.res.values() if r is not None and "trials" in r), None)
    main = page.r.get("dump-main")
    if main is not None:
        page.add(f"- Training set: {main['classes']} speakers, "
                 f"{main['rows'] // page.settings['views']} utterances.")
    if ev is not None:
        page.add(f"- Test: {ev['trials']:,} trials ({ev['target_trials']:,} target) over "
                 f"{ev['test_speakers']} test speakers.")
        page.summary.update(trials=ev["trials"], test_speakers=ev["test_speakers"])
    page.add(f"- Noise: EER is given as mean ± std over training seeds. Every model is scored "
             f"on the test split and on the same {N_BOOT:,} bootstrap resamplings of its test "
             "speakers; a difference of two systems (mean over seeds) gets its intervals from "
             f"{N_RESAMPLES:,} hierarchical resamples of training seeds and test speakers "
             "(`speaker.evaluation.compare`; seeds paired where both have the same ones).",
             "- Verdicts, one rule everywhere: **different** where the 95 % interval excludes "
             "0; **equivalent** where two one-sided tests at 5 % (TOST: the 90 % interval) "
             f"place the difference inside ±{MARGIN} EER points; otherwise **not shown "
             "equivalent**. Brackets give the 95 % interval.",
             f"- Why ±{MARGIN} points: it is about one seed's standard deviation of a "
             "student's EER here (a user who retrains the same recipe with another seed moves "
             "by that much; the measured spread is printed in sections 1 and 2), and about a "
             "quarter of the gain the paper reports for its method (13.67 % relative of a "
             "10-20 % EER is 1.4-2.7 points): a cache equivalent at this margin cannot have "
             "lost an effect of the paper's size. It was fixed before these runs.",
             "- minDCF at p_target = 0.01 is saturated on this test set (0.98-1.00 for every "
             "student: too few trials and too weak students for that operating point), so "
             "it is not reported; minDCF at p_target = 0.05 is given beside the EER, and no "
             "verdict rests on either.",
             tuning_note(page.settings["chosen"]),
             "- Every setting (`experiments/results/plan.py` `SIZES`; "
             "`experiments/recipes.py` `RECIPES`, `LOSSES`, `CHOSEN`):", "",
             "```json", json.dumps(page.settings, indent=None, default=str), "```", "")


def tuning_note(chosen: dict[str, dict | None]) -> str:
    """Where the reported settings come from: chosen on the dev split, or (where
    docs/tuning.json has not chosen them yet) labelled placeholders."""
    placeholders = sorted(role for role, c in chosen.items()
                          if c is not None and c["source"] == PLACEHOLDER)
    if placeholders:
        return (f"- Settings marked \"{PLACEHOLDER}\" ({', '.join(placeholders)}) are "
                "placeholders (`experiments/recipes.py` `CHOSEN`) until settings chosen on the "
                "dev split land. The DKD one (beta 8, T 4) was the best of an earlier grid "
                "scored on the test split, so its rows may flatter it until then.")
    return ("- The students' learning rates, batch sizes and KD warm-ups and every setting "
            "marked \"chosen on the dev split\" were chosen by `scripts/tune.py` on the dev "
            "split (speakers of its own) of the corpus `docs/tuning.md` names, with its "
            "tables, and carried over to these runs; the test trials scored here were never "
            "used to choose a setting.")
