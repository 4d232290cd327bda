"""How much of a trained teacher's non-target distribution the top-k cache keeps, and how far
the cached KD/DKD loss is from the full-logit loss, for k in {4, 8, 16, 32, C-1} and T in
{1, 2, 4}.

Builds a small demo-like setup in ``--work`` (reused when it is there): a toy corpus, a
teacher trained with AAM softmax, a weaker student (the same recipe, smaller and for one
epoch: any student's logits will do, the question is what the cache loses), and the
teacher's cache at k = C - 1 (every non-target kept, float16, as the dump writes it). Then
every cached row is replayed, both networks are run on the exact crop, and for each
(k, T):

- ``kept``: non-target probability mass the k cached speakers hold at T, from the teacher's
  full logits (mean over rows; 1 - kept is what the tail bucket merges);
- ``DKD gap`` / ``KD gap``: (cached loss - full-logit loss) / full-logit loss, the cached loss
  from the stored rows folded to k (kernel + losses, as training computes it), the full one
  from the teacher's fresh logits (alpha 1, beta 2; the --kd-logits margin convention, the
  default); negative means the cache under-counts;
- ``grad cos``: cosine between the two losses' gradients with respect to the student's
  logits (DKD).

Writes docs/topk_coverage.md and ends with one JSON line (the k=32 gaps).

\b
Examples:
    python scripts/topk_coverage.py                         # ~10 min on 1 core
    python scripts/topk_coverage.py --work /tmp/cov --out /tmp/topk_coverage.md
    python scripts/topk_coverage.py --from-demo demo_out --work /tmp/cov-demo   # demo teacher
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

from experiments.machine import machine
from experiments.markdown import write_atomic
from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.models.checkpoint import load_checkpoint
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from stage1_teacher import dump
from stage1_teacher.train import resolve_config, train_teacher
from stage2_student.kernels import teacher_probs
from stage2_student.losses import dkd_loss, full_logit_dkd_loss, full_logit_kd_loss, kd_loss
from stage2_student.train import kd_teacher_margin
from store import StoreReader
from store.cli import setup_logging
from store.errors import UserError

log = logging.getLogger("topk_coverage")

KS = (4, 8, 16, 32)  # and C - 1
TEMPERATURES = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Setup:
    """Everything the numbers depend on (written into the report)."""

    speakers: int = 200  # the demo's corpus size (classes C = 200)
    utts_per_speaker: int = 8
    duration: float = 2.0
    crop_seconds: float = 1.0
    teacher_arch: str = "xvector"
    teacher_opts: str = "channels=128,embed_dim=128"
    teacher_epochs: int = 12
    student_opts: str = "channels=32,embed_dim=64"
    student_epochs: int = 1
    optimizer: str = "adamw"
    views_per_utt: int = 2
    seed: int = 0

    def arch_kwargs(self, opts: str) -> dict[str, int]:
        return {k: int(v) for k, v in (pair.split("=") for pair in opts.split(","))}


def from_demo(demo: Path) -> tuple[Path, dict[str, Path]]:
    """(corpus, {teacher, student}) of a finished ``make demo`` output folder: its ECAPA
    teacher and its x-vector trained with CE alone."""
    found = {"teacher": demo / "teacher" / "model.pt",
             "student": demo / "students" / "xvector-ce" / "model.pt"}
    missing = [str(p) for p in (demo / "toy", *found.values()) if not p.exists()]
    if missing:
        raise UserError(f"--from-demo {demo}: not a finished demo folder ({', '.join(missing)} "
                        "missing); run make demo first")
    return demo / "toy", found


def build(setup: Setup, work: Path,
          demo: Path | None = None) -> tuple[Path, Path, Path, Path]:
    """(corpus, teacher checkpoint, student checkpoint, cache), made unless present (the
    corpus and both models taken from a demo folder when ``demo`` is given)."""
    corpus, cache = work / "toy", work / "logits.zarr"
    if demo is not None:
        corpus, models = from_demo(demo)
    if not corpus.exists():
        generate(ToyConfig(speakers=setup.speakers, utts_per_speaker=setup.utts_per_speaker,
                           duration=setup.duration, test_speakers=2, test_utts_per_speaker=2,
                           seed=setup.seed), corpus)
    data = DataPaths(data=corpus)
    models = {} if demo is None else models
    for name, opts, epochs in (("teacher", setup.teacher_opts, setup.teacher_epochs),
                               ("student", setup.student_opts, setup.student_epochs)):
        if name not in models:
            models[name] = train_model(setup, data, work / name, opts, epochs)
    if not cache.exists():
        classes = LabelMap.from_manifest(data.train_manifest()).num_classes
        dump.cli.main(["--teacher", str(models["teacher"]), "--data", str(corpus),
                       "--out", str(cache), "--views-per-utt", str(setup.views_per_utt),
                       "--topk", str(classes - 1), "--temperatures", "1,2,4",
                       "--crop-seconds", str(setup.crop_seconds), "--workers", "0",
                       "--threads", "1", "--seed", str(setup.seed)], standalone_mode=False)
    return corpus, models["teacher"], models["student"], cache


def train_model(setup: Setup, data: DataPaths, out: Path, opts: str, epochs: int) -> Path:
    """An AAM model of ``setup``'s recipe trained into ``out`` (resumed after a kill; kept
    once finished, i.e. once its results.json exists); -> its model.pt."""
    if not (out / "results.json").exists():
        config = resolve_config("demo", {
            "arch": setup.teacher_arch, "arch_kwargs": setup.arch_kwargs(opts),
            "epochs": epochs, "batch_size": 32, "crop_seconds": setup.crop_seconds,
            "workers": 0, "eval_every": 0, "optimizer": setup.optimizer, "seed": setup.seed})
        t0 = time.perf_counter()
        train_teacher(config, data, out, resume=True)
        log.info("%s trained in %.0f s", out.name, time.perf_counter() - t0)
    return out / "model.pt"


@torch.no_grad()
def replay(corpus: Path, teacher_path: Path, student_path: Path, cache: Path, batch: int = 64,
           limit: int | None = None):
    """(cache reader, rows, teacher full logits, student margin logits), row order: every
    row, or the first ``limit``."""
    data = DataPaths(data=corpus)
    manifest = data.train_manifest()
    reader = StoreReader.open(cache, manifest_hash=manifest.content_hash())
    spec = reader.spec
    render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                          AugmentConfig.from_dict(spec.augment), data.noise_bank(spec.sample_rate),
                          sample_rate=spec.sample_rate)
    teacher, student = load_checkpoint(teacher_path), load_checkpoint(student_path)
    student.head.margin = student.config["schedule"]["margin"]  # the end of its margin ramp
    for model in (teacher.model, student.model):
        model.eval()
    rows = reader.read(0, len(reader) if limit is None else min(limit, len(reader)))
    t_logits, s_logits = [], []
    for begin in range(0, len(rows), batch):
        block = rows.slice(begin, begin + batch)
        inputs = [render(u, s, d) for u, s, d in zip(block.utt, block.start, block.seed,
                                                      strict=True)]
        feats = torch.stack([x for x, _ in inputs])
        labels = torch.as_tensor(block.label, dtype=torch.long)
        if not np.array_equal([label for _, label in inputs], block.label):
            raise UserError(f"{cache}: replayed labels differ from the cached ones")
        t_logits.append(teacher.head.cosine_logits(teacher.model(feats)))
        s_logits.append(student.head(student.model(feats), labels))
    return reader, rows, torch.cat(t_logits), torch.cat(s_logits)


def measure(reader: StoreReader, rows, teacher_cos: torch.Tensor,
            student: torch.Tensor) -> list[dict]:
    spec = reader.spec
    labels = torch.as_tensor(rows.label, dtype=torch.long)
    margin = kd_teacher_margin("margin", spec.teacher)
    teacher = margin.apply(teacher_cos.double(), labels) if margin else teacher_cos.double()
    index_all = torch.as_tensor(rows.topk_index.astype(np.int64))
    table = []
    for t in TEMPERATURES:
        column = np.ascontiguousarray(rows.tail_lse[:, reader.temperature_index(t)])
        non = F.softmax(teacher_cos.double() / t, dim=1).scatter(1, labels.view(-1, 1), 0.0)
        non = non / non.sum(dim=1, keepdim=True)
        s_full = student.double().requires_grad_()
        full_dkd = full_logit_dkd_loss(s_full, teacher, labels, 1.0, 2.0, t)
        (g_full,) = torch.autograd.grad(full_dkd, s_full)
        full_dkd = full_dkd.detach()
        full_kd = full_logit_kd_loss(student.double(), teacher, t)
        for k in (*[k for k in KS if k < spec.k], spec.k):
            index = index_all[:, :k]
            b = teacher_probs(rows.target_logit, rows.topk_logit, column, k, t, margin=margin)
            s = student.double().requires_grad_()
            dkd = dkd_loss(s, labels, index, torch.from_numpy(b.binary),
                           torch.from_numpy(b.nontarget), 1.0, 2.0, t)
            (g,) = torch.autograd.grad(dkd, s)
            dkd = dkd.detach()
            kd = kd_loss(student.double(), labels, index, torch.from_numpy(b.full), t)
            table.append(dict(
                k=k, temperature=t, kept=float(non.gather(1, index).sum(dim=1).mean()),
                dkd_gap=float((dkd - full_dkd) / full_dkd), kd_gap=float((kd - full_kd) / full_kd),
                grad_cos=float(F.cosine_similarity(g.flatten(), g_full.flatten(), dim=0)),
                dkd_full=float(full_dkd), kd_full=float(full_kd)))
            log.info("T=%g k=%d: %s", t, k, table[-1])
    return table


def write_report(path: Path, setup: dict, table: list[dict], facts: dict, summary: dict) -> None:
    classes = facts["classes C"]
    lines = [
        "# What the top-k cache keeps of a trained teacher",
        "",
        "Written by `scripts/topk_coverage.py` (module docstring: what each column is); rerun it "
        "to refresh.",
        "",
        "## Setup",
        "",
        *(f"- {key}: {value}" for key, value in {**setup, **facts}.items()),
        "",
        "## Results",
        "",
        "`kept`: mean non-target mass of the k cached speakers at T (full logits). Gaps: "
        "(cached - full) / full for DKD (alpha 1, beta 2) and KD; `grad cos`: DKD gradients "
        "w.r.t. the student logits, cached vs full. k = C - 1 differs from the full loss only "
        "by the cache's float16 rounding.",
        "",
        "| T | k | kept | DKD gap | KD gap | grad cos | full DKD | full KD |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r['temperature']:g} | {r['k']}{' (C-1)' if r['k'] == classes - 1 else ''} "
          f"| {r['kept']:.4f} | {100 * r['dkd_gap']:+.2f} % | {100 * r['kd_gap']:+.2f} % "
          f"| {r['grad_cos']:.4f} | {r['dkd_full']:.4f} | {r['kd_full']:.4f} |" for r in table),
        "",
    ]
    write_atomic(path, lines, summary)


@click.command(help=__doc__)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("topk_coverage_work"), show_default=True,
              help="Corpus, teacher, student and cache (reused when present).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("docs/topk_coverage.md"), show_default=True, help="Markdown report.")
@click.option("--from-demo", "demo", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Measure a finished `make demo` folder's teacher (and its "
                                 "x-vector CE student) on its corpus instead of training them.")
@click.option("-v", "--verbose", is_flag=True)
def cli(work: Path, out_path: Path, demo: Path | None, verbose: bool) -> None:
    setup_logging(verbose)
    if not out_path.parent.is_dir():
        raise UserError(f"--out {out_path}: directory {out_path.parent} does not exist")
    setup = Setup()
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    paths = build(setup, work, demo)
    reader, rows, teacher_cos, student = replay(*paths)
    table = measure(reader, rows, teacher_cos, student)
    p_target = F.softmax(teacher_cos.double(), dim=1).gather(
        1, torch.as_tensor(rows.label, dtype=torch.long).view(-1, 1))
    facts = {
        "teacher": (f"the demo's ({demo / 'teacher' / 'model.pt'}, {reader.spec.teacher.arch}); "
                    "student: its x-vector CE" if demo else
                    f"trained here ({reader.spec.teacher.arch}, the setup above)"),
        "classes C": reader.spec.num_classes,
        "cache rows (replayed)": len(rows),
        "teacher margin (cache attributes)": f"{reader.spec.teacher.margin_kind} "
                                             f"m={reader.spec.teacher.margin} "
                                             f"s={reader.spec.teacher.scale}",
        "teacher p_target, T=1, cosine logits (median over rows)": f"{float(p_target.median()):.3f}",
        "machine": f"{machine()}, torch threads {torch.get_num_threads()}, "
                   f"load {os.getloadavg()[0]:.1f}",
        "wall time (this run)": f"{time.perf_counter() - t0:.0f} s",
    }
    at32 = {r["temperature"]: r for r in table if r["k"] == min(32, reader.spec.k)}
    summary = {f"dkd_gap_k32_T{t:g}": round(r["dkd_gap"], 5) for t, r in at32.items()}
    summary.update({f"kept_k32_T{t:g}": round(r["kept"], 5) for t, r in at32.items()})
    # With --from-demo the corpus and models are the demo's: only the cache's settings apply.
    shown = asdict(setup) if demo is None else {
        "corpus": demo / "toy", "views_per_utt": setup.views_per_utt,
        "crop_seconds": setup.crop_seconds, "seed": setup.seed}
    write_report(out_path, shown, table, facts, summary)
    log.info("wrote %s", out_path)
    click.echo(" ".join(f"{k}={v}" for k, v in summary.items()))
    if math.isnan(sum(summary.values())):
        raise UserError("a measured value is NaN")
