"""Section 7 of ``make results``: does a sampled tail close the gap between a top-32 cache and
online full logits? x-vector students at the DKD setting chosen on dev (``recipes.CHOSEN``,
e.g. beta 8, T 4, tagged ``dkd-b8t4``) from three teacher signals, ``SEEDS`` seeds each
(``LOSS`` is that setting's tag):

- top-32, exact tail bucket: section 1's ``xv-{LOSS}-s{seed}`` (the main cache, k' = 32);
- top-32 + a sampled tail: ``xv-{LOSS}-tail-s{seed}`` (``--tail sampled``) from
  ``dump-tail``, the main cache's rows relabelled by the same teacher with ``--topk 32
  --tail-samples 32``;
- online full logits: ``xv-{LOSS}-online-s{seed}`` (``--online-teacher``).

:func:`add_runs` adds them to a :class:`experiments.results.plan.Plan` after its sections;
``experiments.report.tail`` writes the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from experiments.recipes import CHOSEN
from experiments.runs import Run

LOSS = CHOSEN["dkd"].tag
SECTION = 7
SEEDS = 3  # at least 3: the comparison's seed resampling needs them
TAIL_DRAWS = 32
TOPK = 32


class Plan(Protocol):
    """What this section needs of :class:`experiments.results.plan.Plan` (which calls
    :func:`add_runs`; a protocol, so this module does not import the plan back)."""

    size: Any
    synthetic: bool
    train: Path | None
    runs: list[Run]

    def dump(self, name: str, teacher: str, train: Path | None, views: int, topk: int,
             deps: tuple[str, ...], share: float, sections: list[int], **kw: Any) -> Run: ...

    def student(self, name: str, dump: str, arch: str, loss: str, seed: int,
                sections: list[int], **kw: Any) -> Run: ...


def add_runs(plan: Plan) -> None:
    """The sampled-tail cache and the students of section 7 (the top-32 students are
    section 1's, planned there with ``xvector_seeds`` seeds; more are added here)."""
    s = plan.size
    base = ("corpus",) if plan.synthetic else ()
    dump = plan.dump("dump-tail", "teacher", plan.train, s.views, TOPK, base, 1.0, [SECTION],
                     views_from="dump-main")
    dump.argv[-2:-2] = ["--tail-samples", str(TAIL_DRAWS)]  # before --out
    dump.meta["tail_samples"] = TAIL_DRAWS
    planned = {r.name for r in plan.runs}
    for seed in range(SEEDS):
        if f"xv-{LOSS}-s{seed}" not in planned:
            plan.student(f"xv-{LOSS}-s{seed}", "dump-main", "xvector", LOSS, seed, [SECTION],
                         topk=TOPK)
        run = plan.student(f"xv-{LOSS}-tail-s{seed}", "dump-tail", "xvector", LOSS, seed,
                           [SECTION])
        run.argv[-2:-2] = ["--tail", "sampled"]
        run.meta["tail"] = "sampled"
        plan.student(f"xv-{LOSS}-online-s{seed}", "dump-main", "xvector", LOSS, seed,
                     [SECTION], online="teacher")
