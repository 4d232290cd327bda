"""`make results`: the paper's claims and the cache's worth, measured with seeds.

Drives the public command lines (``speaker.toy``, ``stage1_teacher.train``,
``stage1_teacher.dump``, ``stage2_student.train``, ``store stats``) as subprocesses, one run
per folder, and rebuilds docs/RESULTS.md and its plots from the runs' results:

1. losses and controls on every student (x-vector, ResNet34, CAM++; 3 seeds each): CE,
   embedding KD, KD, KD at DKD's total weight, DKD, the chosen DKD setting and its KD control
   at the same temperature and weight; TRKD and dual-group, defaults and chosen settings;
2. cached DKD at E = 2, 4, 8 views against online DKD on fresh crops every epoch (the
   baseline without entkd), at the present run length and 3x it, with a TOST equivalence
   margin; the same-views online run as the top-k truncation control;
3. more training speakers with all their utterances (teacher retrained per subset), and the
   same shares at a fixed number of utterances (second table);
4. views per utterance: the cache's size and dump time against E (section 2's caches);
5. teacher confidence (cache statistics; a less-trained teacher);
6. costs: a dump plus N cached students against N online ones, measured here; a projection
   to a WavLM-Large-sized teacher;
7. a sampled tail: x-vector students at the chosen DKD setting from a top-32 cache, from
   top-32 + 32 tail draws (``--tail sampled``) and from online full logits.

Every difference is a hierarchical bootstrap over training seeds and test speakers
(``speaker.evaluation.compare``), every model scored on the same 1,000 speaker replicates.
Models are evaluated on the test split; settings chosen on the dev split come from
``experiments/recipes.py`` ``CHOSEN``.

Resumable: a finished run (``RESULTS/runs/<run>/result.json``) is skipped, an interrupted
one continued with ``--resume``; a model's result scored on other bootstrap replicates (an
older design) is redone (evaluated again when its checkpoint is still under OUT); the result files are small and may be committed, and
``--report-only`` rewrites the report from them (a later session can finish a partial run).
Nothing depends on the synthetic corpus: ``--data ROOT`` runs on any prepared data root;
without it the synthetic corpus is generated first. The last line printed is a JSON summary.

\b
Examples:
    python scripts/results.py --out results_out                # what `make results` runs
    python scripts/results.py --plan                           # runs and estimated minutes
    python scripts/results.py --data data/vox --out vox_results --results docs/results-vox
    python scripts/results.py --report-only                    # RESULTS.md from results
    python scripts/results.py --quick --out /tmp/q     # tiny sizes; results in /tmp/q
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import click

from experiments.evaluation import N_BOOT
from experiments.paths import DOCS, ROOT
from experiments.recipes import CHOSEN, RECIPES, TEACHER_RECIPE, kd_control, loss_flags
from experiments.report import write_report
from experiments.results.experiment import Experiment, SessionRecord
from experiments.results.plan import COST, SHORT, SIZES, Options, Plan, student_losses
from experiments.runs import Layout, Run, todo
from experiments.scheduler import Scheduler

log = logging.getLogger("experiments")

HEARTBEAT_S = 60.0  # how often the session's wall time is saved (all a SIGKILL can lose)


def _every(seconds: float, action) -> None:
    """Call ``action()`` every ``seconds`` from a daemon thread, for the process's life."""
    def loop() -> None:
        while True:
            time.sleep(seconds)
            action()
    threading.Thread(target=loop, daemon=True, name="heartbeat").start()


def print_plan(plan: Plan, layout: Layout, lanes: int) -> None:
    """Runs per section, estimated minutes left (students on ``lanes`` lanes) and what is
    done. Once runs of a kind have finished, the estimates of that kind are scaled by their
    measured / estimated wall time (shown as the calibration)."""
    runs = plan.runs
    measured: dict[str, list[float]] = {}
    for r in runs:
        res = layout.result(r.name, stale=True)  # an older design's runs time it as well
        if res is not None and r.est_s > 0:
            m = measured.setdefault(r.kind, [0.0, 0.0])
            m[0] += res["wall_s"]
            m[1] += r.est_s
    scale = {k: w / e for k, (w, e) in measured.items()}
    sections: dict[int, list[Run]] = {}
    for r in runs:
        sections.setdefault(r.meta["section"][0], []).append(r)

    def minutes(rs: list[Run]) -> float:
        return sum(r.est_s * scale.get(r.kind, 1.0) / (lanes if r.kind == "student" else 1)
                   for r in rs if not r.missing) / 60

    total = whole = 0.0
    click.echo(f"{'section':<9}{'runs':>5}{'done':>6}{'left':>6}{'est. min left':>15}"
               f"{'from nothing':>14}")
    for sec in sorted(sections):
        rs = sections[sec]
        left = [r for r in rs if layout.result(r.name) is None and not r.missing]
        done = sum(layout.result(r.name) is not None for r in rs)
        total, whole = total + minutes(left), whole + minutes(rs)
        click.echo(f"{sec:<9}{len(rs):>5}{done:>6}{len(left):>6}{minutes(left):>15.1f}"
                   f"{minutes(rs):>14.1f}")
    models = sum(r.kind in ("teacher", "student") and layout.result(r.name) is None
                 and not r.missing for r in runs)
    per_pass = plan.test_seconds * COST["eval_fbank"] / 60
    fbank = COST["eval_passes"] * per_pass if models else 0
    click.echo(f"{'test fbank':<27}{fbank:>15.1f}{COST['eval_passes'] * per_pass:>14.1f}   "
               f"({plan.test_seconds / 60:.0f} min of test audio, ~{COST['eval_passes']} "
               "evaluation passes)")
    click.echo(f"{'total':<27}{total + fbank:>15.1f}"
               f"{whole + COST['eval_passes'] * per_pass:>14.1f}   (2-core reference costs: COST in "
               "experiments/results/plan.py" + (", calibrated by finished runs: " + ", ".join(
                   f"{k} x{v:.2f}" for k, v in scale.items()) if scale else "") + ")")
    for r in runs:
        if r.missing:
            click.echo(f"cannot run {r.name}: {r.missing}")


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), default=Path("results_out"),
              show_default=True, help="Working folder: corpus, checkpoints, caches, logs.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
              help="Kept results: runs/<run>/result.json, plots/, sessions.json "
              "[default: docs/results; with --quick: OUT/results].")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="The Markdown report written from the results "
              "[default: docs/RESULTS.md; with --quick: OUT/RESULTS.md].")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Prepared data root (train/, test/, musan/, rirs/); "
              "default: generate the synthetic corpus into OUT.")
@click.option("--quick", is_flag=True, help="Tiny sizes (minutes): a smoke run of every section.")
@click.option("--lanes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Students trained at once (one thread each); teachers and dumps use all.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print the runs per section with estimated minutes, run nothing.")
@click.option("--report-only", is_flag=True, help="Rewrite the report from the kept results.")
def main(out: Path, results_dir: Path | None, report: Path | None, data: Path | None, quick: bool, lanes: int,
         plan_only: bool, report_only: bool) -> None:
    """Run the experiments (resuming), then write the report and print the JSON summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s experiments: %(message)s",
                        datefmt="%H:%M:%S")
    size = SIZES["quick" if quick else "full"]
    # a smoke run never writes over the kept results of the real one
    results_dir = results_dir or (out / "results" if quick else DOCS / "results")
    report = report or (out / "RESULTS.md" if quick else DOCS / "RESULTS.md")
    plan = Plan(size, data.resolve() if data else None, out.resolve(), Options())
    runs = plan.build()
    layout = Layout(out.resolve(), results_dir.resolve(), n_boot=N_BOOT)
    dkd = CHOSEN["dkd"]
    settings = {"size": "quick" if quick else "full", **asdict(size),
                "data": str(data) if data else "synthetic (speaker.toy)", "lanes": lanes,
                "teacher": TEACHER_RECIPE,
                "students": {a: asdict(r) for a, r in RECIPES.items()}, "losses": loss_flags(),
                "student_losses": student_losses(), "short": SHORT,
                "chosen": {role: c and asdict(c) for role, c in CHOSEN.items()},
                "kd_control": kd_control(dkd).tag if dkd else None}
    if plan_only:
        print_plan(plan, layout, lanes)
        return
    failed: list[str] = []
    if not report_only:
        exp = Experiment(plan, layout, lanes)
        sched = Scheduler(layout, lanes, exp.finish, exp.evaluate, exp.resolve, cwd=ROOT)
        started = sched.clock.now()  # the session's time, less any time it was stopped
        record = SessionRecord(layout.results)
        _every(HEARTBEAT_S, lambda: record.update(sched.clock.now() - started))

        def stop(signum: int, frame: object) -> None:
            log.info("stopped by signal %d: rerun the same command to resume", signum)
            sched.stop()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        try:
            failed = sched.run_all(todo(runs, layout))
        except KeyboardInterrupt:
            sched.stop()
            raise
        finally:
            record.update(sched.clock.now() - started)
    summary = write_report(runs, layout, settings, report)
    if failed:
        click.echo(f"error: runs failed or not run: {', '.join(failed)} (logs under "
                   f"{layout.out / 'runs'}); rerun to resume", err=True)
    click.echo(json.dumps(summary))
    if failed:
        sys.exit(1)


