"""The recipes of the demo and ``make results``: the teacher's stage-1 flags, the cheap
students' widths and short-run optimizer settings, and the distillation losses' flags (one
definition for both).

Each model is trained for a few hundred steps on 2 CPU cores, so each recipe is one that
learns there, not wespeaker's 150-epoch one. The tunable settings (:data:`BASE`: the
teacher's and the students' learning rates, the students' batch sizes and KD warm-up shares;
DKD's beta and T; TRKD's lambda_F and tau; dual-group softening) are read from
``docs/tuning.json``, where ``scripts/tune.py`` (:mod:`experiments.tuning`) writes the values
it chose on the **dev split** (lowest mean dev EER over seeds; ties go to the paper's or
trainer's default); ``docs/tuning.md`` has its tables. Without that file the settings are :data:`BASE`, the
values used before tuning on dev existed (not tuned: docs/recipe_history.md is their
history, superseded); :data:`TUNING` says which applies, and the demo's page repeats it.

Example::

    >>> RECIPES["resnet34"].argv()[:4]
    ['--arch', 'resnet34', '--arch-opt', 'base_width=8']
    >>> recipes(BASE)["resnet34"].optimizer
    ('--optimizer', 'adamw', '--lr', '0.01', '--final-lr', '0.01')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.paths import DOCS


@dataclass(frozen=True)
class StudentRecipe:
    """One student: architecture options (``--arch-opt``), its optimizer flags and batch size
    (made by :func:`recipes` from the settings)."""

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

# Wall seconds of a teacher per training utterance and epoch on 2 cores (it runs alone: a 2-s
# crop rendered, forward, backward; the tuning grid's demo teachers, 216 s over 5 epochs of
# 1,600 utterances, 2026-12-07)
TEACHER_UTT_S = 0.027

# The tunable settings and their values before tuning on dev: the centre of the tuning grid
# (experiments.tuning varies one setting at a time around them) and the fallback when
# docs/tuning.json is absent. None: the trainer's default (KD warm-up over 2/15 of the run,
# the paper's 20 of 150 epochs) or off (dual-group softening).
BASE: dict[str, Any] = {
    "teacher.lr": 3e-3,
    "xvector.lr": 3e-3, "xvector.batch_size": 64, "xvector.kd_warmup_share": None,
    "resnet34.lr": 1e-2, "resnet34.batch_size": 32, "resnet34.kd_warmup_share": None,
    "campp.lr": 5e-3, "campp.batch_size": 32, "campp.kd_warmup_share": 0.5,
    "dkd.beta": 2.0, "dkd.temperature": 1.0,
    "trkd.lambda_f": 8.0, "trkd.tau_end": 0.05,
    "dualgroup.binary_entropy": None,
}

TUNING_JSON = DOCS / "tuning.json"


@dataclass(frozen=True)
class Tuning:
    """Where the settings come from: ``settings`` (every key of :data:`BASE`), ``tuned``
    (the keys docs/tuning.json chose on dev) and one sentence for reports."""

    settings: dict[str, Any]
    tuned: tuple[str, ...]
    source: str


def load_tuning(path: Path = TUNING_JSON) -> Tuning:
    """:data:`BASE` with the values ``path`` (``scripts/tune.py``'s tuning.json) chose on the
    dev split; without the file, :data:`BASE` alone, and the sentence says so.

    >>> load_tuning(Path("/nonexistent.json")).tuned
    ()
    """
    if not path.exists():
        return Tuning(dict(BASE), (), f"not tuned on dev ({path.name} absent): the values "
                      "used before dev tuning existed (docs/recipe_history.md, superseded)")
    saved = json.loads(path.read_text())
    chosen = {k: v for k, v in saved["chosen"].items() if k in BASE}
    unknown = sorted(set(saved["chosen"]) - set(BASE))
    if unknown:
        raise ValueError(f"{path}: settings {unknown} are not tunable here (known: {sorted(BASE)})")
    kept = sorted(set(BASE) - set(chosen))
    source = (f"chosen on the dev split by scripts/tune.py ({path.name}, {saved['written']}, "
              f"{saved['grid']} grid, {saved['seeds']} seeds per cell)"
              + (f"; not tuned there, kept as before: {', '.join(kept)}" if kept else ""))
    return Tuning({**BASE, **chosen}, tuple(sorted(chosen)), source)


# architecture -> --arch-opt values, how reports name the width, crop_s, constant LR after
# the warm-up (ResNet34 and CAM++: these narrow nets separate speakers only after ~150-200
# steps, and an LR decaying over a 200-300-step run ends it before they do) or the trainer's
# 100x decay (x-vector)
ARCHS: dict[str, tuple[tuple[str, ...], str, float, bool]] = {
    "xvector": (("channels=128", "embed_dim=128"), "x-vector 128 ch", 0.0035, False),
    "resnet34": (("base_width=8", "embed_dim=128"), "ResNet34 width 8", 0.031, True),
    "campp": (("growth_rate=8", "init_channels=32", "fcm_channels=8", "embed_dim=128"),
              "CAM++ growth 8 / 32 initial channels", 0.028, True),
}


def _g(value: float) -> str:
    return f"{value:g}"


def recipes(settings: dict[str, Any]) -> dict[str, StudentRecipe]:
    """name -> student under ``settings`` (every key of :data:`BASE`): AdamW at the
    setting's LR (constant after the warm-up, or decaying 100x), its batch size and KD
    warm-up share."""
    out = {}
    for arch, (opts, width, crop_s, constant) in ARCHS.items():
        lr = _g(settings[f"{arch}.lr"])
        optimizer = ("--optimizer", "adamw", "--lr", lr, *(("--final-lr", lr) if constant else ()))
        out[arch] = StudentRecipe(arch, opts, int(settings[f"{arch}.batch_size"]), optimizer,
                                  width, crop_s=crop_s,
                                  kd_warmup_share=settings[f"{arch}.kd_warmup_share"])
    return out


def losses(settings: dict[str, Any]) -> dict[str, list[str]]:
    """The demo's and the tuning grid's losses under ``settings``: name -> stage-2 flags
    (the demo runs ce, kd and dkd; the grid ce, dkd, trkd and dualgroup). dkd, trkd and
    dualgroup take ``settings``; ce and kd are fixed. ``make results`` names its losses and
    controls in :data:`LOSSES` and :data:`CHOSEN`."""
    entropy = settings["dualgroup.binary_entropy"]
    return {
        "ce": ["--loss", "ce"],
        "kd": ["--loss", "kd", "--temperature", "1"],
        "dkd": ["--loss", "dkd", "--alpha", "1", "--beta", _g(settings["dkd.beta"]),
                "--temperature", _g(settings["dkd.temperature"])],
        "trkd": ["--loss", "trkd", "--trkd-lambda-f", _g(settings["trkd.lambda_f"]),
                 "--trkd-tau-end", _g(settings["trkd.tau_end"])],
        "dualgroup": ["--loss", "dualgroup", *(() if entropy is None else
                                               ("--dualgroup-binary-entropy", _g(entropy)))],
    }


def teacher_recipe(settings: dict[str, Any]) -> list[str]:
    """The teacher's ``stage1_teacher.train`` flags under ``settings``: the demo-teacher
    preset (the demo preset's ECAPA, C=256, 2-s crops, AdamW at batch 32) at the setting's
    peak LR.

    >>> teacher_recipe(BASE)
    ['--preset', 'demo-teacher', '--lr', '0.003']
    """
    return ["--preset", "demo-teacher", "--lr", _g(settings["teacher.lr"])]


TUNING = load_tuning()
RECIPES = recipes(TUNING.settings)
TEACHER_RECIPE = teacher_recipe(TUNING.settings)
# the demo's and the tuning grid's losses, under the settings chosen on dev
TUNED_LOSSES = losses(TUNING.settings)


# Distillation losses at the papers' defaults: name -> stage-2 flags (make results reports each
# beside the setting chosen on dev, so neither is a strawman). dkd is the paper's (alpha 1,
# beta 2, T 1).
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
ON_DEV = "chosen on the dev split (docs/tuning.json)"


def chosen_settings(tuning: Tuning) -> dict[str, Chosen | None]:
    """role -> the setting of that loss chosen on dev (from ``tuning``), or, for a loss the
    tuning has not covered, a labelled placeholder (DKD at beta 8, T 4; TRKD at lambda_F 2)
    or None (dual-group)."""
    s, tuned = tuning.settings, set(tuning.tuned)
    dkd = Chosen("dkd-b8t4", ("--loss", "dkd", "--alpha", "1", "--beta", "8",
                              "--temperature", "4"), PLACEHOLDER)
    if tuned & {"dkd.beta", "dkd.temperature"}:
        beta, temp = _g(s["dkd.beta"]), _g(s["dkd.temperature"])
        dkd = Chosen(f"dkd-b{beta}t{temp}", ("--loss", "dkd", "--alpha", "1", "--beta", beta,
                                             "--temperature", temp), ON_DEV)
    trkd = Chosen("trkd-lf2", ("--loss", "trkd", "--trkd-lambda-f", "2"), PLACEHOLDER)
    if tuned & {"trkd.lambda_f", "trkd.tau_end"}:
        lf, tau = _g(s["trkd.lambda_f"]), _g(s["trkd.tau_end"])
        trkd = Chosen(f"trkd-lf{lf}-te{tau}", ("--loss", "trkd", "--trkd-lambda-f", lf,
                                               "--trkd-tau-end", tau), ON_DEV)
    entropy = s["dualgroup.binary_entropy"]
    dual = None
    if "dualgroup.binary_entropy" in tuned and entropy is not None:
        dual = Chosen(f"dualgroup-h{_g(entropy)}", ("--loss", "dualgroup",
                                                    "--dualgroup-binary-entropy", _g(entropy)),
                      ON_DEV)
    return {"dkd": dkd, "trkd": trkd, "dualgroup": dual}


# The settings dev tuning chose, in this one place (the plan and the report read them here).
CHOSEN: dict[str, Chosen | None] = chosen_settings(TUNING)


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


def student_argv(cache: Path, data: list[str], arch: str, loss: str, epochs: int, seed: int,
                 out: Path, settings: dict[str, Any] | None = None) -> list[str]:
    """The ``stage2_student.train`` command of one student of the demo, ``make results`` or
    the tuning grid (``settings``: other values than :data:`TUNING`'s)."""
    recipe = RECIPES[arch] if settings is None else recipes(settings)[arch]
    loss_argv = TUNED_LOSSES[loss] if settings is None else losses(settings)[loss]
    return ["-m", "stage2_student.train", "--cache", str(cache), *data, *recipe.argv(),
            *loss_argv, *recipe.length_argv(epochs), "--seed", str(seed), "--workers", "0",
            "--out", str(out)]


def teacher_argv(data: list[str], epochs: int, out: Path, seed: int | None = None,
                 settings: dict[str, Any] | None = None) -> list[str]:
    """The ``stage1_teacher.train`` command of a teacher of ``make results`` or the tuning
    grid (``settings``: other values than :data:`TUNING`'s; ``seed``: the trainer's default
    when None). No evaluation (the models are scored together afterwards) and no loader
    worker: the model gets both cores (50 s per demo epoch against 70 s)."""
    return ["-m", "stage1_teacher.train",
            *(TEACHER_RECIPE if settings is None else teacher_recipe(settings)), *data,
            "--epochs", str(epochs), "--eval-every", "0", "--workers", "0",
            *([] if seed is None else ["--seed", str(seed)]), "--out", str(out)]


def describe() -> str:
    """One line per student for the reports."""
    return "; ".join(f"{r.width}: {' '.join(r.optimizer)}, batch {r.batch_size}"
                     + ("" if r.kd_warmup_share is None
                        else f", KD warm-up over {r.kd_warmup_share:.0%} of the run")
                     for r in RECIPES.values())
