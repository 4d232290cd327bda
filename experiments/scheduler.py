"""The one process scheduler of the demo and ``make results``: runs on CPU lanes, in plan
order, each after the runs it needs, resumed where a checkpoint exists, timed by a clock that
leaves out the time the process was stopped.

Students run ``lanes`` at a time with one torch thread each (on the lane :func:`plan_lanes`
gave them, or the first free one); teachers, dumps and measurements run alone with
``lanes`` threads (two one-thread students use two cores better than one two-thread student
on these small models).

Example::

    >>> plan_lanes({"a": 5, "b": 5, "c": 4, "d": 3, "e": 3}, 2)
    [['a', 'b'], ['c', 'd', 'e']]
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.runs import Layout, Run, epochs_done, resume_flag, write_json

log = logging.getLogger("experiments")


def plan_lanes(est_s: dict[str, float], lanes: int) -> list[list[str]]:
    """Split jobs over ``lanes`` sequential lanes so that the last lane ends soonest.

    An exhaustive search (the demo has 7 jobs: 64 splits over 2 lanes); greedy
    longest-first scheduling left one core idle for a whole x-vector run at the end. Each
    lane runs its jobs longest first; a job's result does not depend on its lane.
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
    lane: int | None  # None: a heavy run, which holds every lane


class Scheduler:
    """Run ``runs`` (already filtered by :func:`experiments.runs.todo`) with ``lanes`` CPU
    lanes, each command's output in its working folder's ``log.txt``; call
    ``finish(run, wall_s, cpu_s)`` as each command exits 0 and ``evaluate()`` whenever the
    lanes fall idle; ``resolve(argv)`` fills in what is known only when a run starts (the
    number of training speakers); ``cwd``: the commands' working folder."""

    def __init__(self, layout: Layout, lanes: int, finish: Callable,
                 evaluate: Callable[[], None] = lambda: None,
                 resolve: Callable[[list[str]], list[str]] = lambda argv: argv,
                 cwd: Path | None = None) -> None:
        self.layout, self.lanes, self.cwd = layout, lanes, cwd
        self.finish, self.evaluate, self.resolve = finish, evaluate, resolve
        self.active: dict[int, _Active] = {}
        self.clock = SuspendClock()  # a paused experiment does not inflate its runs' times

    def _start(self, run: Run, lane: int | None) -> None:
        work = self.layout.work(run.name)
        work.mkdir(parents=True, exist_ok=True)
        resume = resume_flag(run, self.layout)
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
                                    env=env, cwd=self.cwd)
        self.active[proc.pid] = _Active(run, proc, self.clock.now(), lane)

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
                if r.heavy:
                    if not self.active:
                        pending.remove(r)
                        self._start(r, None)
                    break  # drain the lanes for it; start nothing after it meanwhile
                busy = {a.lane for a in self.active.values()}
                if None in busy or len(busy) >= self.lanes:
                    break
                if r.lane in busy:
                    continue  # its lane is busy: a run planned on another lane may start
                pending.remove(r)
                self._start(r, min(set(range(self.lanes)) - busy) if r.lane is None else r.lane)
            if not self.active:
                if pending:  # the plan lists every run after the runs it needs
                    raise RuntimeError(f"cannot start {pending[0].name}: plan out of order")
                return failed
            for name in self._reap(block=True):
                failed.append(name)
