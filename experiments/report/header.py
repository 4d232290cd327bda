"""The report's header: where and when it was written, what ran, the corpus, the test set,
the noise rule and every setting."""

from __future__ import annotations

import json
import statistics
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
    path = page.layout.results / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    wall = sum(s["wall_s"] for s in sessions) if sessions else float("nan")
    page.add(f"- Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on: {machine()}.",
             f"- Runs finished: {done} of {len(page.r.res)}; wall time of the "
             "`make results` sessions that ran them: "
             + (f"{wall / 60:.1f} min over {len(sessions)} session" + "s" * (len(sessions) != 1)
                if sessions
                else "none recorded yet") + " (sum of the "
             f"runs' own wall times: {sum(walls) / 60:.1f} min, students "
             f"{page.settings['lanes']} at a time)."
             + "".join(f" Session ending {s['ended']}: {s['note']}." for s in sessions
                       if "note" in s))
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
             f"- Why ±{MARGIN} points: it was meant as about one seed's standard deviation "
             "of a student's EER (a user who retrains the same recipe with another seed moves "
             f"by that much; {seed_spread_note(page.r.res)}), and it is about a "
             "quarter of the gain the paper reports for its method (13.67 % relative of a "
             "10-20 % EER is 1.4-2.7 points): a cache equivalent at this margin cannot have "
             "lost an effect of the paper's size. It was fixed before these runs.",
             operating_point_note([r["min_dcf_0.01"] for r in page.r.res.values()
                                   if r is not None and r["kind"] == "student"]),
             tuning_note(page.settings["chosen"]),
             "- Every setting (`experiments/results/plan.py` `SIZES`; "
             "`experiments/recipes.py` `RECIPES`, `LOSSES`, `CHOSEN`):", "",
             "```json", json.dumps(page.settings, indent=None, default=str), "```", "")


def seed_spread_note(res: dict[str, dict | None]) -> str:
    """The measured seed spread behind the margin: the median, over every student recipe run
    with two or more training seeds (run names ``<recipe>-s<seed>``), of its EER's sample std.

    Example::

        >>> seed_spread_note({"a-s0": {"kind": "student", "eer": 0.10},
        ...                   "a-s1": {"kind": "student", "eer": 0.12}})
        'measured here: median seed std 1.41 points over 1 recipe'
    """
    by_recipe: dict[str, list[float]] = {}
    for name, r in res.items():
        recipe, _, seed = name.rpartition("-s")
        if r is not None and r["kind"] == "student" and seed.isdigit():
            by_recipe.setdefault(recipe, []).append(100 * r["eer"])
    stds = [statistics.stdev(e) for e in by_recipe.values() if len(e) > 1]
    if not stds:
        return "no recipe has two seeds yet"
    return (f"measured here: median seed std {statistics.median(stds):.2f} points over "
            f"{len(stds)} recipe" + "s" * (len(stds) != 1))


SATURATED_DCF = 0.95  # above this minDCF is near 1, the cost of rejecting every trial


def operating_point_note(min_dcf_01: list[float]) -> str:
    """What the report says of minDCF at p_target = 0.01, from the students' measured values:
    saturated (every student at or above ``SATURATED_DCF``, so no better than rejecting every
    trial and useless for ranking) or not; minDCF at p_target = 0.05 is the one tabled.

    Example::

        >>> operating_point_note([0.99, 0.97])[:60]
        '- minDCF at p_target = 0.01 is saturated on this test set (0'
    """
    common = ("minDCF at p_target = 0.05 is given beside the EER, and no verdict rests on "
              "either.")
    if not min_dcf_01:
        return f"- minDCF at p_target = 0.01: no student evaluated yet; {common}"
    lo, hi = min(min_dcf_01), max(min_dcf_01)
    span = f"{lo:.2f}-{hi:.2f} over {len(min_dcf_01)} students"
    if lo >= SATURATED_DCF:
        return (f"- minDCF at p_target = 0.01 is saturated on this test set ({span}: too few "
                "trials and too weak students for that operating point), so it is not "
                f"reported; {common}")
    return (f"- minDCF at p_target = 0.01 ranges {span} (in each run's `result.json`); "
            f"{common}")


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
