"""The recipes of the demo and ``make results``: the teacher's stage-1 flags and the cheap
students' widths and short-run optimizer settings (one definition for both).

Each model is trained for a few hundred steps on 2 CPU cores, so each recipe is one that
learns there, not wespeaker's 150-epoch one. How they were chosen (measured on test trials,
historical): docs/recipe_history.md.

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

# stage1_teacher.train's demo-teacher preset: the demo preset's ECAPA (C=256, 2-s crops) with
# AdamW at 3e-3, batch 32
TEACHER_RECIPE = ["--preset", "demo-teacher"]


def _constant_adamw(lr: str) -> tuple[str, ...]:
    return ("--optimizer", "adamw", "--lr", lr, "--final-lr", lr)


# name -> student. x-vector: AdamW with the trainer's LR decaying 100x over the run;
# ResNet34 and CAM++: batch 32 at a constant AdamW LR after the warm-up (these narrow nets
# separate speakers only after ~150-200 steps); CAM++ ramps its KD weight over half the run.
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


# Distillation losses: name -> stage-2 flags (the demo runs ce, kd and dkd; make results all).
# dkd is the paper's (alpha 1, beta 2, T 1).
LOSSES = {
    "ce": ["--loss", "ce"],
    "emb": ["--loss", "emb"],
    "kd": ["--loss", "kd", "--temperature", "1"],
    "dkd": ["--loss", "dkd", "--alpha", "1", "--beta", "2", "--temperature", "1"],
    # control: plain KD weighted like dkd's total (alpha + beta = 3)
    "kd-w3": ["--loss", "kd", "--temperature", "1", "--kd-weight", "3"],
    "trkd": ["--loss", "trkd"],  # the paper's defaults (lambda_M 1, lambda_F 8)
    "dualgroup": ["--loss", "dualgroup"],
}


@dataclass(frozen=True)
class Chosen:
    """A setting chosen on the dev split for the reported (test) runs: the tag that names
    its runs (a new setting gets new run folders) and its stage-2 flags."""

    tag: str
    flags: tuple[str, ...]
    source: str  # where the choice comes from (the report prints it)

    def flag(self, name: str) -> str | None:
        """The value of ``--name`` in the flags (None: not given)."""
        return self.flags[self.flags.index(name) + 1] if name in self.flags else None


PLACEHOLDER = "to be replaced by dev tuning"

# The settings dev tuning chooses, in this one place (the plan and the report read them from
# here): role -> Chosen, or None while there is no choice. Until tuning lands these are
# placeholders: DKD at beta 8, T 4 and TRKD at lambda_F 2 (see the TriageOptions docstring);
# no dual-group setting yet.
CHOSEN: dict[str, Chosen | None] = {
    "dkd": Chosen("dkd-b8t4", ("--loss", "dkd", "--alpha", "1", "--beta", "8",
                               "--temperature", "4"), PLACEHOLDER),
    "trkd": Chosen("trkd-lf2", ("--loss", "trkd", "--trkd-lambda-f", "2"), PLACEHOLDER),
    "dualgroup": None,
}


def kd_control(dkd: Chosen) -> Chosen:
    """Plain KD at a DKD setting's temperature and total weight (alpha + beta): what is left
    of the setting without the decoupling.

    >>> kd_control(CHOSEN["dkd"]).flags
    ('--loss', 'kd', '--temperature', '4', '--kd-weight', '9')
    """
    t = dkd.flag("--temperature") or "1"
    w = float(dkd.flag("--alpha") or 1) + float(dkd.flag("--beta") or 2)
    return Chosen(f"kd-t{t}w{w:g}", ("--loss", "kd", "--temperature", t, "--kd-weight", f"{w:g}"),
                  f"the KD control of {dkd.tag}")


def loss_flags() -> dict[str, list[str]]:
    """Every loss tag ``make results`` trains -> its stage-2 flags (LOSSES, the chosen
    settings and the KD control of the chosen DKD)."""
    chosen = [c for c in CHOSEN.values() if c is not None]
    if CHOSEN["dkd"] is not None:
        chosen.append(kd_control(CHOSEN["dkd"]))
    return {**LOSSES, **{c.tag: list(c.flags) for c in chosen}}


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
