"""The whole entkd pipeline on the synthetic corpus, as a user would run it (``make demo``).

toy corpus -> teacher -> logits.zarr (+ store verify, replay verify) -> seven students
(x-vector: ce, kd, dkd; ResNet34 and CAM++ at demo widths: ce, dkd; all from the one
cache, run side by side, one thread each) -> one table (parameters, EER with a 95 % interval
from a bootstrap over test speakers, minDCF at p=0.05 and 0.01) and a DET plot.

Every step is the README's command line run as a subprocess (the evaluation runs that
command's functions in-process, keeping the bootstrap replicates); a step whose output is
already complete is skipped, and interrupted ones are continued with ``--resume``, so
rerunning ``make demo`` after a kill picks up where it stopped. Each stage's wall and CPU
seconds go to ``OUT/timings.json``; the run's page, ``OUT/demo.md``, and its DET plot,
``OUT/demo_det.png``, are written from what it measured; ``--publish-docs`` copies them
into docs/.

The students' settings are experiments/recipes.py's: chosen on the dev split by
``scripts/tune.py`` (docs/tuning.json) where it has been run, else the values from before
(the page says which); the test trials are scored once, at the end. ``--check`` runs the
pipeline again with another corpus seed and with another student seed (into
``OUT/check-*``) and records each run's results in ``OUT/demo_checks.json``; the page
claims only what held in every recorded run made with the same recipes, and lists which
runs exist.

\b
Examples:
    python scripts/demo.py --out demo_out                # what `make demo` runs
    python scripts/demo.py --out /tmp/demo --quick       # minutes: tiny corpus, 1-2 epochs
    python scripts/demo.py --out demo_out --check corpus --check student   # + seed checks
    python scripts/demo.py --out demo_out --publish-docs  # + docs/demo.md, docs/demo_det.png
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from experiments.demo.page import CHECKS, held_claims, publish, record, times_lines, write_page
from experiments.demo.pipeline import SIZES, run_demo
from store.atomic import atomic_write_text


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
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
                   f"results in OUT/{CHECKS} (repeatable).")
@click.option("--no-doc", is_flag=True, help="Do not write OUT/demo.md.")
@click.option("--publish-docs", is_flag=True,
              help="Copy OUT/demo.md, its plot and the recorded checks into docs/ "
                   "(not with --quick or --no-doc).")
def main(out: Path, quick: bool, workers: int, parallel: int, check: tuple[str, ...],
         no_doc: bool, publish_docs: bool) -> None:
    """Run the whole demo into OUT; print the table, the DET plot's path and stage times."""
    if publish_docs and (quick or no_doc):
        raise click.UsageError("--publish-docs publishes a full run's page: not with "
                               "--quick or --no-doc")
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
    runs = {"main": (out, 0, 0)}  # name -> (folder, corpus seed, student seed)
    if "corpus" in check:
        runs["corpus seed 1"] = (out / "check-corpus1", 1, 0)
    if "student" in check:
        runs["student seed 1"] = (out / "check-student1", 0, 1)
        # the student-seed check reuses the main corpus, teacher and cache
        for part in ("toy", "teacher", "logits.zarr", "verify.txt"):
            link = out / "check-student1" / part
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to((out / part).resolve())
    results = {}
    for name, (run_out, corpus_seed, student_seed) in runs.items():
        run_out.mkdir(parents=True, exist_ok=True)
        settings = {**asdict(size), "corpus_seed": corpus_seed, "student_seed": student_seed}
        atomic_write_text(run_out / "demo.json", json.dumps(settings, indent=2) + "\n")
        results[name] = run_demo(run_out, size, workers, parallel, corpus_seed, student_seed)
    if check:
        record(out, results, asdict(size))
    table = (out / "results" / "results.md").read_text()
    times = json.loads((out / "timings.json").read_text())
    if not no_doc:
        page = write_page(out, size, table, times, load)
        click.echo(f"\nWrote {page}")
    if publish_docs:
        click.echo(f"Published {', '.join(str(p) for p in publish(out))}")
    click.echo(f"\nResults ({out / 'results' / 'results.json'}):\n\n{table}")
    click.echo(f"DET plot: {out / 'results' / 'det.png'}\n")
    click.echo("\n".join(times_lines(times)))
    click.echo("\n".join(held_claims(out)))
