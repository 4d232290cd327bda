"""Benchmark a stage-2 epoch: cached DKD against CE-only and against online DKD.

Builds (or reuses, under ``--workdir``) one toy corpus, a teacher (the demo preset's
architecture, untrained: only its speed matters here) and its logit cache, then times in
ONE process, for one student architecture, the same batches and the same number of steps:

- ``ce``: CE (AAM) steps on the cached rows' replayed crops, no distillation; the loader
  reads the rows but computes no teacher buckets (what a CE run does);
- ``cached``: cached DKD (alpha 1, beta 2, T 1, all k): the loader also turns each row's
  cached logits into teacher buckets (Numba), the student adds TCKD + NCKD;
- ``online``: online DKD with the live teacher run on every batch (full logits).

An "epoch" is ``--steps`` steps from a fresh DataLoader with ``--workers`` processes, as
``stage2_student.train`` makes one per epoch (worker start-up included). Also timed, for
the same steps: ``loader`` (the cached-mode DataLoader alone, same workers) against
``loader_ce`` (without teacher buckets), and ``student`` (cached-DKD train steps on batches
loaded beforehand) against ``student_ce`` (CE steps on the same batches): they split the
cached-over-CE cost into its loader and trainer parts. On a second cache of the same
teacher and rows dumped with ``--store-features``, ``loader_features`` (batches read from
the stored features) is timed against ``loader_replay`` (the same batches replayed from the
audio): ``features_over_replay_rows_per_s``. ``crop_checksum_overhead`` is the time of the
per-row crop checksum stage 2 adds to replay (crc32 of the raw crop, best of 50 over one
batch's real crops) over the replay loader's time per row. After a warm-up round, ``--repeats``
rounds; within a round every run replays the same rows (one epoch's shuffle), what is
compared runs back to back, in alternating order, and a ratio is the median of its
per-round ratios. Prints a table, writes ``--out`` and ends with one JSON
line: cached_over_ce_epoch, online_over_cached_epoch, loader_rows_per_s,
student_rows_per_s, the two part ratios, the kernel's and the DKD term's own cost per
batch, features_over_replay_rows_per_s, crop_checksum_overhead, and the settings.

\b
Examples:
    python scripts/bench_stage2.py                          # writes docs/bench_stage2.md
    python scripts/bench_stage2.py --workdir /tmp/b2 --repeats 5 --out /tmp/bench2.md
    python scripts/bench_stage2.py --student-arch-opt channels=256 --workers 2 --threads 2
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch.utils.data import DataLoader

from experiments.machine import machine
from experiments.markdown import write_atomic
from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.models import build
from speaker.models.checkpoint import save_checkpoint
from speaker.models.heads import AAMSoftmax
from speaker.teachers.base import Teacher
from speaker.teachers.load import load_teacher
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from speaker.training.trainer import SpeakerNet
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from speaker.views.view import crop_checksum
from stage1_teacher import dump
from stage1_teacher.train import PRESETS
from stage2_student.data import CachedViews, CacheRequest, StudentBatch
from stage2_student.kernels import teacher_probs
from stage2_student.losses import DistillBatch, DistillConfig, distill_loss
from stage2_student.train import distill_step, kd_teacher_margin
from store import StoreReader
from store.cli import parse_options, setup_logging

log = logging.getLogger("bench_stage2")

MODES = ("ce", "cached", "online")


# ---- setup: corpus, teacher, cache (reused when present) ----------------------------------


def ensure_inputs(workdir: Path, speakers: int, utts: int, duration: float, views: int,
                  crop_seconds: float, topk: int, seed: int) -> tuple[Path, Path, Path, Path]:
    """(corpus, teacher model.pt, cache, cache with stored features) under ``workdir``,
    built once.

    The teacher is the demo preset's architecture, untrained: only its speed matters here
    (the online mode runs it on every batch), and training it would cost minutes.
    """
    corpus, teacher, cache = workdir / "corpus", workdir / "teacher", workdir / "logits.zarr"
    features = workdir / "logits_features.zarr"
    if not (corpus / "toy.json").exists():
        log.info("generating the toy corpus in %s", corpus)
        generate(ToyConfig(speakers=speakers, utts_per_speaker=utts, duration=duration,
                           test_speakers=2, test_utts_per_speaker=2, seed=seed), corpus)
    if not (teacher / "model.pt").exists():
        preset = PRESETS["demo"]
        log.info("writing an untrained %s %s teacher to %s", preset.arch, preset.arch_kwargs,
                 teacher)
        labels = LabelMap.from_manifest(DataPaths(data=corpus).train_manifest())
        torch.manual_seed(seed)
        model = build(preset.arch, **preset.arch_kwargs)
        teacher.mkdir(parents=True, exist_ok=True)
        save_checkpoint(teacher / "model.pt", arch=preset.arch, arch_kwargs=preset.arch_kwargs,
                        model=model, head=AAMSoftmax(model.embed_dim, labels.num_classes),
                        label_map=labels.to_dict(), config={"kind": "teacher", "bench": True})
    for out, extra in ((cache, []), (features, ["--store-features"])):
        if not (out / "zarr.json").exists():
            log.info("dumping the cache %s", out)
            dump.cli.main(["--teacher", str(teacher / "model.pt"), "--data", str(corpus),
                           "--out", str(out), "--views-per-utt", str(views),
                           "--crop-seconds", str(crop_seconds), "--topk", str(topk),
                           "--workers", "1", *extra], standalone_mode=False)
    return corpus, teacher / "model.pt", cache, features


# ---- timing ----------------------------------------------------------------------------------


class Bench:
    """Everything the timed runs share: views, one student per mode, the live teacher."""

    def __init__(self, corpus: Path, teacher_path: Path, cache: Path, features: Path, arch: str,
                 arch_kwargs: dict[str, Any], batch_size: int, steps: int, workers: int):
        data = DataPaths(data=corpus)
        manifest = data.train_manifest()
        spec = StoreReader.open(cache).spec
        render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                              AugmentConfig.from_dict(spec.augment),
                              data.noise_bank(spec.sample_rate), sample_rate=spec.sample_rate)
        # the default --kd-logits margin convention: the teacher's margin on its target
        request = CacheRequest(cache, teacher_margin=kd_teacher_margin("margin", spec.teacher))
        self.spec = spec
        self.views = {  # CE and online training need no teacher buckets from the cache
            "ce": CachedViews(request, render, batch_size, buckets=False),
            "cached": CachedViews(request, render, batch_size, buckets=True),
            "online": CachedViews(request, render, batch_size, buckets=False),
            # one cache with stored features, read or replayed: the same rows and batches
            "features": CachedViews(CacheRequest(features), render, batch_size, features=True),
            "replay": CachedViews(CacheRequest(features), render, batch_size, features=False),
        }
        self.render = render
        available = self.views["cached"].batches_per_epoch()
        if available < steps:
            raise click.UsageError(f"--steps {steps} needs {steps * batch_size} rows per "
                                   f"epoch; the cache gives {available} batches")
        self.live: Teacher = load_teacher(str(teacher_path))
        torch.manual_seed(0)
        model = build(arch, **arch_kwargs)
        net = SpeakerNet(model, AAMSoftmax(model.embed_dim, spec.num_classes))
        self.params = sum(p.numel() for p in model.parameters())
        self.nets = {mode: copy.deepcopy(net) for mode in MODES}
        self.optimizers = {mode: torch.optim.SGD(self.nets[mode].parameters(), lr=0.01,
                                                 momentum=0.9, nesterov=True)
                           for mode in MODES}
        config = {"ce": DistillConfig(loss="ce"),
                  "cached": DistillConfig(loss="dkd", alpha=1.0, beta=2.0, temperature=1.0),
                  "online": DistillConfig(loss="dkd", alpha=1.0, beta=2.0, temperature=1.0)}
        online = {"live": self.live, "live_margin": kd_teacher_margin("margin", self.live)}
        none = {"live": None, "live_margin": None}
        self.step_fns = {mode: distill_step(config[mode], device="cpu",
                                            **(online if mode == "online" else none))
                         for mode in MODES}
        self.batch_size, self.steps, self.workers = batch_size, steps, workers
        self.epoch = 0

    def loader(self, mode: str) -> Iterable[StudentBatch]:
        views = self.views[mode]
        views.set_epoch(self.epoch)  # the round's epoch: every run renders the same crops
        return itertools.islice(DataLoader(views, batch_size=None, num_workers=self.workers),
                                self.steps)

    def train(self, mode: str, batches: Iterable[StudentBatch]) -> None:
        net, optimizer, step = self.nets[mode], self.optimizers[mode], self.step_fns[mode]
        net.train()
        for i, batch in enumerate(batches):
            loss, _ = step(net, batch, 1.0 + i / self.steps)  # past the KD warm-up
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def epoch_seconds(self, mode: str) -> float:
        t0 = time.perf_counter()
        self.train(mode, self.loader(mode))
        return time.perf_counter() - t0

    def loader_seconds(self, mode: str) -> float:
        t0 = time.perf_counter()
        for _ in self.loader(mode):
            pass
        return time.perf_counter() - t0

    def student_seconds(self, mode: str, batches: list[StudentBatch]) -> float:
        t0 = time.perf_counter()
        self.train(mode, batches)
        return time.perf_counter() - t0

    def micro_ms(self, repeats: int = 200) -> dict[str, float]:
        """What cached DKD adds, timed alone (best of ``repeats``): the teacher-bucket
        kernel on one batch of cached rows (as a loader worker runs it) and the DKD term's
        forward + backward on one batch of student logits."""
        views = self.views["cached"]
        rows = views.reader.read(0, self.batch_size)
        tail = np.ascontiguousarray(rows.tail_lse[:, views.t_index])

        def kernel() -> None:
            teacher_probs(rows.target_logit, rows.topk_logit, tail, views.k_prime, 1.0,
                          parallel=False)

        batch = next(iter(self.loader("cached")))
        config = DistillConfig(loss="dkd", alpha=1.0, beta=2.0, temperature=1.0)
        logits = (32 * torch.rand(self.batch_size, self.spec.num_classes)).requires_grad_()

        def dkd() -> None:
            parts = DistillBatch(student_logits=logits, labels=batch.labels,
                                 topk_index=batch.topk_index, teacher=batch.teacher)
            distill_loss(config, parts, 1.0).backward()

        def best(fn: Callable[[], None], count: int = repeats) -> float:
            fn()
            times = []
            for _ in range(count):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return 1000 * min(times)

        # The raw crops (speed 1) of one batch, as replay reads them before augmenting.
        crops = [self.render.reader.read(self.render.manifest[int(u)], int(s),
                                         self.spec.crop_samples)
                 for u, s in zip(rows.utt, rows.start, strict=True)]

        def checksums() -> None:
            for crop in crops:
                crop_checksum(crop)

        return {"kernel_ms_per_batch": best(kernel), "dkd_loss_ms_per_step": best(dkd),
                "checksum_ms_per_batch": best(checksums, 50)}


def timed_rounds(bench: Bench, repeats: int) -> dict[str, list[float]]:
    """A warm-up round, then ``repeats`` rounds. What is compared runs back to back (CE and
    cached epochs, loader with and without buckets, student steps with CE and with DKD),
    first one then the other in alternate rounds, so slow drifts of a shared machine cancel
    in the per-round ratios."""
    names = ["ce", "cached", "online", "loader", "loader_ce", "student", "student_ce",
             "loader_features", "loader_replay"]
    times: dict[str, list[float]] = {name: [] for name in names}

    def one_round(r: int) -> dict[str, float]:
        flip = (lambda a, b: (a, b)) if r % 2 == 0 else (lambda a, b: (b, a))
        got: dict[str, float] = {}
        for mode in flip("ce", "cached"):
            got[mode] = bench.epoch_seconds(mode)
        got["online"] = bench.epoch_seconds("online")
        for name, mode in flip(("loader", "cached"), ("loader_ce", "ce")):
            got[name] = bench.loader_seconds(mode)
        for name, mode in flip(("loader_features", "features"), ("loader_replay", "replay")):
            got[name] = bench.loader_seconds(mode)
        batches = list(bench.loader("cached"))
        for name, mode in flip(("student", "cached"), ("student_ce", "ce")):
            got[name] = bench.student_seconds(mode, batches)
        return got

    log.info("warm-up round (4 steps each)")
    steps, bench.steps = bench.steps, 4
    one_round(1)
    bench.steps = steps
    for r in range(repeats):
        bench.epoch = r + 1  # a new shuffle each round, the same rows for all its runs
        got = one_round(r)
        for name in names:
            times[name].append(got[name])
        log.info("round %d/%d: %s", r + 1, repeats,
                 " ".join(f"{n}={got[n]:.2f}s" for n in names))
    return times


# ---- report ----------------------------------------------------------------------------------


def write_report(path: Path, rows: list[dict], summary: dict, run_facts: dict) -> None:
    settings = summary["settings"]
    per_step = {r["name"]: r["ms_per_step"] for r in rows}
    added = 100 * (summary["kernel_ms_per_batch"] + summary["dkd_loss_ms_per_step"]) \
        / summary["ce_ms_per_step"]
    lines = [
        "# Stage-2 epoch benchmark: cached DKD vs CE vs online DKD",
        "",
        "Written by `scripts/bench_stage2.py`; rerun it to refresh. Times are medians over "
        f"{settings['repeats']} alternating rounds (after a warm-up round); ratios are "
        "medians of the per-round ratios.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in run_facts.items()),
        "",
        "## Settings",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Results",
        "",
        "| measurement | median s | min s | max s | steps | rows/s | ms/step |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['name']} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} | "
          f"{r['steps']} | {r['rows_per_s']:,.0f} | {r['ms_per_step']:.0f} |" for r in rows),
        "",
        "- `ce`, `cached`, `online`: one epoch of training, DataLoader start-up included.",
        "- `loader`: the cached-mode DataLoader alone (replay + augmentation + fbank + "
        "teacher buckets), same workers; `loader_ce`: the same without teacher buckets.",
        "- `student`: cached-DKD train steps on batches loaded beforehand; `student_ce`: CE "
        "steps on the same batches.",
        f"- cached / CE epoch: **{summary['cached_over_ce_epoch']:.3f}**; online / cached "
        f"epoch: **{summary['online_over_cached_epoch']:.3f}** (cached / CE per round: "
        f"{', '.join(f'{x:.3f}' for x in summary['cached_over_ce_rounds'])}); its parts: loader "
        f"{summary['loader_cached_over_ce']:.3f}, trainer {summary['student_cached_over_ce']:.3f}.",
        f"- What cached DKD adds, timed alone (best of 200): the teacher-bucket kernel "
        f"{summary['kernel_ms_per_batch']:.3f} ms per batch (in the loader worker), the DKD "
        f"term {summary['dkd_loss_ms_per_step']:.2f} ms per step (forward + backward), "
        f"against {summary['ce_ms_per_step']:.0f} ms per step of a CE epoch: "
        f"{added:.2f}% more work.",
        f"- Stored features (a second cache of the same rows dumped with --store-features): "
        f"`loader_features` reads the batches' fbank from the cache, `loader_replay` replays "
        f"the same batches from the audio: **{summary['features_over_replay_rows_per_s']:.1f}x"
        f"** the rows/s ({summary['features_loader_rows_per_s']:,.0f} vs "
        f"{summary['replay_loader_rows_per_s']:,.0f}).",
        f"- The crop checksum replay adds (crc32 of each raw crop, best of 50 over one batch): "
        f"{summary['checksum_ms_per_batch']:.3f} ms per batch, "
        f"**{100 * summary['crop_checksum_overhead']:.2f}%** of the replay loader's time.",
        "",
        f"A CE step takes {per_step['ce']:.0f} ms; loading alone {per_step['loader_ce']:.0f} "
        f"ms and training alone {per_step['student_ce']:.0f} ms: "
        f"{per_step['loader_ce'] + per_step['student_ce']:.0f} ms if they never overlapped, "
        f"{max(per_step['loader_ce'], per_step['student_ce']):.0f} ms if they always did (the "
        "loader worker and the trainer share the cores, with each other and any other job). "
        "Either way the data path (replaying crops) is shared by CE, cached and online "
        "training; cached soft labels add only the per-batch kernel and the loss term.",
        "",
    ]
    write_atomic(path, lines, summary)


@click.command(help=__doc__)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/tmp/entkd_bench_stage2"), show_default=True,
              help="Corpus, teacher and cache; reused when present.")
@click.option("--speakers", default=40, show_default=True)
# 48 steps per epoch (1,536 of the 1,920 rows): at 16 the per-round cached/CE ratios spread
# 0.94-1.22 on this machine (2026-12-02), too wide to resolve the 3 % that matters.
@click.option("--utts-per-speaker", default=24, show_default=True)
@click.option("--duration", default=2.5, show_default=True, help="Mean utterance seconds.")
@click.option("--views-per-utt", default=2, show_default=True)
@click.option("--crop-seconds", default=2.0, show_default=True)
@click.option("--topk", default=32, show_default=True, help="k of the cache.")
@click.option("--student-arch", default="xvector", show_default=True)
@click.option("--student-arch-opt", multiple=True,
              help="key=value (default: channels=128 embed_dim=128).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--steps", default=48, show_default=True, help="Steps per timed epoch.")
@click.option("--repeats", default=6, show_default=True, help="Timed rounds.")
@click.option("--workers", default=1, show_default=True, help="DataLoader worker processes.")
@click.option("--threads", default=0, show_default=True,
              help="Torch threads of the trainer (0: the cores the workers leave, at least 1).")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("docs/bench_stage2.md"), show_default=True)
@click.option("-v", "--verbose", is_flag=True)
def cli(workdir: Path, speakers: int, utts_per_speaker: int, duration: float,
        views_per_utt: int, crop_seconds: float, topk: int, student_arch: str,
        student_arch_opt: tuple[str, ...], batch_size: int, steps: int, repeats: int,
        workers: int, threads: int, seed: int, out_path: Path, verbose: bool) -> None:
    setup_logging(verbose)
    load = os.getloadavg()
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    corpus, teacher, cache, features = ensure_inputs(workdir, speakers, utts_per_speaker,
                                                     duration, views_per_utt, crop_seconds,
                                                     topk, seed)
    setup_s = time.perf_counter() - started
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores - workers)
    torch.set_num_threads(threads)
    arch_kwargs = parse_options(student_arch_opt) or {"channels": 128, "embed_dim": 128}
    bench = Bench(corpus, teacher, cache, features, student_arch, arch_kwargs, batch_size, steps,
                  workers)
    times = timed_rounds(bench, repeats)
    micro = bench.micro_ms()

    rows_per_run = steps * batch_size
    table = []
    for name, values in times.items():
        median = statistics.median(values)
        table.append({"name": name, "median": median, "min": min(values), "max": max(values),
                      "steps": steps, "rows_per_s": rows_per_run / median,
                      "ms_per_step": 1000 * median / steps})
    click.echo(f"{'measurement':12s} {'median s':>9s} {'min s':>7s} {'max s':>7s} "
               f"{'rows/s':>8s} {'ms/step':>8s}")
    for r in table:
        click.echo(f"{r['name']:12s} {r['median']:9.2f} {r['min']:7.2f} {r['max']:7.2f} "
                   f"{r['rows_per_s']:8.1f} {r['ms_per_step']:8.0f}")

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    spec = bench.spec
    settings = {
        "student": f"{student_arch} {arch_kwargs} ({bench.params / 1e6:.2f}M params)",
        "teacher": f"{bench.live.arch} {PRESETS['demo'].arch_kwargs} (demo preset "
                   f"architecture, untrained; {spec.num_classes} classes)",
        "rows": f"{spec.num_rows} cached rows ({speakers} speakers x {utts_per_speaker} utts "
                f"x {views_per_utt} views), crops {crop_seconds} s, k={spec.k}",
        "loss": "cached/online DKD alpha=1 beta=2 T=1; CE: AAM s=32 m=0.2",
        "batch_size": batch_size, "steps": steps, "repeats": repeats, "workers": workers,
        "trainer_threads": threads, "device": "cpu",
    }
    summary = {
        "cached_over_ce_epoch": round(ratio("cached", "ce"), 4),
        "cached_over_ce_rounds": [round(a / b, 3) for a, b in zip(times["cached"], times["ce"],
                                                                   strict=True)],
        "online_over_cached_epoch": round(ratio("online", "cached"), 4),
        "loader_rows_per_s": round(rows_per_run / statistics.median(times["loader"]), 1),
        "student_rows_per_s": round(rows_per_run / statistics.median(times["student"]), 1),
        "loader_cached_over_ce": round(ratio("loader", "loader_ce"), 4),
        "student_cached_over_ce": round(ratio("student", "student_ce"), 4),
        "ce_ms_per_step": round(1000 * statistics.median(times["ce"]) / steps, 1),
        "kernel_ms_per_batch": round(micro["kernel_ms_per_batch"], 4),
        "dkd_loss_ms_per_step": round(micro["dkd_loss_ms_per_step"], 3),
        "features_over_replay_rows_per_s": round(ratio("loader_replay", "loader_features"), 2),
        "features_loader_rows_per_s":
            round(rows_per_run / statistics.median(times["loader_features"]), 1),
        "replay_loader_rows_per_s":
            round(rows_per_run / statistics.median(times["loader_replay"]), 1),
        "checksum_ms_per_batch": round(micro["checksum_ms_per_batch"], 4),
        "crop_checksum_overhead": round(
            micro["checksum_ms_per_batch"] / 1000 / batch_size
            / (statistics.median(times["loader_replay"]) / rows_per_run), 5),
        "settings": settings,
    }
    run_facts = {
        "machine": machine(np),
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load),
        "setup (corpus, teacher, cache; 0 when reused)": f"{setup_s:.0f} s",
        "total wall time": f"{time.perf_counter() - started:.0f} s",
    }
    write_report(out_path, table, summary, run_facts)
    click.echo(json.dumps(summary))
