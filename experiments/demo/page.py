"""The demo's page: its table, the claims it makes, its stage times and how its settings
were checked, written as ``OUT/demo.md`` beside its DET plot ``OUT/demo_det.png`` (paths in
the page are relative to it, so the two can be published into docs/ together).

Example::

    >>> times = {"corpus": {"wall_s": 40.0, "cpu_s": 70.0, "load": 1.5}}
    >>> times_lines(times)[2]
    '| corpus | 40 | 70 | 1.5 |'
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from experiments.demo.pipeline import STORE_FEATURES
from experiments.machine import machine
from experiments.paths import DOCS
from experiments.recipes import TEACHER_RECIPE, describe
from experiments.size import Size
from store.atomic import atomic_path, atomic_write_text

PAGE, PLOT, CHECKS = "demo.md", "demo_det.png", "demo_checks.json"
ARCHS = ("xvector", "resnet34", "campp")


def ordering(results: dict[str, dict]) -> dict[str, bool]:
    """The claims the demo makes, each True or False for one run's results."""
    eer = {name: r["eer"] for name, r in results.items()}
    students = [n for n in eer if n != "teacher"]
    archs = sorted({n.rsplit("-", 1)[0] for n in students})
    return {
        "teacher >= 3 points ahead of every CE student":
            all(eer[f"{a}-ce"] - eer["teacher"] >= 0.03 for a in archs),
        "every student < 25 % EER": all(eer[n] < 0.25 for n in students),
        "DKD below CE for every architecture": all(eer[f"{a}-dkd"] < eer[f"{a}-ce"]
                                                   for a in archs),
    }


def dkd_vs_ce_noise(results: dict[str, dict]) -> str:
    """Which DKD-vs-CE differences exceed the noise: the 95 % intervals of the two do not
    overlap (conservative; a paired bootstrap would resolve smaller differences)."""
    archs = sorted({n.rsplit("-", 1)[0] for n in results if n != "teacher"})
    beyond = [a for a in archs
              if results[f"{a}-dkd"]["eer_ci95_high"] < results[f"{a}-ce"]["eer_ci95_low"]]
    within = [a for a in archs if a not in beyond]
    return (f"DKD vs CE beyond the noise (95 % intervals apart): {', '.join(beyond) or 'none'}; "
            f"within noise: {', '.join(within) or 'none'}")


def times_lines(times: dict[str, dict[str, float]]) -> list[str]:
    """The stage-time table (and each student's wall seconds) of OUT/timings.json."""
    order = ["corpus", "teacher", "dump", "verify", "students", "evaluate"]
    rows = [f"| {s} | {times[s]['wall_s']:.0f} | {times[s]['cpu_s']:.0f} | "
            f"{times[s].get('load', '-')} |" for s in order if s in times]
    total = sum(times[s]["wall_s"] for s in order if s in times)
    per_student = ", ".join(f"{k.removeprefix('student ')} {v['wall_s']:.0f}"
                            for k, v in times.items() if k.startswith("student "))
    return ["| stage | wall s | CPU s (all processes) | load at its end |", "|---|---:|---:|---:|",
            *rows, f"| **total** | **{total:.0f}** | | |", "",
            f"Students (wall s each, two at a time): {per_student}."]


def recorded_checks(out: Path) -> dict[str, dict]:
    """The seed checks recorded in OUT (``--check``), else the published ones in docs/."""
    for path in (out / CHECKS, DOCS / CHECKS):
        if path.exists():
            return json.loads(path.read_text())
    return {}


def write_page(out: Path, size: Size, table: str, times: dict, load: str) -> Path:
    """OUT/demo.md from this run (never edited by hand) and OUT/demo_det.png."""
    with atomic_path(out / PLOT) as tmp:
        tmp.write_bytes((out / "results" / "det.png").read_bytes())
    results = json.loads((out / "results" / "results.json").read_text())
    settings = json.loads((out / "demo.json").read_text())
    claims = ordering(results)
    checks = recorded_checks(out)
    lines = [
        "# `make demo`: one full run",
        "",
        "Written by `scripts/demo.py` at the end of the run it describes (do not edit by "
        "hand; rerun the demo, and `--publish-docs` to copy it into docs/).",
        "",
        f"- Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {machine()}.",
        f"- Load average when the run started: {load} (on 2 cores, other jobs inflate wall "
        "times; a resumed run reports the first try's).",
        f"- Settings (`demo.json` in the demo's output folder): `{json.dumps(settings)}`; "
        f"stored student features in the cache: {'yes' if STORE_FEATURES else 'no'}.",
        f"- Corpus: `python -m speaker.toy --speakers {size.speakers} --utts-per-speaker "
        f"{size.utts_per_speaker} --test-speakers {size.test_speakers} --test-utts-per-speaker "
        f"{size.test_utts_per_speaker} --session-variation {size.session_variation} --seed "
        f"{settings['corpus_seed']}`.",
        f"- Teacher: `{' '.join(TEACHER_RECIPE)}` (ECAPA-TDNN C=256, 2-s crops), "
        f"{size.teacher_epochs} epochs.",
        f"- Cache: {size.views} views per utterance, {size.crop_seconds:g}-s crops, "
        f"k={size.topk}, T = 1, 2, 4; store and replay verified.",
        f"- Students, all from that cache, seed {settings['student_seed']}, epochs "
        + ", ".join(f"{a} {e}" for a, e in size.student_epochs)
        + f" ({describe()}; experiments/recipes.py); `ce` = AAM cross-entropy alone, "
        "`kd` = CE + KD (T 1), `dkd` = CE + DKD (alpha 1, beta 2, T 1).",
        "",
        "## Results",
        "",
        "EER with its 95 % interval from 1,000 bootstrap resamplings of the test speakers "
        "(a speaker's trials go together); minDCF normalised, c_miss = c_fa = 1.",
        "",
        table.rstrip("\n"),
        "",
        f"![DET curves]({PLOT})",
        "",
        *[f"- {claim}: {'yes' if ok else '**no**'}" for claim, ok in claims.items()],
        f"- {dkd_vs_ce_noise(results)}",
        "",
        "## Time per stage",
        "",
        *times_lines(times),
        "",
        "## How the settings were checked",
        "",
    ]
    how = ("the whole pipeline again with another corpus seed (new speakers, new test "
           "trials: `python scripts/demo.py --check corpus`) and the students again with "
           "another seed on the same cache (`--check student`)")
    if checks:
        lines += [f"Not on this run's test trials alone: {how}. The three claims for each "
                  f"recorded run ({CHECKS}):", ""]
        lines += ["| run | " + " | ".join(claims) + " | EER teacher / CE / DKD (%) |",
                  "|---|" + "---|" * (len(claims) + 1)]
        for name, res in checks.items():
            ok = ordering(res)
            eers = "; ".join(
                f"{a}: {100 * res[f'{a}-ce']['eer']:.1f} / {100 * res[f'{a}-dkd']['eer']:.1f}"
                for a in ARCHS)
            lines.append(f"| {name} | " + " | ".join("yes" if v else "no" for v in ok.values())
                         + f" | {100 * res['teacher']['eer']:.1f}; {eers} |")
    else:
        lines.append(f"**Not checked yet.** The check is {how}; it records its runs in "
                     f"{CHECKS}, which this page then quotes.")
    lines.append("")
    page = out / PAGE
    atomic_write_text(page, "\n".join(lines))
    return page


def publish(out: Path) -> list[Path]:
    """Copy the page, its plot and the recorded checks (where OUT has them) into docs/."""
    copied = []
    for name in (PAGE, PLOT, CHECKS):
        if (out / name).exists():
            with atomic_path(DOCS / name) as tmp:
                tmp.write_bytes((out / name).read_bytes())
            copied.append(DOCS / name)
    return copied
