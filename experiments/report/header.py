"""The report's header: where and when it was written, what ran, the corpus, the test set,
the noise rule and every setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from experiments.evaluation import N_BOOT
from experiments.machine import machine
from experiments.report.page import Report


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
             f"`make results` sessions that ran them: {wall / 60:.1f} min (sum of the "
             f"runs' own wall times: {sum(walls) / 60:.1f} min, students "
             f"{page.settings['lanes']} at a time).")
    page.summary.update(runs_finished=done, runs_planned=len(page.r.res),
                        measured_minutes=round(wall / 60, 1), quick=quick)
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
    page.add("- Noise: EER is given as mean ± std over seeds; differences with their "
             f"paired 95 % interval from {N_BOOT} bootstrap resamplings of the test "
             "speakers (the same resamplings for every model, seeds paired). An ordering "
             "is claimed only where the interval excludes 0 or the difference exceeds "
             "the seed std; otherwise \"within noise\".",
             "- Every setting (`experiments/results/plan.py` `SIZES`; "
             "`experiments/recipes.py` `RECIPES`, `LOSSES`):", "",
             "```json", json.dumps(page.settings, indent=None, default=str), "```", "")
