"""Benchmark the stage-1 dump: does the teacher set the pace, and what does the writer cost?

\b
In one run, on the same corpus, teacher and batches, side by side (each repeat runs
the three in a rotated order; medians are reported):
  teacher_forward_s    the teacher forward + top-k summary (stage1_teacher.dump.batch_rows)
                       over exactly the dump's batches, inputs pre-rendered in memory;
  dump_total_s         the full dump() -- DataLoader workers rendering crops, the teacher,
                       the background shard writer -- into a fresh store;
  pipeline_no_write_s  the same dump() with the writer replaced by DiscardWriter.
writer_overhead = dump_total / teacher_forward - 1 (median over repeats of the ratio
within each repeat): everything the dump adds to the teacher's own time (crop rendering it waits for, writing, setup; on a 2-core CPU the
workers also compete with the teacher for the cores). writer_share = dump_total /
pipeline_no_write - 1 isolates the writer. teacher_idle = dump wall / the teacher's busy
time inside that same dump - 1 (median over the dumps): the part of the dump in which
the teacher waits -- for crops, the writer or setup -- measured within one run, so it
does not move when the machine's speed drifts between runs (on a shared VM identical
runs differ by 20%).

Prints a table and, as its last line, one JSON object; writes docs/bench_dump.md.
The teacher defaults to the demo preset's architecture (stage1_teacher.train, random
init: the weights do not change the cost).

\b
Examples:
  python scripts/bench_dump.py                     # toy corpus + demo-size teacher, ~7 min
  python scripts/bench_dump.py --repeats 5         # 5 rounds of forward, dump, no-write dump
  python scripts/bench_dump.py --arch ecapa --arch-opt channels=256 --arch-opt embed_dim=192
  python scripts/bench_dump.py --corpus demo_out/toy --teacher demo_out/teacher/model.pt
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader

from experiments.machine import cores, load_average, machine
from experiments.markdown import write_atomic
from experiments.paths import DOCS
from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.models import build
from speaker.models.checkpoint import save_checkpoint
from speaker.models.heads import AAMSoftmax
from speaker.teachers.load import load_teacher
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from speaker.training.trainer import DistContext, intra_op_threads
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer, ViewRows
from stage1_teacher.dump import BackgroundWriter, batch_rows, dump, shard_batches
from stage1_teacher.dump_config import DumpConfig
from stage1_teacher.train import PRESETS
from store import RowBlock, StoreWriter
from store.cli import parse_options, setup_logging

log = logging.getLogger("bench_dump")

class DiscardWriter:
    """Takes the dump's whole shards like :class:`BackgroundWriter` and writes nothing:
    the cost of the dump loop without the writer (a ``stage1_teacher.dump.ShardSink``)."""

    def __init__(self, writer: StoreWriter):
        self.busy_s = 0.0

    def put(self, shard: int, block: RowBlock) -> None:
        pass

    def close(self) -> None:
        pass


def _median(values) -> float:
    return float(np.median(list(values)))


def make_corpus(out: Path, speakers: int, utts: int, duration: float) -> Path:
    log.info("synthesising %d speakers x %d utterances x %.1f s", speakers, utts, duration)
    generate(ToyConfig(speakers=speakers, utts_per_speaker=utts, duration=duration,
                       test_speakers=2, seed=0), out, workers=cores())
    return out


def make_teacher(path: Path, data: DataPaths, arch: str, arch_kwargs: dict[str, Any]) -> Path:
    """A randomly initialised checkpoint with the corpus's label map (cost = trained cost)."""
    label_map = LabelMap.from_manifest(data.train_manifest())
    torch.manual_seed(0)
    model = build(arch, **arch_kwargs).eval()
    head = AAMSoftmax(model.embed_dim, label_map.num_classes)
    save_checkpoint(path, arch=arch, arch_kwargs=arch_kwargs, model=model, head=head,
                    label_map=label_map.to_dict(), config={"bench": True})
    log.info("teacher %s(%s): %.2fM parameters, %d classes", arch, arch_kwargs,
             sum(p.numel() for p in model.parameters()) / 1e6, label_map.num_classes)
    return path


def dump_batches(num_rows: int, config: DumpConfig, batch_size: int) -> list[list[int]]:
    """The row batches a dump into a fresh store runs (every shard missing)."""
    shards = [(s, start, min(start + config.shard_rows, num_rows))
              for s, start in enumerate(range(0, num_rows, config.shard_rows))]
    return shard_batches(shards, batch_size)


def render_inputs(data: DataPaths, config: DumpConfig, batch_size: int,
                  input_kind: str) -> tuple[list, float, int]:
    """Every batch of the dump rendered into memory (one worker per core), the seconds
    that took, and the row count."""
    manifest = data.train_manifest()
    label_map = LabelMap.from_manifest(manifest, speeds=config.augment.speeds)
    rate = manifest[0].sample_rate
    render = ViewRenderer(manifest, label_map, int(round(config.crop_seconds * rate)),
                          config.augment, data.noise_bank(rate), sample_rate=rate,
                          input_kind=input_kind)
    rows = ViewRows(render, config.views_per_utt, config.seed)
    batches = dump_batches(len(rows), config, batch_size)
    t0 = time.perf_counter()
    loader = DataLoader(rows, batch_sampler=batches, num_workers=cores())
    inputs = list(loader)
    render_s = time.perf_counter() - t0
    log.info("pre-rendered %d rows in %d batches with %d workers in %.1f s", len(rows),
             len(inputs), cores(), render_s)
    return inputs, render_s, len(rows)


def time_forward(teacher_spec: str, inputs: list, config: DumpConfig, threads: int,
                 device: str) -> float:
    """Seconds of batch_rows over the dump's batches with every input already in memory."""
    teacher = load_teacher(teacher_spec, device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batch_rows(teacher, inputs[0], config, device)  # warm-up (allocator, kernels)
        t0 = time.perf_counter()
        for batch in inputs:
            batch_rows(teacher, batch, config, device)
        seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    return seconds


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the DataLoader workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_dump(teacher_spec: str, data: DataPaths, config: DumpConfig, out: Path,
              batch_size: int, workers: int, threads: int, write: bool) -> dict[str, float]:
    """Wall and CPU seconds of one whole dump() into a fresh store (+ its own counters).

    CPU seconds (this process + its workers) are much less disturbed by other jobs on the
    machine than wall seconds, so they tell the writer's cost where wall times are noisy.
    """
    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = _cpu_s(), time.perf_counter()
    stats = dump(teacher_spec, data, config, out, resume=False, batch_size=batch_size,
                 workers=workers, threads=threads,
                 background_writer=BackgroundWriter if write else DiscardWriter)
    stats["wall_s"] = time.perf_counter() - t0
    stats["cpu_s"] = _cpu_s() - cpu0
    if write:
        stats["store_mb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(out, ignore_errors=True)
    return stats


def write_markdown(path: Path, summary: dict[str, Any], runs: dict[str, list[dict[str, float]]],
                   machine: str, load: str, command: str) -> None:
    s = summary["settings"]
    dumps, dry = runs["dump"], runs["no_write"]
    best = min(dumps, key=lambda r: r["wall_s"])
    dump_cpu = _median(r["cpu_s"] for r in dumps)
    dry_cpu = _median(r["cpu_s"] for r in dry)
    lines = [
        "# Stage-1 dump benchmark",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d}; rerun it to refresh this "
        "page (numbers from another machine or load will differ).",
        "",
        f"- Machine: {machine}.",
        f"- Load average (1, 5, 15 min): {load}. Other jobs may share these cores: expect "
        "+/-30% noise in every time, and compare only numbers of one run.",
        f"- Corpus: {s['utterances']} toy utterances ({s['corpus']}), {s['rows']} rows = "
        f"{s['views_per_utt']} views x utterance, {s['crop_seconds']} s crops, augmentation "
        f"probability {s['aug_prob']} (MUSAN-style noise + RIR reverb).",
        f"- Teacher: {s['teacher']} ({s['parameters_m']:.2f}M parameters + head, "
        f"{s['classes']} classes), input {s['input_kind']}, on {s['device']}.",
        f"- Dump: batch {s['batch_size']}, {s['workers']} DataLoader worker(s), "
        f"{s['teacher_threads']} teacher thread(s) (`--threads {s['threads_option']}`), "
        f"k={s['topk']}, T={s['temperatures']}, chunks of {s['chunk_rows']} rows, shards of "
        f"{s['shard_rows']} ({s['shards']} shards; all but the last are written while the "
        "teacher works on the next).",
        f"- Repeats: {s['repeats']} (each repeat times the forward, the dump and the no-write "
        "dump in a rotated order; the median of each is reported -- robust to a run that "
        "other jobs slowed down or left alone).",
        "",
        "| measurement | seconds | rows/s |",
        "|---|---:|---:|",
        f"| teacher forward + top-k alone, inputs in memory | {summary['teacher_forward_s']:.2f} "
        f"| {s['rows'] / summary['teacher_forward_s']:.1f} |",
        f"| dump without writing (DiscardWriter) | {summary['pipeline_no_write_s']:.2f} "
        f"| {s['rows'] / summary['pipeline_no_write_s']:.1f} |",
        f"| full dump into a fresh store | {summary['dump_total_s']:.2f} "
        f"| {summary['rows_per_s']:.1f} |",
        "",
        f"- **writer_overhead** = dump / forward - 1 = **{summary['writer_overhead']:+.3f}** "
        "(median over repeats of each repeat's ratio: "
        + ", ".join(f"{d['wall_s'] / f['wall_s'] - 1:+.3f}" for d, f in zip(
            dumps, runs["forward"], strict=True))
        + "; target <= 0.03): everything the dump adds to the teacher's own time -- crops it "
        "waits for, writing, setup, and the workers competing with it for the cores.",
        f"- teacher_idle = dump / teacher busy time inside the same dump - 1 = "
        f"**{summary['teacher_idle']:+.3f}** (median over the dumps; per dump "
        + ", ".join(f"{r['wall_s'] / r['forward_s'] - 1:+.3f}" for r in dumps)
        + "): how long the teacher waits for crops, the writer or setup, free of the drift "
        "in machine speed between runs that moves the ratio above.",
        f"- writer_share = dump / no-write - 1 = {summary['writer_share']:+.3f}: the writer "
        "alone. Wall times of two runs can differ by more than that when other jobs share "
        "the cores, so two steadier views of the same cost: CPU seconds of the dump (process "
        f"+ workers) over those without writing - 1 = {summary['writer_share_cpu']:+.3f} "
        f"({dump_cpu:.1f} vs {dry_cpu:.1f} CPU s), and the writer thread's busy time / dump "
        f"time = {summary['writer_busy_share']:.4f}.",
        f"- Inside the fastest full dump: teacher {best['forward_s']:.2f} s, waiting for crops "
        f"{best['wait_s']:.2f} s, writer thread busy {best['write_s']:.2f} s (overlapped), "
        f"setup (teacher, noise bank, store, workers) {best['wall_s'] - best['total_s']:.2f} s; "
        f"store {best.get('store_mb', 0):.2f} MB.",
        f"- Rendering the crops alone (one DataLoader worker per core, no teacher): "
        f"{summary['render_all_cores_s']:.2f} s = "
        f"{summary['render_all_cores_s'] * s['cores'] / s['rows'] * 1000:.1f} ms x cores per "
        "crop (an upper bound on its CPU cost when other jobs share the cores). "
        f"BLAS environment: {s['blas_env']}.",
        "- All runs (wall seconds): forward "
        + ", ".join(f"{r['wall_s']:.2f}" for r in runs["forward"])
        + "; dump "
        + ", ".join(f"{r['wall_s']:.2f}" for r in dumps)
        + "; no-write " + ", ".join(f"{r['wall_s']:.2f}" for r in dry)
        + ". CPU seconds: dump " + ", ".join(f"{r['cpu_s']:.1f}" for r in dumps)
        + "; no-write " + ", ".join(f"{r['cpu_s']:.1f}" for r in dry) + ".",
        "",
    ]
    write_atomic(path, lines, summary)


@click.command(help=__doc__)
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Prepared data root to reuse (default: synthesise one).")
@click.option("--speakers", type=click.IntRange(min=2), default=60, show_default=True)
@click.option("--utts-per-speaker", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--duration", type=float, default=3.0, show_default=True,
              help="Mean utterance seconds of a synthesised corpus.")
@click.option("--teacher", "teacher_spec", default=None,
              help="Teacher to time (checkpoint, TorchScript, module:factory); default: a "
                   "random-init --arch checkpoint.")
@click.option("--arch", default=None, help="Default: the demo preset's teacher architecture.")
@click.option("--arch-opt", multiple=True, help="key=value (default: the demo preset's).")
@click.option("--views-per-utt", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--crop-seconds", type=float, default=2.0, show_default=True)
@click.option("--topk", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="Teacher threads, as dump's --threads (0: auto).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--shard-rows", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds of forward, dump and no-write dump (rotated order); medians.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=DOCS / "bench_dump.md", show_default=True,
              help="Markdown report to write.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where corpus, teacher and stores go (default: a new temp dir).")
def main(corpus: Path | None, speakers: int, utts_per_speaker: int, duration: float,
         teacher_spec: str | None, arch: str | None, arch_opt: tuple[str, ...],
         views_per_utt: int, crop_seconds: float, topk: int, batch_size: int, workers: int,
         threads: int, chunk_rows: int, shard_rows: int, repeats: int, out: Path,
         workdir: Path | None) -> None:
    setup_logging()
    load_start = load_average()
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_dump_")) if own_dir else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if corpus is None:
            corpus = make_corpus(workdir / "toy", speakers, utts_per_speaker, duration)
            corpus_desc = (f"synthesised: {speakers} speakers x {utts_per_speaker} x "
                           f"~{duration:g} s")
        else:
            corpus_desc = str(corpus)
        data = DataPaths(data=corpus)
        if teacher_spec is None:
            preset = PRESETS["demo"]
            arch = arch or preset.arch
            kwargs = parse_options(arch_opt) if arch_opt else (
                dict(preset.arch_kwargs) if arch == preset.arch else {})
            teacher_spec = str(make_teacher(workdir / "teacher.pt", data, arch, kwargs))
            teacher_desc = f"{arch} {kwargs}, random init"
        else:
            teacher_desc = teacher_spec
        config = DumpConfig(views_per_utt=views_per_utt, crop_seconds=crop_seconds, topk=topk,
                            augment=AugmentConfig(aug_prob=0.6), chunk_rows=chunk_rows,
                            shard_rows=shard_rows)
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        previous = torch.get_num_threads()
        dump_threads = intra_op_threads(threads, workers, DistContext(device=device))
        torch.set_num_threads(previous)
        teacher = load_teacher(teacher_spec)
        classes = LabelMap.from_manifest(data.train_manifest()).num_classes
        if topk > classes - 1:
            raise click.UsageError(f"--topk {topk} needs more than {topk} classes; the corpus "
                                   f"has {classes} (use more --speakers or a smaller --topk)")

        inputs, render_s, rows = render_inputs(data, config, batch_size, teacher.input_kind)
        runs: dict[str, list[dict[str, float]]] = {"forward": [], "no_write": [], "dump": []}
        order = ("forward", "dump", "no_write")
        for i in range(repeats):  # rotate the order: none always runs first or last
            for name in order[i % 3:] + order[:i % 3]:
                log.info("%s, repeat %d of %d", name, i + 1, repeats)
                if name == "forward":
                    runs[name].append({"wall_s": time_forward(teacher_spec, inputs, config,
                                                              dump_threads, device)})
                else:
                    runs[name].append(time_dump(teacher_spec, data, config,
                                                workdir / f"{name}.zarr", batch_size, workers,
                                                threads, name == "dump"))
        del inputs
        probe = next(iter(runs["dump"]))
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)

    forward_s = _median(r["wall_s"] for r in runs["forward"])
    dump_s = _median(r["wall_s"] for r in runs["dump"])
    dry_s = _median(r["wall_s"] for r in runs["no_write"])
    dump_cpu = _median(r["cpu_s"] for r in runs["dump"])
    dry_cpu = _median(r["cpu_s"] for r in runs["no_write"])
    best = min(runs["dump"], key=lambda r: r["wall_s"])
    assert probe["rows"] == rows, (probe["rows"], rows)
    settings = {
        "corpus": corpus_desc,
        "utterances": rows // views_per_utt,
        "rows": rows,
        "views_per_utt": views_per_utt,
        "crop_seconds": crop_seconds,
        "aug_prob": config.augment.aug_prob,
        "teacher": teacher_desc,
        "parameters_m": round(sum(p.numel() for p in teacher.module.parameters()) / 1e6, 3),
        "classes": int(classes),
        "input_kind": teacher.input_kind,
        "device": device,
        "batch_size": batch_size,
        "workers": workers,
        "threads_option": threads,
        "teacher_threads": dump_threads,
        "cores": cores(),
        "topk": topk,
        "temperatures": list(config.temperatures),
        "chunk_rows": chunk_rows,
        "shard_rows": shard_rows,
        "shards": -(-rows // shard_rows),
        "repeats": repeats,
        "blas_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    summary = {
        "teacher_forward_s": round(forward_s, 3),
        "dump_total_s": round(dump_s, 3),
        "pipeline_no_write_s": round(dry_s, 3),
        # per repeat, the dump over the forward timed beside it (a slow drift of the
        # machine's speed cancels within a repeat), then the median over repeats
        "writer_overhead": round(_median(d["wall_s"] / f["wall_s"] - 1 for d, f in zip(
            runs["dump"], runs["forward"], strict=True)), 4),
        "writer_share": round(dump_s / dry_s - 1, 4),
        "teacher_idle": round(_median(r["wall_s"] / r["forward_s"] - 1 for r in runs["dump"]), 4),
        "rows": rows,
        "rows_per_s": round(rows / dump_s, 2),
        # less noisy views of the writer's cost: CPU seconds (process + workers) with and
        # without writing, and the writer thread's busy time as a share of the dump
        "writer_share_cpu": round(dump_cpu / dry_cpu - 1, 4),
        "writer_busy_share": round(best["write_s"] / best["wall_s"], 4),
        # crops alone: rendering every row with one DataLoader worker per core
        "render_all_cores_s": round(render_s, 3),
        "settings": settings,
    }
    load_end = load_average()
    command = "python scripts/bench_dump.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out, summary, runs, machine(zarr, np),
                   f"{load_start} at the start, {load_end} at the end", command)
    log.info("wrote %s", out)

    table = [
        ("teacher forward + top-k (inputs in memory)", forward_s),
        ("dump without writing (DiscardWriter)", dry_s),
        ("full dump (workers + teacher + writer)", dump_s),
    ]
    click.echo(f"{'measurement':<44s} {'seconds':>9s} {'rows/s':>9s}")
    for name, seconds in table:
        click.echo(f"{name:<44s} {seconds:9.2f} {rows / seconds:9.1f}")
    click.echo(f"writer_overhead {summary['writer_overhead']:+.4f} (target <= 0.03)   "
               f"teacher_idle {summary['teacher_idle']:+.4f}   "
               f"writer_share {summary['writer_share']:+.4f}")
    click.echo(json.dumps(summary))
