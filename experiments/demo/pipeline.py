"""The demo's pipeline: toy corpus -> teacher -> logits.zarr (+ store verify, replay verify)
-> seven students (x-vector: ce, kd, dkd; ResNet34 and CAM++ at demo widths: ce, dkd; all
from the one cache, run side by side, one thread each) -> one evaluation of every model.

Every step is the README's command line run as a subprocess (the evaluation: that command's
functions in this process, to keep the bootstrap replicates); a step whose output is already
complete is skipped, and interrupted ones are continued with ``--resume``, so rerunning
after a kill picks up where it stopped. Each stage's wall and CPU seconds go to
``OUT/timings.json``. The students' recipes are experiments.recipes' (docs/tuning.json's
values, chosen on the dev split, where it exists).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import click

from experiments.recipes import RECIPES, TEACHER_RECIPE, student_argv, training_data_argv
from experiments.runs import Layout, Run
from experiments.scheduler import Scheduler, plan_lanes
from experiments.size import Size
from store.atomic import atomic_write_text

log = logging.getLogger("demo")

# Stage 1 also stores each view's student fbank in the cache (--store-features), so the
# students skip crop replay (~130 MB here; scripts/bench_stage2.py: ~5.9x the loader's rows/s).
STORE_FEATURES = True

# Corpus (speaker.toy): session variation below the default 1.0 so that students learn in a
# few hundred steps, while families inside populations keep the teacher's non-target ranking
# informative. Teacher: ECAPA C=256 on 2-s crops (recipes.TEACHER_RECIPE).
# Time of the full size on 2 cores (nothing else running), the same work on 2026-12-02:
# 875 s at 08:35 (`time make demo`: 877 s; corpus 41, teacher 234, dump + verifies 34,
# students 510 on planned lanes, evaluation 57) and 1,062 s at 05:1x with a greedy student
# queue on a host ~20 % slower then (the teacher's bit-identical epochs: 42 s against 47-55 s;
# its EERs equal to the last digit). Students: ResNet34 164-212 s and CAM++ 221-268 s each
# dominate, x-vectors 58-80 s. One-thread step times per 1-s crop: recipes.StudentRecipe.crop_s;
# ECAPA C=256 24 ms per 2-s crop.
SIZES = {
    "full": Size(speakers=200, utts_per_speaker=8, test_speakers=60, test_utts_per_speaker=8,
                 session_variation=0.7, teacher_epochs=5, views=2, crop_seconds=1.0, topk=32,
                 student_epochs=(("xvector", 6), ("resnet34", 2), ("campp", 3))),
    "quick": Size(speakers=16, utts_per_speaker=4, test_speakers=8, test_utts_per_speaker=4,
                  session_variation=0.7, teacher_epochs=2, views=2, crop_seconds=1.0, topk=8,
                  student_epochs=(("xvector", 2), ("resnet34", 1), ("campp", 1))),
}

# The students and their losses (recipes.TUNED_LOSSES), all from the one cache.
STUDENT_LOSSES = {"resnet34": ["ce", "dkd"], "campp": ["ce", "dkd"], "xvector": ["ce", "kd", "dkd"]}
# The table lists x-vector, ResNet34, CAM++, each ce, kd, dkd (the students run longest first).
SHOWN = [f"{a}-{loss}" for a in ("xvector", "resnet34", "campp") for loss in ("ce", "kd", "dkd")]


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
        """Add a stage's seconds (a resumed stage adds its continuation's to the first try's)."""
        prev = self.times.get(name, {"wall_s": 0.0, "cpu_s": 0.0})
        # the 1-minute load average as the stage ends says how much other work shared the
        # cores (above the cores' count, wall times are inflated)
        self.times[name] = {"wall_s": round(prev["wall_s"] + wall, 1),
                            "cpu_s": round(prev["cpu_s"] + cpu, 1),
                            "load": round(os.getloadavg()[0], 1)}
        atomic_write_text(self.path, json.dumps(self.times, indent=2) + "\n")


def step(title: str, args: list[str], stages: Stages, stage: str) -> None:
    """Run ``python -m ...`` like a user would; stop the demo if it fails."""
    log.info("%s: %s", title, " ".join(["python", *args]))
    t0, c0 = time.perf_counter(), _children_cpu()
    result = subprocess.run([sys.executable, *args])
    if result.returncode != 0:
        raise click.ClickException(f"{title} failed (exit {result.returncode}); rerun to resume")
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    log.info("%s done in %.0f s (%.0f CPU s)", title, wall, cpu)
    stages.record(stage, wall, cpu)


def student_runs(out: Path, cache: Path, data: list[str], size: Size,
                 student_seed: int) -> dict[str, Run]:
    """name -> the stage-2 run of every student (timed by ``StudentRecipe.train_seconds``;
    the scheduler adds ``--resume`` where a checkpoint exists)."""
    rows = size.speakers * size.utts_per_speaker * size.views
    runs = {}
    for arch, losses in STUDENT_LOSSES.items():
        recipe, epochs = RECIPES[arch], size.epochs(arch)
        for loss in losses:
            name = f"{arch}-{loss}"
            argv = student_argv(cache, data, arch, loss, epochs, student_seed,
                                out / "students" / name)
            runs[name] = Run(name, "student", argv,
                             est_s=recipe.train_seconds(epochs * rows * size.crop_seconds))
    return runs


def run_students(out: Path, runs: dict[str, Run], parallel: int, stages: Stages) -> None:
    """Run the unfinished students on ``parallel`` lanes (:func:`plan_lanes`), one torch
    thread each (two one-thread processes use two cores better than one two-thread process
    on tiny models). Each writes its log to its run folder."""
    layout = Layout(out, out, runs="students")
    todo = {n: r.est_s for n, r in runs.items()
            if not (layout.work(n) / "results.json").exists()}
    if not todo:
        return
    lanes = plan_lanes(todo, parallel)
    log.info("students on %d lanes: %s", parallel, " | ".join(
        f"{', '.join(lane)} (~{sum(todo[n] for n in lane):.0f} s)" for lane in lanes))
    planned = [Run(n, "student", runs[n].argv, est_s=runs[n].est_s, lane=i)
               for i, lane in enumerate(lanes) for n in lane]

    def finish(run: Run, wall: float, cpu: float) -> None:
        stages.record(f"student {run.name}", wall, 0.0)

    sched = Scheduler(layout, parallel, finish)
    t0, c0 = sched.clock.now(), _children_cpu()
    failed = sched.run_all(planned)
    stages.record("students", sched.clock.now() - t0, _children_cpu() - c0)
    if failed:
        logs = ", ".join(str(layout.work(n) / "log.txt") for n in failed)
        raise click.ClickException(f"student(s) {', '.join(failed)} failed (see {logs}); "
                                   "rerun to resume")


def build_inputs(out: Path, size: Size, workers: int, parallel: int, stages: Stages,
                 corpus_seed: int = 0) -> tuple[Path, Path, Path]:
    """The corpus, teacher and verified cache in ``out`` (done steps skipped); -> (corpus
    root, teacher checkpoint, cache): what the students (and ``scripts/tune.py``) train on."""
    toy, teacher, cache = out / "toy", out / "teacher", out / "logits.zarr"
    data = ["--data", str(toy)]
    if not (toy / "toy.json").exists():
        step("synthetic corpus", [
            "-m", "speaker.toy", "--speakers", str(size.speakers),
            "--seed", str(corpus_seed), "--utts-per-speaker", str(size.utts_per_speaker),
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
            "--views-per-utt", str(size.views), "--crop-seconds",
            str(size.crop_seconds), "--topk", str(size.topk), "--temperatures", "1,2,4",
            "--workers", str(workers), *(["--store-features"] if STORE_FEATURES else []),
            *(["--resume"] if cache.exists() else []),
        ], stages, "dump")
        step("store verify", ["-m", "store", "verify", str(cache)], stages, "verify")
        step("replay verify", ["-m", "stage1_teacher.verify", str(cache), "--teacher", model,
                               *data, "--rows", "64"], stages, "verify")
        atomic_write_text(out / "verify.txt", "store and replay verified\n")
    return toy, teacher / "model.pt", cache


def run_demo(out: Path, size: Size, workers: int, parallel: int, corpus_seed: int = 0,
             student_seed: int = 0) -> dict[str, dict]:
    """The pipeline into ``out``; -> the evaluation summaries (results.json)."""
    stages = Stages(out / "timings.json")
    toy, model, cache = build_inputs(out, size, workers, parallel, stages, corpus_seed)
    # the models are trained without the test set and evaluated together at the end
    runs = student_runs(out, cache, training_data_argv(toy), size, student_seed)
    run_students(out, runs, parallel, stages)
    models = {"teacher": str(model),
              **{n: str(out / "students" / n / "model.pt") for n in SHOWN if n in runs}}
    stages.times.pop("evaluate", None)  # evaluation always reruns: time this run's
    return evaluate(out / "results", models, toy, parallel, stages)


def evaluate(out: Path, models: dict[str, str], toy: Path, threads: int,
             stages: Stages) -> dict[str, dict]:
    """Every model on the test trials in one batched pass: what ``python -m
    stage2_student.evaluate --data TOY --out OUT --model ...`` writes (results.json,
    results.md, det.png), run in this process with its functions so that each model's EERs
    on the shared speaker-bootstrap replicates are kept, with its parameter count, in
    ``OUT/models.json`` (the page's paired DKD-vs-CE verdicts read them); -> name -> the
    summary, ``params``, ``latency_2s_ms`` (one thread, batch 1, eager, median of 5 after a
    warm-up) and ``eer_boot``."""
    import torch

    from experiments.evaluation import BOOT_SEED, N_BOOT
    from speaker.evaluation.metrics import bootstrap_eers
    from speaker.io.paths import DataPaths
    from speaker.models import count_parameters
    from speaker.models.checkpoint import load_checkpoint
    from speaker.models.export import example_input
    from speaker.models.profile import median_ms
    from stage2_student.evaluate import evaluate_specs, write_report

    log.info("evaluate: %d models on the test trials of %s", len(models), toy)
    t0, c0 = time.perf_counter(), time.process_time()
    torch.set_num_threads(threads)
    paths = {name: Path(path) for name, path in models.items()}
    results = evaluate_specs({name: str(path) for name, path in paths.items()},
                             DataPaths(data=toy))
    write_report(results, out)
    nets = {name: load_checkpoint(path).model.eval() for name, path in paths.items()}
    torch.set_num_threads(1)  # the latency column: one thread, batch 1, as docs/models.md
    kept = {name: {"params": count_parameters(nets[name]),
                   "latency_2s_ms": round(median_ms(nets[name], example_input(
                       nets[name].input_kind, 2.0), repeats=5), 1),
                   "eer_boot": [round(float(e), 5) for e in bootstrap_eers(
                       r.scores, r.labels, *r.speakers, n_boot=N_BOOT, seed=BOOT_SEED)]}
            for name, r in results.items()}
    torch.set_num_threads(threads)
    atomic_write_text(out / "models.json", json.dumps(kept) + "\n")
    stages.record("evaluate", time.perf_counter() - t0, time.process_time() - c0)
    summaries = json.loads((out / "results.json").read_text())
    return {name: {**summaries[name], **kept[name]} for name in results}
