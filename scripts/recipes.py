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
  each, 2026-12-02). At 5e-3 with the default KD warm-up (2/15 of the run, 40 steps) DKD
  stayed above CE in all three of the demo's runs (25.5 / 26.8 / 26.2 against CE 22.9 /
  19.2 / 24.7; main run, corpus seed 1, student seed 1): the KD term came in long before
  the student separated any speakers. Ramping it up over half the run instead
  (``kd_warmup_share``): DKD 18.7 / 27.3 / 16.9, below CE in 2 of the 3 and 5.2 points
  lower on average than with the default warm-up (the same three runs, 2026-12-02). At
  300 steps CAM++'s EER still moves by several points between seeds: within noise of CE.
  Ramping it over the whole run instead: DKD 26.3 / 19.5 / 19.6 (no better). Batch 16 for
  2 epochs (400 steps, 2/3 of the work): CE 31.4 / 30.5 / 31.9, DKD 40.7 / 23.9 / 20.8.
- ResNet34 at batch 16 for its 2 epochs (400 steps, the same work) learns more on average
  but no more reliably: CE 13.2 / 27.3 / 18.3, DKD 12.1 / 12.2 / 13.6 against batch 32's
  CE 21.0 / 31.2 / 26.1, DKD 13.2 / 19.2 / 18.6 (the same three runs; main-run CE below the
  teacher's 14.0 at batch 16), so batch 32 stays. A constant LR of 3e-3 instead of 1e-2
  takes off in all three: CE 16.9 / 24.3 / 16.4 (main, corpus seed 1, student seed 1), but
  then two of them come within 3 points of the teacher (14.0 / 14.5 / 14.0), which the demo
  must not show: that needs a stronger teacher first. With the teacher trained 6 epochs
  instead of 5 (EER 13.1 / 11.85 on corpus seeds 0 / 1; +40 s) and ResNet34 at 3e-3, every
  demo claim holds for ResNet34 in all three runs: CE 16.9 / 24.3 / 16.4, DKD 12.8 / 14.5 /
  13.9 (2026-12-02). Against that teacher (CE runs do not change with it): x-vector DKD
  17.0 / 18.2 / 16.1 (CE 18.4 / 19.6 / 18.2), CAM++ DKD 22.3 / 20.8 / 21.5 (CE 22.9 / 19.2 /
  24.7): every claim holds in 2 of the 3 runs (corpus seed 1: CAM++ DKD above CE) against 1
  of 3 with the present settings. The demo would need ~40 s found elsewhere to stay within
  15 minutes.

Example::

    >>> RECIPES["resnet34"].argv()[:4]
    ['--arch', 'resnet34', '--arch-opt', 'base_width=8']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudentRecipe:
    """One student: architecture options (``--arch-opt``) and its optimizer flags."""

    arch: str
    opts: tuple[str, ...]
    batch_size: int
    optimizer: tuple[str, ...]
    width: str  # how the report names the width
    # one-thread seconds of a training step per 1-s crop, two students side by side on the
    # 2-core machine, loading from stored features (the demo of 2026-12-02: epoch seconds /
    # rows); the demo's lanes and `make results`' estimates are planned with it
    crop_s: float
    # KD weight ramp as a share of the run (None: the trainer's default, 2/15 of it)
    kd_warmup_share: float | None = None

    def model_argv(self, opts: tuple[str, ...] | None = None) -> list[str]:
        """``--arch`` and its ``--arch-opt`` flags (``opts`` replaces the options)."""
        return ["--arch", self.arch,
                *[a for o in (self.opts if opts is None else opts) for a in ("--arch-opt", o)]]

    def argv(self, opts: tuple[str, ...] | None = None) -> list[str]:
        """The stage-2 flags of this student: the model's, its optimizer, its batch size."""
        return [*self.model_argv(opts), *self.optimizer, "--batch-size", str(self.batch_size)]

    def train_seconds(self, crops: float) -> float:
        """Estimated wall seconds of a one-thread training run over ``crops`` 1-s crops,
        process start-up included (what the demo's lanes and `make results` plan with).

        >>> round(RECIPES["xvector"].train_seconds(1000), 1)
        9.5
        """
        return RUN_START_S + crops * self.crop_s

    def length_argv(self, epochs: int) -> list[str]:
        """``--epochs`` and, where the recipe sets one, the KD warm-up over that run.

        >>> RECIPES["campp"].length_argv(3)
        ['--epochs', '3', '--kd-warmup', '1.5']
        """
        warmup = ([] if self.kd_warmup_share is None
                  else ["--kd-warmup", f"{self.kd_warmup_share * epochs:g}"])
        return ["--epochs", str(epochs), *warmup]


# Seconds a training process spends outside its steps (imports, noise bank, checkpoint),
# from the demo's logs of 2026-12-02 (5-7 s per student)
RUN_START_S = 6.0

TEACHER_RECIPE = ["--preset", "demo", "--optimizer", "adamw", "--lr", "3e-3",
                  "--batch-size", "32"]


def _constant_adamw(lr: str) -> tuple[str, ...]:
    return ("--optimizer", "adamw", "--lr", lr, "--final-lr", lr)


RECIPES = {
    "xvector": StudentRecipe("xvector", ("channels=128", "embed_dim=128"), 64,
                             ("--optimizer", "adamw"), "x-vector 128 ch", crop_s=0.0035),
    "resnet34": StudentRecipe("resnet34", ("base_width=8", "embed_dim=128"), 32,
                              _constant_adamw("1e-2"), "ResNet34 width 8", crop_s=0.031),
    "campp": StudentRecipe("campp", ("growth_rate=8", "init_channels=32", "fcm_channels=8",
                                     "embed_dim=128"), 32, _constant_adamw("5e-3"),
                           "CAM++ growth 8 / 32 initial channels", crop_s=0.028,
                           kd_warmup_share=0.5),
}


def training_data_argv(root: Path, train: Path | None = None,
                       noise_present: bool = False) -> list[str]:
    """The data flags of a training run on a prepared data root: its training manifest
    (``train``: another one, e.g. a subset) and noise, not its test set, so a run does not
    evaluate itself at its end; the demo and ``make results`` evaluate the models together,
    in one pass over the test audio. ``noise_present``: pass musan/ and rirs/ before they
    exist (a corpus still to be generated); otherwise only the ones the root has.

    >>> training_data_argv(Path("toy"), noise_present=True)
    ['--train', 'toy/train/manifest.jsonl', '--musan', 'toy/musan', '--rirs', 'toy/rirs']
    """
    argv = ["--train", str(train or root / "train" / "manifest.jsonl")]
    for name in ("musan", "rirs"):
        if noise_present or (root / name).exists():
            argv += [f"--{name}", str(root / name)]
    return argv


def describe() -> str:
    """One line per student for the reports."""
    return "; ".join(f"{r.width}: {' '.join(r.optimizer)}, batch {r.batch_size}"
                     + ("" if r.kd_warmup_share is None
                        else f", KD warm-up over {r.kd_warmup_share:.0%} of the run")
                     for r in RECIPES.values())
