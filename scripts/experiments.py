"""`make results`: the paper's claims and the cache's worth, measured with seeds.

Drives the public command lines (``speaker.toy``, ``stage1_teacher.train``,
``stage1_teacher.dump``, ``stage2_student.train``, ``store stats``) as subprocesses, one run
per folder, and rebuilds docs/RESULTS.md and its plots from the runs' results:

1. loss comparison from one cache (x-vector 3 seeds; ResNet34 and CAM++ 2 seeds);
2. cached vs online KD (k = 4, 8, 32, C-1) with wall time per epoch;
3. 25 / 50 / 100 % of the training speakers at the same number of utterances;
4. views per utterance E = 1, 2, 4, 8;
5. teacher confidence (cache statistics; a less-trained teacher; T = 4);
6. costs: a dump plus N cached students against N online students, and the same projected
   to a paper-sized teacher (WavLM Large + ECAPA) timed against a student step here.

Resumable: a finished run (``RESULTS/runs/<run>/result.json``) is skipped, an interrupted
one continued with ``--resume``; the result files are small and may be committed, and
``--report-only`` rewrites the report from them (a later session can finish a partial run).
Nothing depends on the synthetic corpus: ``--data ROOT`` runs on any prepared data root;
without it the synthetic corpus is generated first. The last line printed is a JSON summary.

\b
Examples:
    python scripts/experiments.py --out results_out                # what `make results` runs
    python scripts/experiments.py --plan                           # runs and estimated minutes
    python scripts/experiments.py --data data/vox --out vox_results --results docs/results-vox
    python scripts/experiments.py --report-only                    # RESULTS.md from results
    python scripts/experiments.py --quick --out /tmp/q     # tiny sizes; results in /tmp/q
"""

from __future__ import annotations

import functools
import json
import logging
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).parent))
from experiment_report import write_report  # noqa: E402
from experiment_runs import Layout, Run, Scheduler, evaluate_models_of, todo, write_json  # noqa: E402
from recipes import RECIPES, RUN_START_S, TEACHER_RECIPE, training_data_argv  # noqa: E402

log = logging.getLogger("experiments")
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Size:
    """Every setting of the experiment (recorded in the report)."""

    # synthetic corpus (ignored with --data)
    speakers: int
    utts_per_speaker: int
    test_speakers: int
    test_utts_per_speaker: int
    session_variation: float
    # teachers: the demo recipe (scripts/recipes.py, ECAPA C=256); the weak one trains fewer epochs
    teacher_epochs: int
    weak_teacher_epochs: int
    # caches: 1-s crops (the students' crop), E views, k, temperature grid
    crop_seconds: float
    views: int
    topk: int
    views_grid: tuple[int, ...]
    topk_grid: tuple[int, ...]  # + C-1 (every non-target speaker)
    # students: the demo's widths and recipes (scripts/recipes.py), epochs per
    # architecture at E = views
    student_epochs: tuple[tuple[str, int], ...]
    xvector_seeds: int
    other_seeds: int
    # section 3: shares of the speakers, all at `spk_utterances` of the utterances
    spk_shares: tuple[float, ...]
    spk_utterances: float
    # section 6: crops per timed call; wavlm_ecapa options (none: the paper's size)
    cost_batch: int
    paper_opts: tuple[str, ...] = ()

    def epochs(self, arch: str) -> int:
        return dict(self.student_epochs)[arch]


# full: ResNet34 and CAM++ train 1 epoch, 250 steps at batch 32 over 500 speakers (the
# demo's learn in 200-300): at 2 epochs `--plan` said 170 min from nothing, at 1 ~145.
SIZES = {
    "full": Size(speakers=500, utts_per_speaker=8, test_speakers=160, test_utts_per_speaker=12,
                 session_variation=0.7, teacher_epochs=6, weak_teacher_epochs=2,
                 crop_seconds=1.0, views=2, topk=32, views_grid=(1, 2, 4, 8),
                 topk_grid=(4, 8, 32),
                 student_epochs=(("xvector", 4), ("resnet34", 1), ("campp", 1)),
                 xvector_seeds=3, other_seeds=2,
                 spk_shares=(0.25, 0.5, 1.0), spk_utterances=0.25, cost_batch=4),
    "quick": Size(speakers=16, utts_per_speaker=8, test_speakers=8, test_utts_per_speaker=4,
                  session_variation=0.7, teacher_epochs=2, weak_teacher_epochs=1,
                  crop_seconds=1.0, views=2, topk=8, views_grid=(1, 2),
                  topk_grid=(4, 8),
                  student_epochs=(("xvector", 2), ("resnet34", 1), ("campp", 1)),
                  xvector_seeds=2, other_seeds=1,
                  spk_shares=(0.5, 1.0), spk_utterances=0.5, cost_batch=2,
                  # a tiny WavLM: the smoke run checks the plumbing, not the paper's cost
                  paper_opts=("encoder_embed_dim=32", "encoder_num_layers=2",
                              "encoder_num_heads=2", "encoder_ff_interm_features=64",
                              "encoder_pos_conv_kernel=16", "encoder_pos_conv_groups=4",
                              "extractor_conv_channels=32", "ecapa_channels=64")),
}

SHORT = {"xvector": "xv", "resnet34": "r34", "campp": "campp"}
# The losses of section 1: name -> stage-2 flags. dkd is the paper's (alpha 1, beta 2, T 1).
LOSSES = {
    "ce": ["--loss", "ce"],
    "emb": ["--loss", "emb"],
    "kd": ["--loss", "kd", "--temperature", "1"],
    "dkd": ["--loss", "dkd", "--alpha", "1", "--beta", "2", "--temperature", "1"],
    # controls: plain KD weighted like dkd's total (alpha + beta = 3), and dkd with beta = alpha
    "kd-w3": ["--loss", "kd", "--temperature", "1", "--kd-weight", "3"],
    "dkd-b1": ["--loss", "dkd", "--alpha", "1", "--beta", "1", "--temperature", "1"],
    # the setting later work compares with
    "dkd-b8t4": ["--loss", "dkd", "--alpha", "1", "--beta", "8", "--temperature", "4"],
    "trkd": ["--loss", "trkd"],
    "dualgroup": ["--loss", "dualgroup"],
}
XV_LOSSES = list(LOSSES)
OTHER_LOSSES = ["ce", "kd", "dkd", "trkd"]

# Seconds per crop on the 2-core reference machine (the demo's measured budget in
# scripts/demo.py, docs/bench_*.md; a student's step: recipes.StudentRecipe.crop_s): the
# demo teacher's training on a 2-s crop (both cores, replay and augmentation included) and
# its forward on a 1-s crop.
# --plan multiplies them by the crops each run sees; a --quick run's measured times are
# printed beside them for comparison.
# Evaluation: seconds per second of test audio, per model (forward only), plus the fbank of
# each pass over the test set shared by the models evaluated together (about 15 passes).
COST = {"teacher_crop": 0.027, "teacher_forward": 0.0075, "replay": 0.004,
        "start": RUN_START_S, "corpus_utt": 0.03,
        "eval_xvector": 0.001, "eval_resnet34": 0.007, "eval_campp": 0.004,
        "eval_teacher": 0.004, "eval_fbank": 0.004, "eval_passes": 15}


# resolved when a dump starts, from its --train manifest: C-1, and min(k, C-1) for a cache of
# k speakers over a corpus (or subset) that may have fewer
CLASSES_MINUS_ONE = "{C-1}"
TEACHER_EMBED_DIM = "{teacher-embed-dim}"  # resolved when the run starts, from its cache


class Options:
    """Which optional flags the installed CLIs have (the plan adapts, the report says so)."""

    kd_weight: bool

    def __init__(self) -> None:
        import subprocess

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
        return self.add(Run(name, "teacher", [
            "-m", "stage1_teacher.train", *TEACHER_RECIPE, *self.train_data(train),
            # no loader worker: the model gets both cores (50 s per demo epoch against 70 s)
            "--epochs", str(epochs), "--eval-every", "0", "--workers", "0",
            "--out", str(self.work(name))], deps,
            est_s=COST["start"] + crops * COST["teacher_crop"]
            + self.test_seconds * COST["eval_teacher"],
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
                online: str | None = None, teacher: str = "teacher") -> Run:
        s = self.size
        epochs = epochs or s.epochs(arch)
        views = views or s.views
        missing = "" if loss != "kd-w3" or self.opts.kd_weight else (
            "stage2_student.train has no --kd-weight: the weight-matched KD control cannot run")
        recipe = RECIPES[arch]
        opts = recipe.opts
        if loss == "emb":  # embedding KD needs the teacher's embedding size
            opts = (*[o for o in opts if not o.startswith("embed_dim=")],
                    f"embed_dim={TEACHER_EMBED_DIM}")
        argv = ["-m", "stage2_student.train", "--cache", str(self.work(cache) / "logits.zarr"),
                *self.train_data(train), *recipe.argv(opts),
                *LOSSES[loss],
                *(["--topk", str(topk)] if topk is not None else []),
                *(["--online-teacher", str(self.work(online) / "model.pt")] if online else []),
                *recipe.length_argv(epochs),
                "--seed", str(seed), "--workers", "0", "--out", str(self.work(name))]
        crops = epochs * views * self.utterances * share
        live = crops * (COST["teacher_forward"] + COST["replay"]) if online else 0.0
        return self.add(Run(name, "student", argv, (cache, *((online,) if online else ())),
                            est_s=recipe.train_seconds(crops) + live
                            + self.test_seconds * COST[f"eval_{arch}"], missing=missing,
                            meta={"section": section, "arch": arch, "loss": loss, "seed": seed,
                                  "topk": topk, "epochs": epochs, "views": views,
                                  "online": bool(online), "cache": cache, "teacher": teacher,
                                  "train_share": share}))

    # ---- the sections ---------------------------------------------------------------------

    def build(self) -> list[Run]:
        s = self.size
        self.corpus()
        base = ("corpus",) if self.synthetic else ()
        self.teacher("teacher", s.teacher_epochs, self.train, base, 1.0, [1, 2, 4, 5, 6])
        # the main cache keeps every non-target speaker: k' = 4, 8, 32 and C-1 are read from it
        self.dump("dump-main", "teacher", self.train, s.views, None, base, 1.0, [1, 2, 5],
                  embeddings=True)
        # 2. cached k=32 and online first: the two start together after the dump, so their
        # wall times per epoch are taken side by side (the same load on the machine)
        self.student("xv-dkd-s0", "dump-main", "xvector", "dkd", 0, [1, 2, 6], topk=s.topk)
        self.student("xv-dkd-online-s0", "dump-main", "xvector", "dkd", 0, [2, 6],
                     online="teacher")
        # 1. losses
        for seed in range(s.xvector_seeds):
            for loss in XV_LOSSES:
                if (loss, seed) != ("dkd", 0):
                    self.student(f"xv-{loss}-s{seed}", "dump-main", "xvector", loss, seed, [1],
                                 topk=s.topk)
        for arch in ("resnet34", "campp"):
            for seed in range(s.other_seeds):
                for loss in OTHER_LOSSES:
                    self.student(f"{SHORT[arch]}-{loss}-s{seed}", "dump-main", arch, loss, seed,
                                 [1], topk=s.topk)
        # 2. cached (k' < C-1 and C-1) vs online, same views and seed
        for k in s.topk_grid:
            if k != s.topk:
                self.student(f"xv-dkd-k{k}-s0", "dump-main", "xvector", "dkd", 0, [2], topk=k)
        self.student("xv-dkd-kall-s0", "dump-main", "xvector", "dkd", 0, [2])
        # 4. views per utterance at k=32 (same total number of training crops); the dumps
        # first: a dump takes both lanes, so one between two students would idle a lane
        for e in s.views_grid:
            self.dump(f"dump-E{e}", "teacher", self.train, e, s.topk, base, 1.0, [4, 6])
        for e in s.views_grid:
            epochs = max(1, s.epochs("xvector") * s.views // e)
            self.student(f"xv-dkd-E{e}-s0", f"dump-E{e}", "xvector", "dkd", 0, [4],
                         epochs=epochs, views=e)
        # 5. a less confident teacher: fewer epochs; the loss ordering under it
        self.teacher("teacher-weak", s.weak_teacher_epochs, self.train, base, 1.0, [5])
        self.dump("dump-weak", "teacher-weak", self.train, s.views, s.topk, base, 1.0, [5],
                  views_from="dump-main")  # the main students' crops, the weak teacher's labels
        for seed in range(s.other_seeds):
            for loss in ("ce", "kd", "dkd"):
                self.student(f"xv-{loss}-weak-s{seed}", "dump-weak", "xvector", loss, seed, [5],
                             teacher="teacher-weak")
        # 3. non-target speakers: shares of the speakers at the same number of utterances
        for share in s.spk_shares:
            tag = f"spk{round(100 * share)}"
            sub = self.work(f"subset-{tag}") / "train.jsonl"
            self.add(Run(f"subset-{tag}", "subset", [
                str(SCRIPTS / "speaker_subset.py"), "--train", str(self.train),
                "--speakers", str(share), "--utterances", str(s.spk_utterances),
                "--out", str(sub)], base, est_s=3.0, meta={"section": [3], "share": share}))
            self.teacher(f"teacher-{tag}", s.teacher_epochs, sub, (f"subset-{tag}",),
                         s.spk_utterances, [3])
            self.dump(f"dump-{tag}", f"teacher-{tag}", sub, s.views, s.topk, (f"subset-{tag}",),
                      s.spk_utterances, [3])
            for seed in range(s.other_seeds):
                for loss in ("ce", "dkd"):
                    # the same number of steps as section 1's students: epochs scale with 1/u
                    self.student(f"xv-{loss}-{tag}-s{seed}", f"dump-{tag}", "xvector", loss,
                                 seed, [3], train=sub, share=s.spk_utterances,
                                 epochs=max(1, round(s.epochs("xvector") / s.spk_utterances)),
                                 teacher=f"teacher-{tag}")
        # 6. teacher forward (paper-sized and ours) against a student step, side by side
        self.add(Run("costs", "measure", [
            str(SCRIPTS / "experiment_costs.py"), "--teacher",
            str(self.work("teacher") / "model.pt"), *RECIPES["xvector"].model_argv(),
            "--batch", str(s.cost_batch), "--crop-seconds", str(s.crop_seconds),
            *[a for o in s.paper_opts for a in ("--paper-opt", o)]], ("teacher",),
            # build ~20 s; 4 timed calls of each model, the paper forward ~3 s per crop
            est_s=20.0 + 4 * 3.0 * s.cost_batch, meta={"section": [6]}))
        return self.runs


# ---- running ---------------------------------------------------------------------------------

SOFT_LABEL_ARRAYS = {"utt", "start", "seed", "label", "target_logit", "topk_index", "topk_logit",
                     "tail_lse"}


class Experiment:
    """Turns finished commands into result files (the scheduler's callbacks)."""

    def __init__(self, plan: Plan, layout: Layout, lanes: int) -> None:
        self.plan, self.layout, self.lanes = plan, layout, lanes
        self.by_name = {r.name: r for r in plan.runs}
        self.plots = layout.results / "plots"

    def resolve(self, argv: list[str]) -> list[str]:
        """Fill in C-1 (from the run's --train manifest) and the teacher's embedding size
        (from its --cache)."""
        if "--topk" in argv and argv[argv.index("--topk") + 1].startswith("{"):
            from speaker.io.paths import load_manifest

            i = argv.index("--topk") + 1
            c = len(load_manifest(Path(argv[argv.index("--train") + 1])).speakers)
            cap = re.fullmatch(r"\{min\(C-1,(\d+)\)\}", argv[i])
            k = min(c - 1, int(cap.group(1))) if cap else c - 1
            argv = [*argv[:i], str(k), *argv[i + 1:]]
        dim_opt = f"embed_dim={TEACHER_EMBED_DIM}"
        if dim_opt in argv:
            spec = self._cli_json("store", "inspect", argv[argv.index("--cache") + 1],
                                  "--json")["spec"]
            argv = [f"embed_dim={spec['embedding_dim']}" if a == dim_opt else a for a in argv]
        return argv

    def _cli_json(self, *args: str) -> dict:
        import subprocess

        out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                             cwd=ROOT, check=True).stdout
        return json.loads(out)

    def _base(self, run: Run, wall: float, cpu: float) -> dict:
        started = json.loads((self.layout.work(run.name) / "run.json").read_text())
        return {"name": run.name, "kind": run.kind, "meta": run.meta,
                "command": started["command"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "resumed": "--resume" in started["command"],
                "epochs_done_at_start": started.get("epochs_done_at_start", 0)}

    def finish(self, run: Run, wall: float, cpu: float) -> None:
        res = self._base(run, wall, cpu)
        work = self.layout.work(run.name)
        if run.kind in ("teacher", "student"):
            if run.kind == "student":  # which teacher's cache it learnt from (see the report)
                dump = self.layout.result(run.meta["cache"]) or {}
                res["teacher_sha256"] = dump.get("teacher_sha256")
            write_json(self.layout.trained(run.name), res)  # evaluated when the lanes are idle
            return
        if run.kind == "corpus":
            res["corpus"] = json.loads((work / "data" / "toy.json").read_text())
        elif run.kind == "subset":
            from speaker.io.paths import load_manifest

            sub = load_manifest(work / "train.jsonl")
            res.update(utterances=len(sub), speakers=len(sub.speakers))
        elif run.kind == "dump":
            cache = str(work / "logits.zarr")
            self.plots.mkdir(parents=True, exist_ok=True)
            res["stats"] = self._cli_json("store", "stats", cache, "--json", "--plot",
                                          str(self.plots / f"{run.name}-stats.png"))
            info = self._cli_json("store", "inspect", cache, "--json")
            res["rows"] = info["written_rows"]
            res["k"] = info["spec"]["k"]
            res["classes"] = info["spec"]["num_classes"]
            res["teacher_sha256"] = info["spec"]["teacher"]["checkpoint_sha256"]
            res["stored_bytes"] = info["stored_bytes"]
            res["soft_label_bytes"] = sum(a["stored_bytes"] for a in info["arrays"]
                                          if a["name"] in SOFT_LABEL_ARRAYS)
        elif run.kind == "measure":
            lines = (work / "log.txt").read_text().strip().splitlines()
            res["measured"] = json.loads(lines[-1])
        write_json(self.layout.result_path(run.name), res)

    def evaluate(self) -> None:
        """Evaluate every trained, unevaluated model in one pass over the test audio."""
        import torch

        from speaker.io.paths import DataPaths

        names = [r.name for r in self.plan.runs if r.kind in ("teacher", "student")
                 and self.layout.trained(r.name).exists()
                 and self.layout.result(r.name) is None]
        if not names:
            return
        log.info("evaluating %d models: %s", len(names), ", ".join(names))
        torch.set_num_threads(self.lanes)
        evals = evaluate_models_of(self.layout, names, DataPaths(data=self.plan.root))
        for name in names:
            res = json.loads(self.layout.trained(name).read_text())
            # the epochs this attempt ran (wall_s is the last attempt's)
            epochs = (res["meta"].get("epochs") or 1) - res.get("epochs_done_at_start", 0)
            res.update(evals[name], wall_s_per_epoch=round(res["wall_s"] / max(epochs, 1), 2))
            write_json(self.layout.result_path(name), res)


def record_session(results: Path, wall: float) -> None:
    """Append this invocation's wall time to RESULTS/sessions.json (the measured total)."""
    path = results / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"ended": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                     "wall_s": round(wall, 1)})
    write_json(path, sessions)


def print_plan(plan: Plan, layout: Layout, lanes: int) -> None:
    """Runs per section, estimated minutes left (students on ``lanes`` lanes) and what is
    done. Once runs of a kind have finished, the estimates of that kind are scaled by their
    measured / estimated wall time (shown as the calibration)."""
    runs = plan.runs
    measured: dict[str, list[float]] = {}
    for r in runs:
        res = layout.result(r.name)
        if res is not None and r.est_s > 0:
            m = measured.setdefault(r.kind, [0.0, 0.0])
            m[0] += res["wall_s"]
            m[1] += r.est_s
    scale = {k: w / e for k, (w, e) in measured.items()}
    sections: dict[int, list[Run]] = {}
    for r in runs:
        sections.setdefault(r.meta["section"][0], []).append(r)
    total = 0.0
    click.echo(f"{'section':<9}{'runs':>5}{'done':>6}{'left':>6}{'est. min left':>15}")
    for sec in sorted(sections):
        rs = sections[sec]
        left = [r for r in rs if layout.result(r.name) is None and not r.missing]
        done = sum(layout.result(r.name) is not None for r in rs)
        est = sum(r.est_s * scale.get(r.kind, 1.0) / (lanes if r.kind == "student" else 1)
                  for r in left) / 60
        total += est
        click.echo(f"{sec:<9}{len(rs):>5}{done:>6}{len(left):>6}{est:>15.1f}")
    models = sum(r.kind in ("teacher", "student") and layout.result(r.name) is None
                 and not r.missing for r in runs)
    fbank = COST["eval_passes"] * plan.test_seconds * COST["eval_fbank"] / 60 if models else 0
    click.echo(f"{'test fbank':<27}{fbank:>15.1f}   ({plan.test_seconds / 60:.0f} min of test "
               f"audio, ~{COST['eval_passes']} evaluation passes)")
    click.echo(f"{'total':<27}{total + fbank:>15.1f}   (2-core reference costs: COST in "
               "scripts/experiments.py" + (", calibrated by finished runs: " + ", ".join(
                   f"{k} x{v:.2f}" for k, v in scale.items()) if scale else "") + ")")
    for r in runs:
        if r.missing:
            click.echo(f"cannot run {r.name}: {r.missing}")


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), default=Path("results_out"),
              show_default=True, help="Working folder: corpus, checkpoints, caches, logs.")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
              help="Kept results: runs/<run>/result.json, plots/, sessions.json "
              "[default: docs/results; with --quick: OUT/results].")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="The Markdown report written from the results "
              "[default: docs/RESULTS.md; with --quick: OUT/RESULTS.md].")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Prepared data root (train/, test/, musan/, rirs/); "
              "default: generate the synthetic corpus into OUT.")
@click.option("--quick", is_flag=True, help="Tiny sizes (minutes): a smoke run of every section.")
@click.option("--lanes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Students trained at once (one thread each); teachers and dumps use all.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Print the runs per section with estimated minutes, run nothing.")
@click.option("--report-only", is_flag=True, help="Rewrite the report from the kept results.")
def main(out: Path, results_dir: Path | None, report: Path | None, data: Path | None, quick: bool, lanes: int,
         plan_only: bool, report_only: bool) -> None:
    """Run the experiments (resuming), then write the report and print the JSON summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s experiments: %(message)s",
                        datefmt="%H:%M:%S")
    size = SIZES["quick" if quick else "full"]
    # a smoke run never writes over the kept results of the real one
    results_dir = results_dir or (out / "results" if quick else ROOT / "docs" / "results")
    report = report or (out / "RESULTS.md" if quick else ROOT / "docs" / "RESULTS.md")
    plan = Plan(size, data.resolve() if data else None, out.resolve(), Options())
    runs = plan.build()
    layout = Layout(out.resolve(), results_dir.resolve())
    settings = {"size": "quick" if quick else "full", **asdict(size),
                "data": str(data) if data else "synthetic (speaker.toy)", "lanes": lanes,
                "students": {a: asdict(r) for a, r in RECIPES.items()}, "losses": LOSSES,
                "xv_losses": XV_LOSSES, "other_losses": OTHER_LOSSES, "short": SHORT}
    if plan_only:
        print_plan(plan, layout, lanes)
        return
    failed: list[str] = []
    if not report_only:
        exp = Experiment(plan, layout, lanes)
        sched = Scheduler(layout, lanes, exp.finish, exp.evaluate, exp.resolve)
        started = sched.clock.now()  # the session's time, less any time it was stopped

        def stop(signum: int, frame: object) -> None:
            log.info("stopped by signal %d: rerun the same command to resume", signum)
            sched.stop()
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        try:
            failed = sched.run_all(todo(runs, layout))
        except KeyboardInterrupt:
            sched.stop()
            raise
        finally:
            record_session(layout.results, sched.clock.now() - started)
    summary = write_report(runs, layout, settings, report)
    if failed:
        click.echo(f"error: runs failed or not run: {', '.join(failed)} (logs under "
                   f"{layout.out / 'runs'}); rerun to resume", err=True)
    click.echo(json.dumps(summary))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
