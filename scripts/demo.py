"""The whole entkd pipeline on the synthetic corpus, as a user would run it.

toy corpus -> teacher -> logits.zarr (+ store verify, replay verify) -> seven students
(x-vector: ce, kd, dkd; ResNet34 and CAM++ at demo widths: ce, dkd; all from the one
cache, run side by side, one thread each) -> one table (EER with a 95 % interval from a
bootstrap over test speakers, minDCF at p=0.05 and 0.01) and a DET plot.

Every step is the README's command line run as a subprocess; a step whose output is
already complete is skipped, and interrupted ones are continued with ``--resume``, so
rerunning ``make demo`` after a kill picks up where it stopped. Each stage's wall and CPU
seconds go to ``OUT/timings.json``; a full run (not ``--quick``) rewrites docs/demo.md and
docs/demo_det.png from what it measured.

The settings were fixed before looking at the main run's test trials alone: ``--check``
runs the pipeline again with another corpus seed and with another student seed (into
``OUT/check-*``), and records each run's table in docs/demo_checks.json, which docs/demo.md
quotes.

Examples::

    python scripts/demo.py --out demo_out                # what `make demo` runs
    python scripts/demo.py --out /tmp/demo --quick       # minutes: tiny corpus, 1-2 epochs
    python scripts/demo.py --out demo_out --check corpus --check student   # + seed checks
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import click

from store.atomic import atomic_path, atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from recipes import RECIPES, TEACHER_RECIPE, describe, training_data_argv  # noqa: E402

log = logging.getLogger("demo")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Stage 1 also stores each view's student fbank in the cache (--store-features), so the
# students skip crop replay (~130 MB here; scripts/bench_stage2.py: ~5.9x the loader's rows/s).
STORE_FEATURES = True


@dataclass(frozen=True)
class DemoSize:
    # corpus (speaker.toy): session variation below the default 1.0 so that students learn
    # in a few hundred steps, while families inside populations keep the teacher's
    # non-target ranking informative
    speakers: int
    utts_per_speaker: int
    test_speakers: int
    test_utts_per_speaker: int
    session_variation: float
    # teacher: ECAPA C=256 on 2-s crops (recipes.TEACHER_RECIPE) for this many epochs
    teacher_epochs: int
    # cache: views per utterance and their crop length, which is the students' crop
    views_per_utt: int
    crop_seconds: float
    topk: int
    # students: epochs over the cache per architecture (recipes: scripts/recipes.py)
    student_epochs: dict[str, int]
    corpus_seed: int = 0
    student_seed: int = 0


# Time of the full size on 2 cores (nothing else running), the same work on 2026-12-02:
# 875 s at 08:35 (`time make demo`: 877 s; corpus 41, teacher 234, dump + verifies 34,
# students 510 on planned lanes, evaluation 57) and 1,062 s at 05:1x with a greedy student
# queue on a host ~20 % slower then (the teacher's bit-identical epochs: 42 s against 47-55 s;
# its EERs equal to the last digit). Students: ResNet34 164-212 s and CAM++ 221-268 s each
# dominate, x-vectors 58-80 s. One-thread step times per 1-s crop: recipes.StudentRecipe.crop_s;
# ECAPA C=256 24 ms per 2-s crop.
SIZES = {
    "full": DemoSize(speakers=200, utts_per_speaker=8, test_speakers=60, test_utts_per_speaker=8,
                     session_variation=0.7, teacher_epochs=5, views_per_utt=2,
                     crop_seconds=1.0, topk=32,
                     student_epochs={"xvector": 6, "resnet34": 2, "campp": 3}),
    "quick": DemoSize(speakers=16, utts_per_speaker=4, test_speakers=8, test_utts_per_speaker=4,
                      session_variation=0.7, teacher_epochs=2, views_per_utt=2,
                      crop_seconds=1.0, topk=8,
                      student_epochs={"xvector": 2, "resnet34": 1, "campp": 1}),
}

# The students and their losses, all from the one cache (widths and recipes:
# scripts/recipes.py, shared with `make results`).
STUDENT_LOSSES = {"resnet34": ["ce", "dkd"], "campp": ["ce", "dkd"], "xvector": ["ce", "kd", "dkd"]}
LOSS_ARGS = {
    "ce": ["--loss", "ce"],
    "kd": ["--loss", "kd", "--temperature", "1"],
    "dkd": ["--loss", "dkd", "--alpha", "1", "--beta", "2", "--temperature", "1"],
}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Stages:
    """Wall and CPU seconds of each stage, kept in OUT/timings.json across resumed runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.times: dict[str, dict[str, float]] = (
            json.loads(path.read_text()) if path.exists() else {})

    def record(self, name: str, wall: float, cpu: float) -> None:
        prev = self.times.get(name, {"wall_s": 0.0, "cpu_s": 0.0})
        # a resumed stage adds the time of its continuation to that of the interrupted try
        # the 1-minute load average as the stage ends says how much other work shared the
        # cores (above the cores' count, wall times are inflated)
        self.times[name] = {"wall_s": round(prev["wall_s"] + wall, 1),
                            "cpu_s": round(prev["cpu_s"] + cpu, 1),
                            "load": round(os.getloadavg()[0], 1)}
        atomic_write_text(self.path, json.dumps(self.times, indent=2) + "\n")


def step(title: str, args: list[str], stages: Stages | None = None, stage: str = "") -> None:
    """Run ``python -m ...`` like a user would; stop the demo if it fails."""
    log.info("%s: %s", title, " ".join(["python", *args]))
    t0, c0 = time.perf_counter(), _children_cpu()
    result = subprocess.run([sys.executable, *args])
    if result.returncode != 0:
        raise click.ClickException(f"{title} failed (exit {result.returncode}); rerun to resume")
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    log.info("%s done in %.0f s (%.0f CPU s)", title, wall, cpu)
    if stages is not None:
        stages.record(stage or title, wall, cpu)


@dataclass(frozen=True)
class StudentJob:
    """One student run of the demo: its stage-2 command line and its estimated seconds."""

    argv: list[str]
    est_s: float


def student_jobs(out: Path, cache: Path, data: list[str], size: DemoSize) -> dict[str, StudentJob]:
    """name -> the stage-2 run of every student (timed by ``StudentRecipe.train_seconds``)."""
    rows = size.speakers * size.utts_per_speaker * size.views_per_utt
    jobs = {}
    for arch, losses in STUDENT_LOSSES.items():
        recipe, epochs = RECIPES[arch], size.student_epochs[arch]
        for loss in losses:
            run_dir = out / "students" / f"{arch}-{loss}"
            argv = [
                "-m", "stage2_student.train", "--cache", str(cache), *data,
                *recipe.argv(), *LOSS_ARGS[loss], *recipe.length_argv(epochs),
                "--seed", str(size.student_seed),
                "--workers", "0", "--out", str(run_dir),
                *(["--resume"] if (run_dir / "model.pt").exists() else []),
            ]
            jobs[f"{arch}-{loss}"] = StudentJob(
                argv, recipe.train_seconds(epochs * rows * size.crop_seconds))
    return jobs


def plan_lanes(est_s: dict[str, float], lanes: int) -> list[list[str]]:
    """Split jobs over ``lanes`` sequential lanes so that the last lane ends soonest.

    An exhaustive search (the demo has 7 jobs: 64 splits over 2 lanes); greedy
    longest-first scheduling left one core idle for a whole x-vector run at the end. Each
    lane runs its jobs longest first; a job's result does not depend on its lane.

    >>> plan_lanes({"a": 5, "b": 5, "c": 4, "d": 3, "e": 3}, 2)
    [['a', 'b'], ['c', 'd', 'e']]
    """
    names = sorted(est_s, key=lambda n: (-est_s[n], n))
    if not names:
        return [[] for _ in range(lanes)]
    best: tuple[float, list[list[str]]] | None = None
    # the first job goes to lane 0: the other placements are the same splits relabelled
    for rest in itertools.product(range(lanes), repeat=len(names) - 1):
        split: list[list[str]] = [[] for _ in range(lanes)]
        for name, lane in zip(names, (0, *rest), strict=True):
            split[lane].append(name)
        end = max(sum(est_s[n] for n in lane) for lane in split)
        if best is None or end < best[0]:
            best = (end, split)
    return best[1]


def run_students(out: Path, jobs: dict[str, StudentJob], parallel: int, stages: Stages) -> None:
    """Run the unfinished students on ``parallel`` lanes (:func:`plan_lanes`), one torch
    thread each (two one-thread processes use two cores better than one two-thread process
    on tiny models). Each writes its log to its run folder."""
    todo = {n: job.est_s for n, job in jobs.items()
            if not (out / "students" / n / "results.json").exists()}
    if not todo:
        return
    lanes = plan_lanes(todo, parallel)
    log.info("students on %d lanes: %s", parallel, " | ".join(
        f"{', '.join(lane)} (~{sum(todo[n] for n in lane):.0f} s)" for lane in lanes))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: dict[int, tuple[str, subprocess.Popen, float]] = {}
    t0, c0 = time.perf_counter(), _children_cpu()
    failed = []
    while any(lanes) or running:
        for i, lane in enumerate(lanes):
            if i in running or not lane:
                continue
            name = lane.pop(0)
            run_dir = out / "students" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            log.info("student %s: python %s (log: %s)", name, " ".join(jobs[name].argv),
                     run_dir / "train.log")
            with open(run_dir / "train.log", "ab") as f:
                running[i] = (name, subprocess.Popen([sys.executable, *jobs[name].argv],
                                                     stdout=f, stderr=subprocess.STDOUT, env=env),
                              time.perf_counter())
        time.sleep(0.5)
        for i, (name, proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[i]
            if proc.returncode != 0:
                failed.append(name)
            log.info("student %s %s in %.0f s (estimated %.0f)", name,
                     "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})",
                     time.perf_counter() - started, todo[name])
            stages.record(f"student {name}", time.perf_counter() - started, 0.0)
    stages.record("students", time.perf_counter() - t0, _children_cpu() - c0)
    if failed:
        logs = ", ".join(str(out / "students" / n / "train.log") for n in failed)
        raise click.ClickException(f"student(s) {', '.join(failed)} failed (see {logs}); "
                                   "rerun to resume")


def run_demo(out: Path, size: DemoSize, workers: int, parallel: int) -> dict[str, dict]:
    """The pipeline into ``out``; -> the evaluation summaries (results.json)."""
    toy, teacher, cache = out / "toy", out / "teacher", out / "logits.zarr"
    data = ["--data", str(toy)]
    stages = Stages(out / "timings.json")
    if not (toy / "toy.json").exists():
        step("synthetic corpus", [
            "-m", "speaker.toy", "--speakers", str(size.speakers),
            "--seed", str(size.corpus_seed), "--utts-per-speaker", str(size.utts_per_speaker),
            "--test-speakers", str(size.test_speakers),
            "--test-utts-per-speaker", str(size.test_utts_per_speaker),
            "--session-variation", str(size.session_variation),
            "--workers", str(parallel), "--out", str(toy), "--force",
        ], stages, "corpus")
    if not (teacher / "results.json").exists():
        step("teacher", [
            "-m", "stage1_teacher.train", *TEACHER_RECIPE, *training_data_argv(toy),
            "--out", str(teacher),
            "--epochs", str(size.teacher_epochs), "--eval-every", "0",
            "--workers", str(workers),
            *(["--resume"] if (teacher / "model.pt").exists() else []),
        ], stages, "teacher")
    model = str(teacher / "model.pt")
    if not (out / "verify.txt").exists():
        step("dump", [
            "-m", "stage1_teacher.dump", "--teacher", model, *data, "--out", str(cache),
            "--views-per-utt", str(size.views_per_utt), "--crop-seconds",
            str(size.crop_seconds), "--topk", str(size.topk), "--temperatures", "1,2,4",
            "--workers", str(workers), *(["--store-features"] if STORE_FEATURES else []),
            *(["--resume"] if cache.exists() else []),
        ], stages, "dump")
        step("store verify", ["-m", "store", "verify", str(cache)], stages, "verify")
        step("replay verify", ["-m", "stage1_teacher.verify", str(cache), "--teacher", model,
                               *data, "--rows", "64"], stages, "verify")
        atomic_write_text(out / "verify.txt", "store and replay verified\n")
    # the models are trained without the test set and evaluated together at the end
    jobs = student_jobs(out, cache, training_data_argv(toy), size)
    run_students(out, jobs, parallel, stages)
    # the table lists x-vector, ResNet34, CAM++, each ce, kd, dkd (jobs run longest first)
    shown = [f"{a}-{loss}" for a in ("xvector", "resnet34", "campp") for loss in LOSS_ARGS]
    models = {"teacher": model,
              **{n: str(out / "students" / n / "model.pt") for n in shown if n in jobs}}
    stages.times.pop("evaluate", None)  # evaluation always reruns: time this run's
    step("evaluate", ["-m", "stage2_student.evaluate", *data, "--out", str(out / "results"),
                      *[a for name, path in models.items() for a in ("--model", f"{name}={path}")]],
         stages, "evaluate")
    return json.loads((out / "results" / "results.json").read_text())


# ---- what the table must show, and docs/demo.md ------------------------------------------

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


def _machine() -> str:
    import torch
    from benchlib import cores, cpu_name

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu_name()}, {cores()} cores, {mem:.0f} GiB, {platform.system()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} "
            f"({'CUDA' if torch.cuda.is_available() else 'CPU'})")


def _times_line(times: dict[str, dict[str, float]]) -> list[str]:
    order = ["corpus", "teacher", "dump", "verify", "students", "evaluate"]
    rows = [f"| {s} | {times[s]['wall_s']:.0f} | {times[s]['cpu_s']:.0f} | "
            f"{times[s].get('load', '-')} |" for s in order if s in times]
    total = sum(times[s]["wall_s"] for s in order if s in times)
    per_student = ", ".join(f"{k.removeprefix('student ')} {v['wall_s']:.0f}"
                            for k, v in times.items() if k.startswith("student "))
    return ["| stage | wall s | CPU s (all processes) | load at its end |", "|---|---:|---:|---:|",
            *rows, f"| **total** | **{total:.0f}** | | |", "",
            f"Students (wall s each, two at a time): {per_student}."]


def write_doc(out: Path, size: DemoSize, table: str, times: dict, load: str,
              checks: dict[str, dict]) -> Path:
    """docs/demo.md from this run (never edited by hand) and docs/demo_det.png."""
    det = DOCS / "demo_det.png"
    with atomic_path(det) as tmp:
        tmp.write_bytes((out / "results" / "det.png").read_bytes())
    results = json.loads((out / "results" / "results.json").read_text())
    claims = ordering(results)
    lines = [
        "# `make demo`: one full run",
        "",
        "Written by `scripts/demo.py` at the end of the run it describes (do not edit by "
        "hand; rerun the demo).",
        "",
        f"- Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {_machine()}.",
        f"- Load average when the run started: {load} (on 2 cores, other jobs inflate wall "
        "times; a resumed run reports the first try's).",
        f"- Settings (`{out}/demo.json`): `{json.dumps(asdict(size))}`; "
        f"stored student features in the cache: {'yes' if STORE_FEATURES else 'no'}.",
        f"- Corpus: `python -m speaker.toy --speakers {size.speakers} --utts-per-speaker "
        f"{size.utts_per_speaker} --test-speakers {size.test_speakers} --test-utts-per-speaker "
        f"{size.test_utts_per_speaker} --session-variation {size.session_variation} --seed "
        f"{size.corpus_seed}`.",
        f"- Teacher: `{' '.join(TEACHER_RECIPE)}` (ECAPA-TDNN C=256, 2-s crops), "
        f"{size.teacher_epochs} epochs.",
        f"- Cache: {size.views_per_utt} views per utterance, {size.crop_seconds:g}-s crops, "
        f"k={size.topk}, T = 1, 2, 4; store and replay verified.",
        f"- Students, all from that cache, seed {size.student_seed}, epochs "
        + ", ".join(f"{a} {e}" for a, e in size.student_epochs.items())
        + f" ({describe()}; scripts/recipes.py); `ce` = AAM cross-entropy alone, "
        "`kd` = CE + KD (T 1), `dkd` = CE + DKD (alpha 1, beta 2, T 1).",
        "",
        "## Results",
        "",
        "EER with its 95 % interval from 1,000 bootstrap resamplings of the test speakers "
        "(a speaker's trials go together); minDCF normalised, c_miss = c_fa = 1.",
        "",
        table.rstrip("\n"),
        "",
        "![DET curves](demo_det.png)",
        "",
        *[f"- {claim}: {'yes' if ok else '**no**'}" for claim, ok in claims.items()],
        f"- {dkd_vs_ce_noise(results)}",
        "",
        "## Time per stage",
        "",
        *_times_line(times),
        "",
        "## How the settings were checked",
        "",
    ]
    how = ("the whole pipeline again with another corpus seed (new speakers, new test "
           "trials: `python scripts/demo.py --check corpus`) and the students again with "
           "another seed on the same cache (`--check student`)")
    if checks:
        lines += [f"Not on this run's test trials alone: {how}. The three claims for each "
                  "recorded run (docs/demo_checks.json):", ""]
        lines += ["| run | " + " | ".join(claims) + " | EER teacher / CE / DKD (%) |",
                  "|---|" + "---|" * (len(claims) + 1)]
        for name, res in checks.items():
            ok = ordering(res)
            eers = "; ".join(
                f"{a}: {100 * res[f'{a}-ce']['eer']:.1f} / {100 * res[f'{a}-dkd']['eer']:.1f}"
                for a in ("xvector", "resnet34", "campp"))
            lines.append(f"| {name} | " + " | ".join("yes" if v else "no" for v in ok.values())
                         + f" | {100 * res['teacher']['eer']:.1f}; {eers} |")
    else:
        lines.append(f"**Not checked yet.** The check is {how}; it records its runs in "
                     "docs/demo_checks.json, which this page then quotes.")
    lines.append("")
    doc = DOCS / "demo.md"
    atomic_write_text(doc, "\n".join(lines))
    return doc


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  python scripts/demo.py                       # the full demo into demo_out/ (resumes)
  python scripts/demo.py --quick --out /tmp/demo
""")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
@click.option("--quick", is_flag=True, help="Tiny corpus and 1-2 epochs (a smoke run).")
@click.option("--workers", type=int, default=0, show_default=True,
              help="DataLoader workers of the teacher and the dump (0: the crops are "
                   "rendered between steps and the model gets both cores: 50 s per teacher "
                   "epoch against 70 s with one worker and one thread).")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="Students trained at once (one torch thread each).")
@click.option("--check", type=click.Choice(["corpus", "student"]), multiple=True,
              help="Also run the pipeline with corpus seed 1 (corpus) and/or student seed 1 "
                   "on the same cache (student), into OUT/check-*, and record every run's "
                   "results in docs/demo_checks.json (repeatable).")
@click.option("--no-doc", is_flag=True, help="Do not rewrite docs/demo.md.")
def main(out: Path, quick: bool, workers: int, parallel: int, check: tuple[str, ...],
         no_doc: bool) -> None:
    """Run the whole demo into OUT; print the table, the DET plot's path and stage times."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s",
                        datefmt="%H:%M:%S")
    # the load when the first try of this output folder started (a resumed run keeps it)
    started = out / "started.json"
    if not started.exists():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(started, json.dumps({"load": os.getloadavg(),
                                               "utc": f"{datetime.now(UTC)}"}))
    load = ", ".join(f"{x:.2f}" for x in json.loads(started.read_text())["load"])
    size = SIZES["quick" if quick else "full"]
    runs = {"main": (out, size)}
    if "corpus" in check:
        runs["corpus seed 1"] = (out / "check-corpus1", replace(size, corpus_seed=1))
    if "student" in check:
        runs["student seed 1"] = (out / "check-student1", replace(size, student_seed=1))
        # the student-seed check reuses the main corpus, teacher and cache
        for part in ("toy", "teacher", "logits.zarr", "verify.txt"):
            link = out / "check-student1" / part
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((out / part).resolve())
    results = {}
    for name, (run_out, run_size) in runs.items():
        run_out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_out / "demo.json", json.dumps(asdict(run_size), indent=2) + "\n")
        results[name] = run_demo(run_out, run_size, workers, parallel)
    checks_path = DOCS / "demo_checks.json"
    if check:
        recorded = json.loads(checks_path.read_text()) if checks_path.exists() else {}
        atomic_write_text(checks_path, json.dumps({**recorded, **results}, indent=2) + "\n")
    table = (out / "results" / "results.md").read_text()
    times = json.loads((out / "timings.json").read_text())
    if not quick and not no_doc:
        checks = json.loads(checks_path.read_text()) if checks_path.exists() else {}
        doc = write_doc(out, size, table, times, load, checks)
        click.echo(f"\nWrote {doc} and {DOCS / 'demo_det.png'}")
    click.echo(f"\nResults ({out / 'results' / 'results.json'}):\n\n{table}")
    click.echo(f"DET plot: {out / 'results' / 'det.png'}\n")
    click.echo("\n".join(_times_line(times)))
    for claim, ok in ordering(results["main"]).items():
        click.echo(f"{claim}: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
