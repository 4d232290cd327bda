"""The demo's page: its table (with each model's parameters), the claims it makes and in how
many of its runs each held, its stage times and where its settings come from, written as
``OUT/demo.md`` beside its DET plot ``OUT/demo_det.png`` (paths in the page are relative to
it, so the two can be published into docs/ together).

The runs a claim is counted over: this run (``main``) and the seed checks recorded with the
same recipes and sizes (``--check corpus``: another corpus seed; ``--check student``: another student
seed on the same cache; ``OUT/demo_checks.json``, else the published docs/demo_checks.json).
DKD against CE is judged per run by the paired speaker bootstrap
(:func:`speaker.evaluation.compare.hierarchical_difference` with one seed a side, and its
:func:`~speaker.evaluation.compare.verdict`) where the run kept its bootstrap replicates,
else by whether the two 95 % intervals are apart.

Example::

    >>> times = {"corpus": {"wall_s": 40.0, "cpu_s": 70.0, "load": 1.5}}
    >>> times_lines(times)[2]
    '| corpus | 40 | 70 | 1.5 |'
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from experiments.demo.pipeline import STORE_FEATURES
from experiments.machine import machine
from experiments.paths import DOCS
from experiments.recipes import TEACHER_RECIPE, TUNED_LOSSES, TUNING, describe
from experiments.size import Size
from store.atomic import atomic_path, atomic_write_text

PAGE, PLOT, CHECKS = "demo.md", "demo_det.png", "demo_checks.json"
ARCHS = ("xvector", "resnet34", "campp")
# the demo's runs: name -> the --check that makes it (None: every run of the demo)
RUNS = {"main": None, "corpus seed 1": "corpus", "student seed 1": "student"}


def setup_id(size: dict) -> str:
    """A short digest of the students' recipes and the demo's size (``demo.json`` without
    its seeds): a recorded check counts only when it was made with the same ones."""
    same = {k: v for k, v in size.items() if k not in ("corpus_seed", "student_seed")}
    text = json.dumps({"recipes": TUNING.settings, "size": same}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


def dkd_vs_ce(results: dict[str, dict], arch: str) -> tuple[str, str]:
    """One run's DKD-vs-CE verdict for ``arch``: ("lower" | "higher" | "within noise", the
    test used): the paired speaker bootstrap where both kept replicates, else the 95 %
    intervals (apart or not)."""
    dkd, ce = results[f"{arch}-dkd"], results[f"{arch}-ce"]
    if "eer_boot" in dkd and "eer_boot" in ce:
        from speaker.evaluation.compare import hierarchical_difference, verdict

        d = hierarchical_difference([dkd["eer_boot"]], [ce["eer_boot"]], [dkd["eer"]],
                                    [ce["eer"]])
        word = "within noise" if verdict(d) != "different" else (
            "lower" if d.diff < 0 else "higher")
        return word, "paired speaker bootstrap, 95 %"
    if dkd["eer_ci95_high"] < ce["eer_ci95_low"]:
        return "lower", "95 % intervals apart"
    if ce["eer_ci95_high"] < dkd["eer_ci95_low"]:
        return "higher", "95 % intervals apart"
    return "within noise", "95 % intervals overlap"


def claim_lines(runs: dict[str, dict[str, dict]]) -> list[str]:
    """The page's claims over ``runs`` (name -> results): each "holds in k of n runs" (or
    not), and DKD below CE per architecture beyond the noise in every run, or "within
    noise"."""
    n = len(runs)
    held = {name: ordering(res) for name, res in runs.items()}
    lines = []
    for claim in held["main"]:
        ok = [name for name in runs if held[name][claim]]
        miss = [name for name in runs if name not in ok]
        lines.append(f"- {claim}: holds in {len(ok)} of {n} runs"
                     + (f" (not in: {', '.join(miss)})" if miss else ""))
    for arch in ARCHS:
        if f"{arch}-dkd" not in runs["main"]:
            continue
        verdicts = {name: dkd_vs_ce(res, arch) for name, res in runs.items()}
        lower = sum(v == "lower" for v, _ in verdicts.values())
        tests = sorted({t for _, t in verdicts.values()})
        status = (f"holds in {lower} of {n} runs" if lower == n
                  else "within noise" if not any(v == "higher" for v, _ in verdicts.values())
                  else "does not hold (CE lower beyond the noise in a run)")
        detail = "; ".join(f"{name}: {v}" for name, (v, _) in verdicts.items())
        lines.append(f"- {arch}: DKD below CE beyond the noise: {status} ({detail}; test: "
                     f"{', '.join(tests)})")
    return lines


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


def with_params(table: str, results: dict[str, dict]) -> str:
    """The evaluation's table with what each model costs after its name: parameters
    (millions) and the latency of one 2-s utterance (ms; one thread, batch 1, eager)."""
    lines = table.rstrip("\n").splitlines()
    out = [lines[0].replace("| model |", "| model | params (M) | 2-s latency (ms) |", 1),
           lines[1].replace("|---|", "|---|---:|---:|", 1)]
    for line in lines[2:]:
        name = line.split("|")[1].strip()
        params = results.get(name, {}).get("params")
        latency = results.get(name, {}).get("latency_2s_ms")
        out.append(line.replace(f"| {name} |", f"| {name} | "
                                f"{'-' if params is None else f'{params / 1e6:.2f}'} | "
                                f"{'-' if latency is None else f'{latency:.1f}'} |", 1))
    return "\n".join(out)


def record(out: Path, results: dict[str, dict[str, dict]], size: dict) -> None:
    """Add this invocation's runs to OUT/demo_checks.json, each with :func:`setup_id`."""
    path = out / CHECKS
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded.update({name: {"setup": setup_id(size), "models": res}
                     for name, res in results.items()})
    atomic_write_text(path, compact_json(recorded))


def compact_json(value: object) -> str:
    """``value`` as indented JSON with each list of numbers on one line (a run's 1,000
    bootstrap replicates are one line, not a thousand).

    >>> print(compact_json({"eer_boot": [0.1, 0.2]}))
    {
     "eer_boot": [0.1, 0.2]
    }
    """
    text = json.dumps(value, indent=1)
    return re.sub(r"\[\s+([-0-9.eE+,\s]+?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def recorded_checks(out: Path) -> dict[str, dict]:
    """The seed checks recorded in OUT (``--check``), else the published ones in docs/:
    name -> {"setup": :func:`setup_id` or None (recorded before it), "models": results}."""
    for path in (out / CHECKS, DOCS / CHECKS):
        if path.exists():
            return {name: rec if "models" in rec else {"setup": None, "models": rec}
                    for name, rec in json.loads(path.read_text()).items()}
    return {}


def checks_table(main: dict[str, dict], checks: dict[str, dict], setup: str
                 ) -> tuple[list[str], dict]:
    """The table of the demo's runs (which exist, which are counted: made with ``setup``)
    and the counted runs."""
    claims = list(ordering(main))
    counted = {"main": main}
    lines = ["| run | counted | " + " | ".join(claims) + " | EER teacher; CE / DKD (%) |",
             "|---|---|" + "---|" * (len(claims) + 1)]
    for name, flag in RUNS.items():
        rec = checks.get(name)
        if name == "main":
            res, why = main, "yes (this run)"
        elif rec is None:
            lines.append(f"| {name} | not run (`python scripts/demo.py --check {flag}`) |"
                         + " |" * (len(claims) + 1))
            continue
        elif rec["setup"] != setup:
            res, why = rec["models"], "no: recorded with other recipes or sizes"
        else:
            res, why = rec["models"], "yes"
            counted[name] = res
        ok = ordering(res)
        eers = "; ".join(f"{a}: {100 * res[f'{a}-ce']['eer']:.1f} / "
                         f"{100 * res[f'{a}-dkd']['eer']:.1f}" for a in ARCHS)
        lines.append(f"| {name} | {why} | " + " | ".join("yes" if v else "no"
                                                         for v in ok.values())
                     + f" | {100 * res['teacher']['eer']:.1f}; {eers} |")
    return lines, counted


def run_results(out: Path) -> dict[str, dict]:
    """This run's models: results.json with what models.json keeps beside it (parameters,
    latency, bootstrap replicates)."""
    results = json.loads((out / "results" / "results.json").read_text())
    kept = out / "results" / "models.json"
    if kept.exists():
        results = {n: {**r, **json.loads(kept.read_text()).get(n, {})} for n, r in results.items()}
    return results


def held_claims(out: Path) -> list[str]:
    """The claims of the page, over this run and the seed checks counted with it (what the
    demo prints at its end)."""
    setup = setup_id(json.loads((out / "demo.json").read_text()))
    counted = checks_table(run_results(out), recorded_checks(out), setup)[1]
    return [f"What holds over {len(counted)} run(s) (this one and the seed checks made with "
            "the same recipes; a claim only where it holds in every one):", *claim_lines(counted)]


def write_page(out: Path, size: Size, table: str, times: dict, load: str) -> Path:
    """OUT/demo.md from this run (never edited by hand) and OUT/demo_det.png."""
    with atomic_path(out / PLOT) as tmp:
        tmp.write_bytes((out / "results" / "det.png").read_bytes())
    results = run_results(out)
    settings = json.loads((out / "demo.json").read_text())
    setup = setup_id(settings)
    rows, counted = checks_table(results, recorded_checks(out), setup)
    dkd, kd = TUNED_LOSSES["dkd"], TUNED_LOSSES["kd"]
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
        f"`kd` = CE + KD (`{' '.join(kd[2:])}`), `dkd` = CE + DKD (`{' '.join(dkd[2:])}`).",
        f"- Recipes: {TUNING.source}. The test trials below are scored "
        "once, for these settings.",
        "",
        "## Results",
        "",
        "EER with its 95 % interval from 1,000 bootstrap resamplings of the test speakers "
        "(a speaker's trials go together); minDCF normalised, c_miss = c_fa = 1; parameters "
        "of the embedding model (no classifier); latency of one 2-s utterance on one thread, "
        "batch 1, torch eager, median of 5 after a warm-up, on this run's machine and load "
        "(the other runtimes and lengths: docs/models.md).",
        "",
        with_params(table, results),
        "",
        f"![DET curves]({PLOT})",
        "",
        "## What holds",
        "",
        f"Each claim over the {len(counted)} run(s) counted below (this run and the seed "
        f"checks recorded with the same recipes and sizes, `{setup}`); a claim is made only where it holds in "
        "every one of them, and DKD's lead over CE only where it is beyond the noise in "
        "every one.",
        "",
        *claim_lines(counted),
        "",
        "## Time per stage",
        "",
        *times_lines(times),
        "",
        "## The runs",
        "",
        "The seed checks rerun the whole pipeline with another corpus seed (new speakers, new "
        "test trials) and the students with another seed on the same cache; they record "
        f"their results in {CHECKS}, which this page reads.",
        "",
        *rows,
        "",
    ]
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
