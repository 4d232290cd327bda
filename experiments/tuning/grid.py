"""The tuning grid: which settings are chosen on dev, their candidate values, the student and
loss each is tuned with, and the runs (one ``stage2_student.train`` per cell and seed).

One setting at a time is varied around :data:`experiments.recipes.BASE` (the others stay
there), so a cell is BASE with at most one setting changed, and the BASE cell of a student
and loss is shared by every setting tuned with it. The students' optimizer settings (LR,
batch size) are tuned with CE alone -- the baseline gets its best recipe, and distillation
cannot win by a better LR; the KD warm-up and each loss's own options with that loss. The
loss options are tuned on the x-vector (cheapest; make results' loss section runs every loss
on it). Seeds are paired: seed i of every cell shares initialisation and data order.

Example::

    >>> names = sorted({cell_name(s, v) for s in FULL for v in s.values})
    >>> len(names), "xvector-ce-base" in names, "xvector-dkd-beta8-T4" in names
    (29, True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.recipes import (
    BASE,
    RUN_START_S,
    TEACHER_UTT_S,
    recipes,
    student_argv,
    teacher_argv,
    training_data_argv,
)
from experiments.runs import Run

SEEDS = (0, 1)  # >= 2 seeds per cell: the rule compares means over seeds
TIE_POINTS = 0.5  # dev-EER points within which two values tie (then the preferred one wins)

_SHORT = {"lr": "lr", "batch_size": "batch", "kd_warmup_share": "warmup", "beta": "beta",
          "temperature": "T", "lambda_f": "lambdaF", "tau_end": "tau",
          "binary_entropy": "entropy"}


@dataclass(frozen=True)
class Setting:
    """Keys of :data:`~experiments.recipes.BASE` chosen together, their candidate values
    (one tuple per candidate, a value per key), the one ``prefer``\\red on a tie (``why``),
    and the student (``arch``) and loss its runs train."""

    keys: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    prefer: tuple[Any, ...]
    why: str
    arch: str
    loss: str

    @property
    def name(self) -> str:
        return " + ".join(self.keys)

    def label(self, value: tuple[Any, ...]) -> str:
        """``value`` for the page (None: the trainer's default or off)."""
        return ", ".join(f"{_SHORT[k.split('.')[1]]} {_fmt(k, v)}"
                         for k, v in zip(self.keys, value, strict=True))

    def settings(self, value: tuple[Any, ...]) -> dict[str, Any]:
        """BASE with this setting at ``value``."""
        return {**BASE, **dict(zip(self.keys, value, strict=True))}


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "default (2/15)" if key.endswith("kd_warmup_share") else "off"
    return f"{value:g}"


def _one(key: str, values: tuple, prefer: Any, why: str, arch: str, loss: str) -> Setting:
    return Setting((key,), tuple((v,) for v in values), (prefer,), why, arch, loss)


_LR_WHY = "the trainer's AdamW default"
_PAPER = "the paper's"
# The full grid (scripts/tune.py --plan: ~80 min on 2 idle cores with the demo's inputs).
FULL: tuple[Setting, ...] = (
    # the teacher's own dev EER picks its LR (AdamW, the preset's batch 32 and epochs)
    _one("teacher.lr", (1e-3, 3e-3, 1e-2), 3e-3, "the demo-teacher preset's", "teacher",
         "ce"),
    _one("xvector.lr", (1e-3, 3e-3, 1e-2), 3e-3, _LR_WHY, "xvector", "ce"),
    _one("xvector.batch_size", (32, 64, 128), 64, "the trainer's default", "xvector", "ce"),
    _one("xvector.kd_warmup_share", (None, 0.5), None, _PAPER + " (20 of 150 epochs)",
         "xvector", "dkd"),
    _one("resnet34.lr", (3e-3, 1e-2), 3e-3, _LR_WHY, "resnet34", "ce"),
    _one("resnet34.kd_warmup_share", (None, 0.5), None, _PAPER, "resnet34", "dkd"),
    _one("campp.lr", (5e-3, 1e-2), 5e-3, "the value before tuning (no default among them)",
         "campp", "ce"),
    _one("campp.kd_warmup_share", (None, 0.5), None, _PAPER, "campp", "dkd"),
    Setting(("dkd.beta", "dkd.temperature"),
            ((1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (8.0, 1.0), (2.0, 4.0), (8.0, 4.0)),
            (2.0, 1.0), _PAPER + " (alpha 1, beta 2, T 1)", "xvector", "dkd"),
    Setting(("trkd.lambda_f", "trkd.tau_end"),
            ((2.0, 0.05), (8.0, 0.05), (2.0, 0.2), (8.0, 0.2)),
            (8.0, 0.05), _PAPER + " (lambda_F 8, tau 0.05)", "xvector", "trkd"),
    _one("dualgroup.binary_entropy", (None, 0.5), None, "off (simpler)", "xvector",
         "dualgroup"),
)
# The smoke grid of --quick: the plumbing end to end in a minute or two.
QUICK: tuple[Setting, ...] = (
    _one("xvector.lr", (3e-3, 1e-2), 3e-3, _LR_WHY, "xvector", "ce"),
    Setting(("dkd.beta", "dkd.temperature"), ((2.0, 1.0), (8.0, 1.0)), (2.0, 1.0),
            _PAPER, "xvector", "dkd"),
)
# What the grid leaves as it was (the page says so): batch 32 of the narrow students, and the
# teacher's optimizer and batch size (its LR is tuned).
NOT_TUNED = {"resnet34.batch_size": "batch 32 kept: the grid's hour goes to their LR and KD "
                                    "warm-up (each run ~3-5 min)",
             "campp.batch_size": "batch 32 kept: as ResNet34's",
             "teacher optimizer and batch (--preset demo-teacher)": "AdamW at batch 32 kept "
             "(the grid tunes its LR; SGD, wespeaker's, is a long-run recipe)"}


def cell_name(setting: Setting, value: tuple[Any, ...]) -> str:
    """``arch-loss-`` + the settings that differ from BASE (``base``: none)."""
    changed = [f"{_SHORT[k.split('.')[1]]}{'none' if v is None else f'{v:g}'}"
               for k, v in zip(setting.keys, value, strict=True) if BASE[k] != v]
    return f"{setting.arch}-{setting.loss}-{'-'.join(changed) or 'base'}"


def run_name(cell: str, seed: int) -> str:
    return f"{cell}-s{seed}"


@dataclass(frozen=True)
class Inputs:
    """What the runs train on: the corpus root, the cache, its rows and crop seconds, the
    training utterances, and the epochs of the students per architecture and of the teacher
    (key ``teacher``; the demo's)."""

    toy: Path
    cache: Path
    rows: int
    crop_seconds: float
    epochs: dict[str, int]
    utterances: int


def runs(grid: tuple[Setting, ...], inputs: Inputs, work: Path,
         seeds: tuple[int, ...] = SEEDS) -> list[Run]:
    """One run per cell and seed (shared cells once), longest first (lanes end together);
    ``work``: the folder of the runs' folders."""
    data = training_data_argv(inputs.toy)  # no dev or test split: nothing scored in training
    found: dict[str, Run] = {}
    for setting in grid:
        for value in setting.values:
            cell = cell_name(setting, value)
            settings = setting.settings(value)
            epochs = inputs.epochs[setting.arch]
            for seed in seeds:
                name = run_name(cell, seed)
                meta = {"arch": setting.arch, "loss": setting.loss, "seed": seed,
                        "cell": cell, "epochs": epochs}
                if setting.arch == "teacher":
                    run = Run(name, "teacher",
                              teacher_argv(data, epochs, work / name, seed, settings),
                              est_s=RUN_START_S + epochs * inputs.utterances * TEACHER_UTT_S,
                              meta=meta)
                else:
                    recipe = recipes(settings)[setting.arch]
                    run = Run(name, "student",
                              student_argv(inputs.cache, data, setting.arch, setting.loss,
                                           epochs, seed, work / name, settings),
                              est_s=recipe.train_seconds(epochs * inputs.rows
                                                         * inputs.crop_seconds), meta=meta)
                found.setdefault(name, run)
    return sorted(found.values(), key=lambda r: -r.est_s)
