"""The runs of ``make results``, section by section, with their estimated costs.

:class:`Plan` turns a :class:`experiments.size.Size` into the public command lines
(``speaker.toy``, ``stage1_teacher.train``, ``stage1_teacher.dump``,
``stage2_student.train``, ``scripts/speaker_subset.py``, ``scripts/experiment_costs.py``),
one :class:`experiments.runs.Run` per folder, each after the runs it needs.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from experiments.paths import ROOT, SCRIPTS
from experiments.recipes import (
    CHOSEN,
    RECIPES,
    RUN_START_S,
    TEACHER_UTT_S,
    kd_control,
    loss_flags,
    teacher_argv,
    training_data_argv,
)
from experiments.results import tail
from experiments.runs import Run
from experiments.size import Size

# full: ResNet34 and CAM++ train 1 epoch, 250 steps at batch 32 over 500 speakers (the
# demo's learn in 200-300). Section 2 runs on half of each speaker's utterances (its online
# students, 3 seeds at 1x and 3x the run length, are most of its cost): --plan puts the whole
# at ~3.6 h from nothing on the 2-core machine (the budget: 5 h).
SIZES = {
    "full": Size(speakers=500, utts_per_speaker=8, test_speakers=160, test_utts_per_speaker=12,
                 session_variation=0.7, teacher_epochs=6, weak_teacher_epochs=2,
                 crop_seconds=1.0, views=2, topk=32, views_grid=(2, 4, 8),
                 topk_grid=(4, 8, 32),
                 student_epochs=(("xvector", 4), ("resnet34", 1), ("campp", 1)), seeds=3,
                 online_share=0.5, length_factors=(1, 3),
                 spk_shares=(0.25, 0.5, 1.0), spk_utterances=0.25, cost_batch=4),
    # one seed: the smoke run checks the plumbing (the seed resampling has unit tests)
    "quick": Size(speakers=16, utts_per_speaker=8, test_speakers=8, test_utts_per_speaker=4,
                  session_variation=0.7, teacher_epochs=2, weak_teacher_epochs=1,
                  crop_seconds=1.0, views=2, topk=8, views_grid=(2, 4),
                  topk_grid=(4, 8),
                  student_epochs=(("xvector", 2), ("resnet34", 1), ("campp", 1)), seeds=1,
                  online_share=0.5, length_factors=(1, 3),
                  spk_shares=(0.5, 1.0), spk_utterances=0.5, cost_batch=2,
                  # a tiny WavLM: the smoke run checks the plumbing, not the paper's cost
                  paper_opts=("encoder_embed_dim=32", "encoder_num_layers=2",
                              "encoder_num_heads=2", "encoder_ff_interm_features=64",
                              "encoder_pos_conv_kernel=16", "encoder_pos_conv_groups=4",
                              "extractor_conv_channels=32", "ecapa_channels=64")),
}


SHORT = {"xvector": "xv", "resnet34": "r34", "campp": "campp"}


def student_losses() -> dict[str, list[str]]:
    """Section 1's losses per student: every student gets CE, embedding KD, KD, KD weighted
    like DKD's total, DKD, the chosen DKD setting and its KD control (same temperature and
    total weight); the x-vector also TRKD and dual-group, the papers' defaults and the
    chosen settings (``recipes.CHOSEN``)."""
    dkd = CHOSEN["dkd"]
    controls = ["ce", "emb", "kd", "kd-w3", "dkd"]
    if dkd is not None:
        controls += [dkd.tag, kd_control(dkd).tag]
    extra = ["trkd", *([CHOSEN["trkd"].tag] if CHOSEN["trkd"] else []),
             "dualgroup", *([CHOSEN["dualgroup"].tag] if CHOSEN["dualgroup"] else [])]
    return {"xvector": controls + extra, "resnet34": controls, "campp": controls}

# Seconds per crop on the 2-core reference machine (the demo's measured budget in
# the demo (experiments.demo), docs/bench_*.md; a student's step: recipes.StudentRecipe.crop_s): the
# demo teacher's training on a 2-s crop (both cores, replay and augmentation included) and
# its forward on a 1-s crop.
# --plan multiplies them by the crops each run sees; a --quick run's measured times are
# printed beside them for comparison.
# Evaluation: seconds per second of test audio, per model (forward only), plus the fbank of
# each pass over the test set shared by the models evaluated together (about 15 passes), and
# per test-audio second the model's 1,000 speaker-bootstrap EERs (~2 s per model at 160
# test speakers).
COST = {"teacher_crop": TEACHER_UTT_S, "teacher_forward": 0.0075, "replay": 0.004,
        "start": RUN_START_S, "corpus_utt": 0.03,
        "eval_xvector": 0.001, "eval_resnet34": 0.007, "eval_campp": 0.004,
        "eval_teacher": 0.004, "eval_fbank": 0.004, "eval_passes": 15,
        "eval_boot": 0.0001}


# resolved when a dump starts, from its --train manifest: C-1, and min(k, C-1) for a cache of
# k speakers over a corpus (or subset) that may have fewer
CLASSES_MINUS_ONE = "{C-1}"
TEACHER_EMBED_DIM = "{teacher-embed-dim}"  # resolved when the run starts, from its cache


class Options:
    """Which optional flags the installed CLIs have (the plan adapts, the report says so)."""

    kd_weight: bool

    def __init__(self) -> None:
        def helptext(*module: str) -> str:
            return subprocess.run([sys.executable, "-m", *module, "--help"], capture_output=True,
                                  text=True, cwd=ROOT).stdout

        self.kd_weight = "--kd-weight" in helptext("stage2_student.train")


class Plan:
    """The runs of every section, in an order where each comes after what it needs."""

    def __init__(self, size: Size, data: Path | None, out: Path, opts: Options) -> None:
        self.size, self.opts, self.out = size, opts, out
        self.runs: list[Run] = []
        self.synthetic = data is None
        self.root = data if data is not None else out / "runs" / "corpus" / "data"
        self.train = self.root / "train" / "manifest.jsonl"
        self.classes: int | None = None  # C, known once the corpus exists (k = C-1)

    def train_data(self, train: Path | None) -> list[str]:
        """--train (the corpus' or a subset) and its noise; the toy corpus always has both."""
        return training_data_argv(self.root, train, noise_present=self.synthetic)

    def add(self, run: Run) -> Run:
        self.runs.append(run)
        return run

    def work(self, name: str) -> Path:
        return self.out / "runs" / name

    # ---- stage 0/1 ------------------------------------------------------------------------

    def corpus(self) -> None:
        s = self.size
        if not self.synthetic:
            return
        self.add(Run("corpus", "corpus", [
            "-m", "speaker.toy", "--speakers", str(s.speakers), "--seed", "0",
            "--utts-per-speaker", str(s.utts_per_speaker), "--test-speakers", str(s.test_speakers),
            "--test-utts-per-speaker", str(s.test_utts_per_speaker),
            "--session-variation", str(s.session_variation), "--workers", "2",
            "--out", str(self.work("corpus") / "data"), "--force"],
            est_s=COST["corpus_utt"] * (s.speakers * s.utts_per_speaker
                                        + s.test_speakers * s.test_utts_per_speaker),
            meta={"section": [0]}))

    @functools.cached_property
    def test_seconds(self) -> float:
        """Seconds of test audio (from the test manifest when it exists)."""
        test = self.root / "test" / "manifest.jsonl"
        if test.exists():
            from speaker.io.paths import load_manifest

            return sum(u.num_samples / u.sample_rate for u in load_manifest(test))
        s = self.size
        return 3.0 * s.test_speakers * s.test_utts_per_speaker

    @functools.cached_property
    def utterances(self) -> int:
        """Training utterances (from the manifest when it exists), for the estimates."""
        if self.train.exists():
            from speaker.io.paths import load_manifest

            return len(load_manifest(self.train))
        return self.size.speakers * self.size.utts_per_speaker

    def teacher(self, name: str, epochs: int, train: Path, deps: tuple[str, ...], share: float,
                section: list[int]) -> Run:
        crops = epochs * self.utterances * share
        return self.add(Run(
            name, "teacher", teacher_argv(self.train_data(train), epochs, self.work(name)), deps,
            est_s=COST["start"] + crops * COST["teacher_crop"]
            + self.test_seconds * (COST["eval_teacher"] + COST["eval_boot"]),
            meta={"section": section, "epochs": epochs, "train_share": share}))

    def dump(self, name: str, teacher: str, train: Path, views: int, topk: int | None,
             deps: tuple[str, ...], share: float, section: list[int],
             embeddings: bool = False, views_from: str | None = None) -> Run:
        """``topk=None``: every non-target speaker (C-1). ``views_from``: relabel that
        cache's rows (the same crops) instead of drawing views."""
        s = self.size
        rows = views * self.utterances * share
        k = f"{{min(C-1,{topk})}}" if topk is not None else CLASSES_MINUS_ONE
        label = str(topk) if topk is not None else "C-1"
        return self.add(Run(name, "dump", [
            "-m", "stage1_teacher.dump", "--teacher", str(self.work(teacher) / "model.pt"),
            *self.train_data(train), "--views-per-utt", str(views),
            "--crop-seconds", str(s.crop_seconds), "--topk", k, "--temperatures", "1,2,4",
            *(["--embeddings"] if embeddings else []),
            "--store-features",  # the many students read fbank instead of replaying crops
            *(["--views-from", str(self.work(views_from) / "logits.zarr")] if views_from else []),
            "--out", str(self.work(name) / "logits.zarr")],
            (teacher, *deps, *((views_from,) if views_from else ())),
            # the crops are rendered by a worker while the teacher runs: mostly overlapped
            est_s=COST["start"] + rows * (COST["teacher_forward"] + COST["replay"] / 4),
            meta={"section": section, "views": views, "topk": label, "teacher": teacher,
                  "train_share": share}))

    def student(self, name: str, cache: str, arch: str, loss: str, seed: int,
                section: list[int], topk: int | None = None, epochs: int | None = None,
                train: Path | None = None, share: float = 1.0, views: int | None = None,
                online: str | None = None, teacher: str = "teacher",
                fresh: bool = False) -> Run:
        s = self.size
        epochs = epochs or s.epochs(arch)
        views = views or s.views
        missing = "" if "--kd-weight" not in loss_flags()[loss] or self.opts.kd_weight else (
            "stage2_student.train has no --kd-weight: the weight-matched KD control cannot run")
        recipe = RECIPES[arch]
        opts = recipe.opts
        if loss == "emb":  # embedding KD needs the teacher's embedding size
            opts = (*[o for o in opts if not o.startswith("embed_dim=")],
                    f"embed_dim={TEACHER_EMBED_DIM}")
        argv = ["-m", "stage2_student.train", "--cache", str(self.work(cache) / "logits.zarr"),
                *self.train_data(train), *recipe.argv(opts),
                *loss_flags()[loss],
                *(["--topk", str(topk)] if topk is not None else []),
                *(["--online-teacher", str(self.work(online) / "model.pt")] if online else []),
                *(["--fresh-views"] if fresh else []),
                *recipe.length_argv(epochs),
                "--seed", str(seed), "--workers", "0", "--out", str(self.work(name))]
        crops = epochs * views * self.utterances * share
        # the live teacher's forward; fresh views are rendered too (the cache's are read)
        live = crops * (COST["teacher_forward"] + (COST["replay"] if fresh else 0.0)) \
            if online else 0.0
        return self.add(Run(name, "student", argv, (cache, *((online,) if online else ())),
                            est_s=recipe.train_seconds(crops) + live
                            + self.test_seconds * (COST[f"eval_{arch}"] + COST["eval_boot"]),
                            missing=missing,
                            meta={"section": section, "arch": arch, "loss": loss, "seed": seed,
                                  "topk": topk, "epochs": epochs, "views": views,
                                  "online": bool(online), "fresh_views": fresh,
                                  "cache": cache, "teacher": teacher,
                                  "train_share": share}))

    # ---- the sections ---------------------------------------------------------------------

    def subset(self, name: str, speakers: float, utterances: float, base: tuple[str, ...],
               section: list[int]) -> Path:
        """A training manifest of ``speakers`` of the speakers and ``utterances`` of all
        utterances (``experiments.speaker_subset``); -> its path."""
        sub = self.work(name) / "train.jsonl"
        self.add(Run(name, "subset", [
            str(SCRIPTS / "speaker_subset.py"), "--train", str(self.train),
            "--speakers", str(speakers), "--utterances", str(utterances), "--out", str(sub)],
            base, est_s=3.0, meta={"section": section, "share": speakers,
                                   "utterance_share": utterances}))
        return sub

    def build(self) -> list[Run]:
        """Every run: the teachers, dumps, subsets and measurements first (each takes both
        cores), then the students longest first (the last to finish leaves a lane idle)."""
        s = self.size
        students: list[Run] = []

        def student(*args, **kwargs) -> None:
            students.append(self.student(*args, **kwargs))
            self.runs.pop()

        self.corpus()
        base = ("corpus",) if self.synthetic else ()
        self.teacher("teacher", s.teacher_epochs, self.train, base, 1.0, [1, 2, 3, 5, 6])
        # the main cache keeps every non-target speaker: k' = 4, 8, 32 and C-1 are read from it
        self.dump("dump-main", "teacher", self.train, s.views, None, base, 1.0, [1, 2, 3, 5],
                  embeddings=True)
        # 1. every student, every loss and control
        for arch, losses in student_losses().items():
            for seed in range(s.seeds):
                for loss in losses:
                    student(f"{SHORT[arch]}-{loss}-s{seed}", "dump-main", arch, loss, seed,
                            [1, 3] if arch == "xvector" and loss in ("ce", "dkd") else [1],
                            topk=s.topk)
        # 2a. same views, the cache's k' against the live teacher's full logits (one seed)
        student("xv-dkd-online-s0", "dump-main", "xvector", "dkd", 0, [2], online="teacher")
        for k in s.topk_grid:
            if k != s.topk:
                student(f"xv-dkd-k{k}-s0", "dump-main", "xvector", "dkd", 0, [2], topk=k)
        student("xv-dkd-kall-s0", "dump-main", "xvector", "dkd", 0, [2])
        # 2b. cached at E views against online KD on fresh views, at 1x and 3x the run
        # length, on `online_share` of each speaker's utterances (the main teacher)
        half = self.subset("subset-half", 1.0, s.online_share, base, [2])
        for e in s.views_grid:
            self.dump(f"dump-half-E{e}", "teacher", half, e, s.topk, ("subset-half",),
                      s.online_share, [2, 4, 6])
        crops_per_utt = s.epochs("xvector") * s.views  # the present run length
        for f in s.length_factors:
            for seed in range(s.seeds):
                for e in s.views_grid:
                    student(f"xv-dkd-half-E{e}-x{f}-s{seed}", f"dump-half-E{e}", "xvector",
                            "dkd", seed, [2, 4, 6], epochs=max(1, f * crops_per_utt // e),
                            train=half, share=s.online_share, views=e)
                student(f"xv-dkd-half-fresh-x{f}-s{seed}", f"dump-half-E{s.views}", "xvector",
                        "dkd", seed, [2, 6], epochs=f * s.epochs("xvector"), train=half,
                        share=s.online_share, online="teacher", fresh=True)
        # 3. more speakers with all their utterances (more data), a teacher per subset; the
        # whole set is section 1's teacher and students
        for share in s.spk_shares:
            if share >= 1.0:
                continue
            tag = f"spk{round(100 * share)}-all"
            sub = self.subset(f"subset-{tag}", share, share, base, [3])
            self.teacher(f"teacher-{tag}", s.teacher_epochs, sub, (f"subset-{tag}",), share, [3])
            self.dump(f"dump-{tag}", f"teacher-{tag}", sub, s.views, s.topk,
                      (f"subset-{tag}",), share, [3])
            for seed in range(s.seeds):
                for loss in ("ce", "dkd"):
                    student(f"xv-{loss}-{tag}-s{seed}", f"dump-{tag}", "xvector", loss, seed,
                            [3], train=sub, share=share, teacher=f"teacher-{tag}")
        # 3, second table: shares of the speakers at the same number of utterances; epochs
        # scaled so every student takes as many steps as section 1's
        for share in s.spk_shares:
            tag = f"spk{round(100 * share)}"
            sub = self.subset(f"subset-{tag}", share, s.spk_utterances, base, [3])
            self.teacher(f"teacher-{tag}", s.teacher_epochs, sub, (f"subset-{tag}",),
                         s.spk_utterances, [3])
            self.dump(f"dump-{tag}", f"teacher-{tag}", sub, s.views, s.topk, (f"subset-{tag}",),
                      s.spk_utterances, [3])
            for seed in range(s.seeds):
                for loss in ("ce", "dkd"):
                    student(f"xv-{loss}-{tag}-s{seed}", f"dump-{tag}", "xvector", loss,
                            seed, [3], train=sub, share=s.spk_utterances,
                            epochs=max(1, round(s.epochs("xvector") / s.spk_utterances)),
                            teacher=f"teacher-{tag}")
        # 5. a less confident teacher: fewer epochs; its labels on the main cache's crops
        self.teacher("teacher-weak", s.weak_teacher_epochs, self.train, base, 1.0, [5])
        self.dump("dump-weak", "teacher-weak", self.train, s.views, s.topk, base, 1.0, [5],
                  views_from="dump-main")
        for seed in range(s.seeds):
            for loss in ("ce", "kd", "dkd"):
                student(f"xv-{loss}-weak-s{seed}", "dump-weak", "xvector", loss, seed, [5],
                        teacher="teacher-weak")
        # 6. teacher forward (paper-sized and ours) against a student step, side by side
        self.add(Run("costs", "measure", [
            str(SCRIPTS / "experiment_costs.py"), "--teacher",
            str(self.work("teacher") / "model.pt"), *RECIPES["xvector"].model_argv(),
            "--batch", str(s.cost_batch), "--crop-seconds", str(s.crop_seconds),
            *[a for o in s.paper_opts for a in ("--paper-opt", o)]], ("teacher",),
            # build ~20 s; 4 timed calls of each model, the paper forward ~3 s per crop
            est_s=20.0 + 4 * 3.0 * s.cost_batch, meta={"section": [6]}))
        self.runs += sorted(students, key=lambda r: -r.est_s)
        tail.add_runs(self)  # 7. the sampled tail (experiments/results/tail.py)
        return self.runs
