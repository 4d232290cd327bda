"""Choose the recipes' settings on the dev split: ``python scripts/tune.py``.

Trains one student per grid cell and seed (experiments/tuning/grid.py: learning rates, batch
size and KD warm-up of the demo's students, DKD's beta and T, TRKD's lambda_F and tau,
dual-group softening; 2 seeds) with ``python -m stage2_student.train`` on the demo's corpus,
teacher and cache, two at a time, one thread each, then scores every model in one
``python -m stage2_student.evaluate --split dev`` pass, and writes OUT/tuning.md (a dev table
per setting and the value the rule chose) and OUT/tuning.json (what experiments/recipes.py
reads: ``--publish-docs`` copies both into docs/). The test trials are never scored.

The inputs: ``--from-demo DIR``, a finished demo's output folder (its corpus must have a dev
split: a corpus from ``speaker.toy`` without one needs the demo rerun into a new folder), or,
without it, the demo's corpus, teacher and cache built into OUT/inputs the way the demo
builds them (~5 more minutes). Resumable: a run with a result is skipped, an interrupted one
continued; rerun the same command.

\\b
Examples:
    python scripts/tune.py --from-demo demo_out --plan        # runs and estimated minutes
    python scripts/tune.py --from-demo demo_out --out tune_out --publish-docs   # the full grid
    python scripts/tune.py --quick --out /tmp/tune            # the plumbing, tiny inputs
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import click

from experiments.demo.pipeline import SIZES, Stages, build_inputs
from experiments.paths import DOCS
from experiments.runs import Layout, Run, todo, write_json
from experiments.scheduler import Scheduler
from experiments.tuning.grid import (
    FULL,
    QUICK,
    SEEDS,
    Inputs,
    Setting,
    cell_name,
    run_name,
    runs,
)
from experiments.tuning.report import dumps, outcome, tuning_json, tuning_page
from store.atomic import atomic_path, atomic_write_text

log = logging.getLogger("experiments")

# Evaluation: process start and one model's embedding of one dev utterance (the demo's
# evaluation of 2026-12-02: 57 s for 8 models x 480 test utterances); building the demo's
# inputs first (the same demo: corpus 41 s, teacher 234 s, dump and verifies 34 s).
EVAL_START_S, EVAL_MODEL_UTT_S, INPUTS_S = 10.0, 0.012, 310.0
PAGE, JSON = "tuning.md", "tuning.json"


def dev_utterances(toy: Path) -> int:
    """Utterances of the dev split (0 when the corpus does not exist yet)."""
    path = toy / "dev" / "manifest.jsonl"
    return sum(1 for _ in path.open()) if path.exists() else 0


def demo_inputs(demo: Path, quick: bool) -> Inputs:
    """The corpus, cache and the students' epochs of a finished demo in ``demo``."""
    from store import StoreReader

    toy, cache = demo / "toy", demo / "logits.zarr"
    if not (demo / "verify.txt").exists() or not cache.exists():
        raise click.UsageError(f"--from-demo {demo}: not a finished demo's folder (no "
                               "verify.txt or logits.zarr); run the demo first")
    if not (toy / "dev" / "trials.txt").exists():
        raise click.UsageError(f"--from-demo {demo}: its corpus has no dev split "
                               f"({toy / 'dev'}); rerun the demo into a new folder "
                               "(speaker.toy writes dev/) or leave --from-demo out")
    spec = StoreReader.open(cache).spec
    saved = json.loads((demo / "demo.json").read_text()) if (demo / "demo.json").exists() \
        else asdict(SIZES["full"])
    epochs = {**dict(saved["student_epochs"]), "teacher": saved["teacher_epochs"]}
    utterances = sum(1 for line in (toy / "train" / "manifest.jsonl").open() if line.strip())
    return Inputs(toy, cache, len(StoreReader.open(cache)), spec.crop_samples / spec.sample_rate,
                  {a: 1 for a in epochs} if quick else epochs, utterances)


def planned_inputs(out: Path, quick: bool) -> Inputs:
    """The inputs OUT/inputs will hold once built the demo's way (their sizes before)."""
    size = SIZES["quick" if quick else "full"]
    rows = size.speakers * size.utts_per_speaker * size.views
    epochs = {**dict(size.student_epochs), "teacher": size.teacher_epochs}
    utterances = size.speakers * size.utts_per_speaker
    return Inputs(out / "inputs" / "toy", out / "inputs" / "logits.zarr", rows,
                  size.crop_seconds, {a: 1 for a in epochs} if quick else epochs, utterances)


def print_plan(grid: tuple[Setting, ...], all_runs: list[Run], layout: Layout, lanes: int,
               inputs: Inputs, build: bool) -> float:
    """Runs per setting and the estimated minutes left (students on ``lanes`` lanes, teachers
    alone, one evaluation pass); -> the minutes."""
    left = {r.name for r in todo(all_runs, layout)}
    by_name = {r.name: r for r in all_runs}
    click.echo(f"{'setting':<40}{'values':>7}{'seeds':>6}{'runs':>6}{'left':>6}")
    for s in grid:
        names = {run_name(cell_name(s, v), seed) for v in s.values for seed in SEEDS}
        click.echo(f"{s.name:<40}{len(s.values):>7}{len(SEEDS):>6}{len(names):>6}"
                   f"{len(names & left):>6}")
    train = sum(by_name[n].est_s / (1 if by_name[n].heavy else lanes) for n in left)
    utts = dev_utterances(inputs.toy) or 320  # the full demo corpus: 40 dev speakers x 8
    evaluate = EVAL_START_S + EVAL_MODEL_UTT_S * utts * len(left) if left else 0.0
    minutes = (train + evaluate + (INPUTS_S if build else 0.0)) / 60
    click.echo(f"\n{len(all_runs)} runs ({len(left)} left, shared cells counted once); "
               f"estimated {minutes:.0f} min on {lanes} idle cores: training {train / 60:.0f}, "
               f"dev evaluation {evaluate / 60:.0f}"
               + (f", building the demo's inputs {INPUTS_S / 60:.0f}" if build else "") + ".")
    return minutes


class GridCallbacks:
    """The scheduler's callbacks: record a finished training run, and evaluate the trained
    models on the dev split in one ``stage2_student.evaluate`` pass."""

    def __init__(self, layout: Layout, toy: Path, lanes: int) -> None:
        self.layout, self.toy, self.lanes = layout, toy, lanes
        self.passes = 0

    def finish(self, run: Run, wall: float, cpu: float) -> None:
        write_json(self.layout.trained(run.name), {"name": run.name, "meta": run.meta,
                                                   "wall_s": round(wall, 2),
                                                   "cpu_s": round(cpu, 2)})

    def evaluate(self) -> None:
        """Every trained, unevaluated model on the dev trials (``--split dev``)."""
        work = self.layout.out / self.layout.runs
        names = sorted(p.parent.name for p in work.glob("*/trained.json")
                       if self.layout.result(p.parent.name) is None)
        if not names:
            return
        self.passes += 1
        out = self.layout.out / "eval" / f"pass-{os.getpid()}-{self.passes}"
        argv = [sys.executable, "-m", "stage2_student.evaluate", "--data", str(self.toy),
                "--split", "dev", "--out", str(out),
                *[a for n in names for a in ("--model", f"{n}={self.layout.work(n) / 'model.pt'}")]]
        log.info("evaluating %d models on the dev split", len(names))
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.lanes)}
        with open(out / "log.txt", "wb") as f:
            done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env)
        if done.returncode != 0:
            raise click.ClickException(f"the dev evaluation failed (see {out / 'log.txt'}); "
                                       "rerun to resume")
        summaries = json.loads((out / "results.json").read_text())
        for name in names:
            trained = json.loads(self.layout.trained(name).read_text())
            write_json(self.layout.result_path(name), {**trained, **summaries[name],
                                                       "split": "dev"})


def _publish(out: Path) -> list[Path]:
    for name in (PAGE, JSON):
        with atomic_path(DOCS / name) as tmp:
            tmp.write_bytes((out / name).read_bytes())
    return [DOCS / PAGE, DOCS / JSON]


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--from-demo", "demo", type=click.Path(exists=True, file_okay=False,
                                                     path_type=Path),
              help="A finished demo's output folder: train on its corpus, teacher and cache.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("tune_out"),
              show_default=True)
@click.option("--quick", is_flag=True,
              help="The smoke grid (x-vector LR and DKD beta, 2 seeds, 1 epoch each).")
@click.option("--plan", is_flag=True, help="Print the runs and estimated minutes; run nothing.")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="Students trained at once (one torch thread each).")
@click.option("--publish-docs", is_flag=True,
              help="Copy OUT/tuning.md and OUT/tuning.json into docs/ (the recipes read "
                   "docs/tuning.json; not with --quick, and only when every run finished).")
def main(demo: Path | None, out: Path, quick: bool, plan: bool, parallel: int,
         publish_docs: bool) -> None:
    """Run the tuning grid into OUT and write its page and JSON."""
    if publish_docs and quick:
        raise click.UsageError("--publish-docs publishes the full grid's choices: not with "
                               "--quick")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s tune: %(message)s",
                        datefmt="%H:%M:%S")
    grid, grid_name = (QUICK, "quick") if quick else (FULL, "full")
    inputs = demo_inputs(demo, quick) if demo else planned_inputs(out, quick)
    layout = Layout(out, out, runs="runs")
    if plan:
        print_plan(grid, runs(grid, inputs, out / "runs"), layout, parallel, inputs,
                   build=demo is None and not (out / "inputs" / "verify.txt").exists())
        return
    if demo is None:
        size = SIZES["quick" if quick else "full"]
        build_inputs(out / "inputs", size, 0, parallel, Stages(out / "inputs" / "timings.json"))
    all_runs = runs(grid, inputs, out / "runs")  # once the corpus exists: its noise folders
    callbacks = GridCallbacks(layout, inputs.toy, parallel)
    failed = Scheduler(layout, parallel, callbacks.finish, callbacks.evaluate).run_all(
        todo(all_runs, layout))
    if failed:
        raise click.ClickException(f"run(s) {', '.join(failed)} failed (see their log.txt "
                                   f"under {out / 'runs'}); rerun to resume")
    dev = {"dev_trials": sum(1 for line in (inputs.toy / "dev" / "trials.txt").open()
                             if line.strip()),
           "dev_speakers": len({json.loads(line)["speaker"] for line in
                                (inputs.toy / "dev" / "manifest.jsonl").open() if line.strip()})}
    saved = tuning_json(outcome(grid, layout), grid_name, SEEDS,
                        {**dev, "rows": inputs.rows, "crop_seconds": inputs.crop_seconds,
                         "epochs": {s.arch: inputs.epochs[s.arch] for s in grid}})
    command = "python scripts/tune.py" + (" --quick" if quick else "") + (
        " --from-demo DEMO_OUT" if demo else "")
    atomic_write_text(out / JSON, dumps(saved))
    atomic_write_text(out / PAGE, tuning_page(saved, command))
    click.echo(f"Wrote {out / PAGE} and {out / JSON}")
    for r in saved["settings"]:
        click.echo(f"{' + '.join(r['keys'])}: {r['chosen']}")
    if publish_docs:
        if any(r["chosen"] is None for r in saved["settings"]):
            raise click.ClickException("not every setting's runs finished: nothing published")
        click.echo(f"Published {', '.join(map(str, _publish(out)))}")
