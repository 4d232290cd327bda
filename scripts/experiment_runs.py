"""The run machinery of ``scripts/experiments.py``: one folder per run, resumable, results kept.

A :class:`Run` is one command line of the public CLIs (``python -m stage1_teacher.train``,
``stage1_teacher.dump``, ``stage2_student.train``, or a script). Its working folder
``OUT/runs/<name>/`` holds ``run.json`` (the resolved command and settings), its log and
what the command writes (``model.pt`` or ``logits.zarr``). A run is **finished** when
``RESULTS/runs/<name>/result.json`` exists: a few kB (times, the evaluation, the cache's
statistics) that may be kept in the repository, so the report can be rebuilt from them
alone (``--report-only``) and a later session can continue where this one stopped.

- A finished run is skipped, unless a run still to do needs what it wrote and that is gone
  (another machine, a cleaned OUT): then it is run again.
- An interrupted run is continued with ``--resume`` when its checkpoint or store exists.
- Models (teachers, students) are evaluated in batches by :func:`evaluate_runs`, many
  models sharing one pass over the test audio; each model's result keeps the EERs of the
  same ``N_BOOT`` speaker-bootstrap replicates, so any two models' EERs can be compared
  paired (same resampled test speakers) from their result files alone.

Students run ``lanes`` at a time with one torch thread each; teachers, dumps and
measurements run alone with ``lanes`` threads (two one-thread students use two cores
better than one two-thread student on these small models).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_text

log = logging.getLogger("experiments")

N_BOOT = 200  # speaker-bootstrap replicates kept per model (paired comparisons use them)
BOOT_SEED = 0  # one seed for every model: replicate b resamples the same speakers for all


PRODUCTS = {"corpus": "data", "subset": "train.jsonl", "teacher": "model.pt",
            "student": "model.pt", "dump": "logits.zarr", "measure": "log.txt"}


@dataclass(frozen=True)
class Run:
    """One command of the experiment.

    kind: "teacher" and "student" write ``model.pt`` (evaluated afterwards); "dump" writes
    ``logits.zarr``; "measure" is a script whose last stdout line is its JSON result.
    est_s: estimated seconds on the reference machine (``--plan``).
    meta: the settings the report reads (architecture, loss, seed, k, E, ...).
    """

    name: str
    kind: str
    argv: list[str]
    deps: tuple[str, ...] = ()
    est_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    missing: str = ""  # a reason the run cannot be done with these CLIs (reported, skipped)

    @property
    def heavy(self) -> bool:
        return self.kind != "student"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class Layout:
    """Where a run's files live: work in ``out``, kept results in ``results``."""

    def __init__(self, out: Path, results: Path) -> None:
        self.out, self.results = out, results

    def work(self, name: str) -> Path:
        return self.out / "runs" / name

    def product(self, run: Run) -> Path:
        """What the run's consumers read (or, for a measurement, its output)."""
        return self.work(run.name) / PRODUCTS[run.kind]

    def result_path(self, name: str) -> Path:
        return self.results / "runs" / name / "result.json"

    def result(self, name: str) -> dict | None:
        path = self.result_path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def trained(self, name: str) -> Path:
        """Written when a model's training command exits 0 (its evaluation may be pending)."""
        return self.work(name) / "trained.json"


def todo(runs: list[Run], layout: Layout) -> list[Run]:
    """The runs to do, in plan order: unfinished ones, and finished ones whose product an
    unfinished run needs but that is no longer on disk."""
    by_name = {r.name: r for r in runs}
    needed = {r.name for r in runs if not r.missing and layout.result(r.name) is None}
    for r in reversed(runs):  # a consumer comes after its producers in the plan
        if r.name in needed:
            for d in r.deps:
                if not layout.product(by_name[d]).exists():
                    needed.add(d)
    return [r for r in runs if r.name in needed]


def epochs_done(checkpoint: Path) -> int:
    """Epochs a teacher's or student's checkpoint holds: what a resumed attempt skips."""
    from speaker.models.checkpoint import load_checkpoint

    return int((load_checkpoint(checkpoint).state or {}).get("epoch", 0))


def _resume_flag(run: Run, layout: Layout) -> list[str]:
    product = layout.product(run)
    if run.kind in ("teacher", "student", "dump") and product.exists():
        return ["--resume"]
    return []


class SuspendClock:
    """Wall seconds that leave out the time this process was stopped.

    Stopping the experiment's process group (``kill -STOP``, Ctrl-Z) to lend the cores to
    other work would otherwise count as the runs' time: a daemon thread ticks every
    ``tick`` s, and a gap of more than ``gap`` s between two ticks is time the process
    spent stopped (a machine this stalled by load alone would be timed badly anyway).

    Example::

        clock = SuspendClock()
        t0 = clock.now()
        ...                      # may be stopped and continued meanwhile
        wall = clock.now() - t0  # excludes the stopped time
    """

    def __init__(self, tick: float = 0.5, gap: float = 3.0) -> None:
        self.tick, self.gap = tick, gap
        self.stopped = 0.0
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="suspend-clock").start()

    def _watch(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            if now - last > self.gap:
                with self._lock:
                    self.stopped += now - last - self.tick
            last = now

    def now(self) -> float:
        """Monotonic seconds less the stopped time so far."""
        with self._lock:
            return time.monotonic() - self.stopped


@dataclass
class _Active:
    run: Run
    proc: subprocess.Popen
    started: float


class Scheduler:
    """Run ``runs`` (already filtered by :func:`todo`) with ``lanes`` CPU lanes; call
    ``finish(run, wall_s, cpu_s, stdout_tail)`` as each command exits 0 and
    ``evaluate()`` whenever the lanes fall idle; ``resolve(argv)`` fills in what is known
    only when a run starts (the number of training speakers)."""

    def __init__(self, layout: Layout, lanes: int, finish: Callable, evaluate: Callable,
                 resolve: Callable[[list[str]], list[str]]) -> None:
        self.layout, self.lanes = layout, lanes
        self.finish, self.evaluate, self.resolve = finish, evaluate, resolve
        self.active: dict[int, _Active] = {}
        self.clock = SuspendClock()  # a paused experiment does not inflate its runs' times

    def _start(self, run: Run) -> None:
        work = self.layout.work(run.name)
        work.mkdir(parents=True, exist_ok=True)
        resume = _resume_flag(run, self.layout)
        argv = [*self.resolve(run.argv), *resume]
        # a resumed training run times only the epochs it still runs (the report's per-epoch
        # times divide by those)
        skipped = (epochs_done(self.layout.product(run))
                   if resume and run.kind in ("teacher", "student") else 0)
        write_json(work / "run.json", {"name": run.name, "kind": run.kind, "meta": run.meta,
                                       "command": ["python", *argv],
                                       "epochs_done_at_start": skipped})
        threads = "1" if not run.heavy else str(self.lanes)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        log.info("start %s: python %s", run.name, " ".join(argv))
        with open(work / "log.txt", "ab") as f:
            proc = subprocess.Popen([sys.executable, *argv], stdout=f, stderr=subprocess.STDOUT,
                                    env=env, cwd=Path(__file__).resolve().parents[1])
        self.active[proc.pid] = _Active(run, proc, self.clock.now())

    def _reap(self, block: bool) -> list[str]:
        """Collect exited commands; -> names of failed ones."""
        failed = []
        while self.active:
            pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                break
            act = self.active.pop(pid, None)
            if act is None:
                continue
            act.proc.returncode = os.waitstatus_to_exitcode(status)
            wall = self.clock.now() - act.started
            cpu = usage.ru_utime + usage.ru_stime  # the command and the children it waited for
            if act.proc.returncode != 0:
                log.error("%s failed (exit %d); see %s", act.run.name, act.proc.returncode,
                          self.layout.work(act.run.name) / "log.txt")
                failed.append(act.run.name)
                continue
            log.info("%s done in %.0f s (%.0f CPU s)", act.run.name, wall, cpu)
            self.finish(act.run, wall, cpu)
            block = False
        return failed

    def stop(self) -> None:
        """Terminate the running commands (they leave resumable checkpoints)."""
        for act in self.active.values():
            act.proc.send_signal(signal.SIGTERM)
        for act in self.active.values():
            act.proc.wait()
        self.active.clear()

    def run_all(self, runs: list[Run]) -> list[str]:
        """-> names of the runs that failed or could not start (the rest finished)."""
        # trained models only wait for their evaluation (the first time the lanes are idle)
        pending = [r for r in runs if not self.layout.trained(r.name).exists()]
        names = {r.name for r in pending}
        done: set[str] = set()
        failed: list[str] = []
        while True:
            for name in self._reap(block=False):
                failed.append(name)
            done = names - {r.name for r in pending} - {a.run.name for a in self.active.values()}
            done -= set(failed)
            if not self.active:
                self.evaluate()  # lanes idle: evaluate the models that finished training
            for r in list(pending):
                if any(d in failed for d in r.deps):
                    pending.remove(r)
                    failed.append(r.name)
                    log.error("%s not run: a run it needs failed", r.name)
                    continue
                if not all(d not in names or d in done for d in r.deps):
                    continue
                heavy_active = any(a.run.heavy for a in self.active.values())
                if r.heavy:
                    if not self.active:
                        pending.remove(r)
                        self._start(r)
                    break  # drain the lanes for it; start nothing after it meanwhile
                if heavy_active or len(self.active) >= self.lanes:
                    break
                pending.remove(r)
                self._start(r)
            if not self.active:
                if pending:  # the plan lists every run after the runs it needs
                    raise RuntimeError(f"cannot start {pending[0].name}: plan out of order")
                return failed
            for name in self._reap(block=True):
                failed.append(name)


def evaluate_models_of(layout: Layout, names: list[str], data: Any) -> dict[str, dict[str, Any]]:
    """Evaluate the ``model.pt`` of each run in one pass over the test audio; -> name ->
    EER, minDCF (p=0.05, 0.01), the 95 % speaker-bootstrap interval and the replicates.
    ``data``: the :class:`speaker.io.paths.DataPaths` whose test set and trials are scored."""
    import numpy as np

    from speaker.evaluation.evaluate import evaluate_models
    from speaker.evaluation.metrics import bootstrap_eers
    from speaker.io.audio import AudioReader
    from speaker.models.checkpoint import load_checkpoint

    manifest, trial_list = data.test_set()
    models = {n: load_checkpoint(layout.work(n) / "model.pt").model for n in names}
    results = evaluate_models(models, manifest, trial_list, AudioReader(manifest[0].sample_rate))
    out = {}
    for name, r in results.items():
        boot = bootstrap_eers(r.scores, r.labels, *r.speakers, n_boot=N_BOOT, seed=BOOT_SEED)
        lo, hi = np.quantile(boot, [0.025, 0.975]) if boot.size else (float("nan"),) * 2
        out[name] = {**r.summary(), "eer_ci95": [float(lo), float(hi)],
                     "eer_boot": [round(float(e), 6) for e in boot],
                     "trials": int(r.labels.size), "target_trials": int(r.labels.sum()),
                     "test_speakers": int(len(set(r.speakers[0]) | set(r.speakers[1])))}
    return out
