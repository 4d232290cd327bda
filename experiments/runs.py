"""Runs of an experiment: one folder per command, resumable, results kept.

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

The runs are started by :class:`experiments.scheduler.Scheduler` and their models evaluated
by :mod:`experiments.evaluation`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_text

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
    lane: int | None = None  # the lane a student must run on (None: the first free one)

    @property
    def heavy(self) -> bool:
        """Teachers, dumps and measurements run alone, on every lane's core."""
        return self.kind != "student"


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


class Layout:
    """Where a run's files live: work in ``out/<runs>/<name>``, kept results in ``results``.

    ``n_boot``: a model's result counts only when it was scored on that many speaker-bootstrap
    replicates (``n_boot`` in its result file); an older one is stale, and its model is
    evaluated again (or, its checkpoint gone, trained again). None: every result counts.
    """

    def __init__(self, out: Path, results: Path, runs: str = "runs",
                 n_boot: int | None = None) -> None:
        self.out, self.results, self.runs, self.n_boot = out, results, runs, n_boot

    def work(self, name: str) -> Path:
        return self.out / self.runs / name

    def product(self, run: Run) -> Path:
        """What the run's consumers read (or, for a measurement, its output)."""
        return self.work(run.name) / PRODUCTS[run.kind]

    def result_path(self, name: str) -> Path:
        return self.results / "runs" / name / "result.json"

    def result(self, name: str, stale: bool = False) -> dict | None:
        """The run's kept result (None: not finished, or stale unless ``stale``)."""
        path = self.result_path(name)
        res = json.loads(path.read_text()) if path.exists() else None
        if (res is not None and not stale and self.n_boot is not None
                and res.get("kind") in ("teacher", "student")
                and res.get("n_boot") != self.n_boot):
            return None
        return res

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


def resume_flag(run: Run, layout: Layout) -> list[str]:
    """``--resume`` where a training run or dump left a checkpoint or store behind."""
    product = layout.product(run)
    if run.kind in ("teacher", "student", "dump") and product.exists():
        return ["--resume"]
    return []
