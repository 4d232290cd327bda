"""The demo's teacher recipe and cheap students (widths, short-run recipes).

One definition for ``scripts/demo.py`` and ``scripts/experiments.py``. Each model is
trained for a few hundred steps on 2 CPU cores, so each recipe is what learns there, not
wespeaker's 150-epoch one.

The teacher is the ``demo`` preset's ECAPA (C=256, 2-s crops) with the recipe that learnt
most in 6 epochs on the demo corpus (2026-12-02, one seed, 480 test utterances): AdamW
3e-3 at batch 32 12.6 % EER, the preset's SGD 0.02 at batch 32 13.1 %, at its batch 64
14.3 %. The students:

- x-vector: AdamW at 3e-3, batch 64, LR decaying 100x (docs/recipe_sweep.md);
- ResNet34 (width 8) and CAM++ (growth 8): these narrow nets separate speakers only after
  ~150-200 steps, and an LR that decays over a 200-300-step run ends it before they do.
  With the x-vector's recipe they stayed near chance (training accuracy 2-4 %, ResNet34
  26.7 %, CAM++ 35.8 % EER in the 2026-11-28 demo); so did batch 32 with AdamW 1e-2
  decaying 10x over 2 / 3 epochs (26.8 % / 32.5 %); the AAM margin is not the cause
  (ResNet34 without it: 27.2 %). Batch 32 (twice the updates for the same crops) at a
  constant LR after the warm-up learns: ResNet34 at 1e-2 21.0 % (DKD 13.3 %). CAM++ is
  the fragile one at 3 epochs: 1e-2 gave CE 19.2 % but DKD diverged (42.0 %), 5e-3 gave
  CE 22.9 % / DKD 25.2 %, the decaying 1e-2 CE 32.5 % / DKD 22.1 % (demo corpus, one seed
  each, 2026-12-02). At 5e-3 DKD stayed above CE in all three of the demo's runs (its
  seed checks, docs/demo.md): not noise, and not understood yet.

Example::

    >>> RECIPES["resnet34"].argv()[:4]
    ['--arch', 'resnet34', '--arch-opt', 'base_width=8']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudentRecipe:
    """One student: architecture options (``--arch-opt``) and its optimizer flags."""

    arch: str
    opts: tuple[str, ...]
    batch_size: int
    optimizer: tuple[str, ...]
    width: str  # how the report names the width

    def model_argv(self, opts: tuple[str, ...] | None = None) -> list[str]:
        """``--arch`` and its ``--arch-opt`` flags (``opts`` replaces the options)."""
        return ["--arch", self.arch,
                *[a for o in (self.opts if opts is None else opts) for a in ("--arch-opt", o)]]

    def argv(self, opts: tuple[str, ...] | None = None) -> list[str]:
        """The stage-2 flags of this student: the model's, its optimizer, its batch size."""
        return [*self.model_argv(opts), *self.optimizer, "--batch-size", str(self.batch_size)]


TEACHER_RECIPE = ["--preset", "demo", "--optimizer", "adamw", "--lr", "3e-3",
                  "--batch-size", "32"]


def _constant_adamw(lr: str) -> tuple[str, ...]:
    return ("--optimizer", "adamw", "--lr", lr, "--final-lr", lr)


RECIPES = {
    "xvector": StudentRecipe("xvector", ("channels=128", "embed_dim=128"), 64,
                             ("--optimizer", "adamw"), "x-vector 128 ch"),
    "resnet34": StudentRecipe("resnet34", ("base_width=8", "embed_dim=128"), 32,
                              _constant_adamw("1e-2"), "ResNet34 width 8"),
    "campp": StudentRecipe("campp", ("growth_rate=8", "init_channels=32", "fcm_channels=8",
                                     "embed_dim=128"), 32, _constant_adamw("5e-3"),
                           "CAM++ growth 8 / 32 initial channels"),
}


def describe() -> str:
    """One line per student for the reports."""
    return "; ".join(f"{r.width}: {' '.join(r.optimizer)}, batch {r.batch_size}"
                     for r in RECIPES.values())
