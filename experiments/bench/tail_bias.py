"""At equal bytes per row, is an exact head plus a sampled tail closer to the full-logit DKD
than a longer exact head? Bias and spread of the loss and the gradient cosine, on two
teachers, and what the sampled tail costs at VoxCeleb2's class count.

1. **demo teacher**: the one ``scripts/topk_coverage.py`` builds (or ``--from-demo DIR``:
   a finished ``make demo``'s), its cache at k = C - 1 replayed for full logits;
2. **5,994 speakers** (VoxCeleb2's count): a toy corpus with few utterances each, a short
   teacher and a one-epoch student; its cache dumped with ``--topk 32 --tail-samples 32``
   (timed: the dump's rows/s, the draws' share, store bytes/row per array), its first rows
   replayed for full logits, and the kernels timed at k in {32, 128} with M = 32.

For each teacher, T in {1, 2, 4} and each (k, M) of
:data:`experiments.bench.tail_estimates.CONFIGS`, the relative bias of the DKD (alpha 1,
beta 8) estimate against the full-logit DKD over draw seeds, its std (all rows and 64-row
batches) and the gradient cosine (see that module). Every stage keeps its output in
``--work`` and is skipped when rerun, so a killed run resumes. Writes
docs/sampled_tail_bias.md and ends with one JSON line.

\b
Examples:
    python scripts/tail_bias.py                               # ~25 min on 2 cores
    python scripts/tail_bias.py --quick --work /tmp/tb-quick  # ~5 min: the plumbing
    python scripts/tail_bias.py --from-demo demo_out          # the demo's own teacher
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import click
import torch

from experiments.bench import tail_estimates
from experiments.bench.topk_coverage import Setup, build, replay, train_model
from experiments.machine import machine
from experiments.markdown import write_atomic
from speaker.io.paths import DataPaths
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from stage1_teacher import dump
from stage1_teacher.dump_config import DumpConfig
from stage2_student.kernels.sampled import bench_sampled
from stage2_student.train import kd_teacher_margin
from store import StoreReader
from store.atomic import write_json
from store.cli import setup_logging
from store.errors import UserError
from store.tail import draw_store_rows

log = logging.getLogger("tail_bias")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes of one run (``FULL`` or ``QUICK``)."""

    demo: Setup  # topk_coverage's setup of the demo-like teacher
    speakers: int = 5994
    teacher_epochs: int = 2
    rows: int = 2048  # replayed rows of the 5,994-speaker cache that are measured
    seeds: int = 16  # draw seeds per (T, config)
    kernel_rows: int = 262_144


FULL = Plan(demo=Setup())
QUICK = Plan(demo=Setup(speakers=100, utts_per_speaker=4, duration=1.5, teacher_epochs=3,
                        views_per_utt=1),
             speakers=600, teacher_epochs=1, rows=256, seeds=4, kernel_rows=32_768)


def _kept(path: Path, make) -> dict:
    """``make()``'s JSON result, kept in ``path`` (a rerun reads it instead)."""
    if path.exists():
        return json.loads(path.read_text())
    result = make()
    write_json(path, result)
    return result


def _add_wall(work: Path, seconds: float) -> float:
    """This run's seconds added to the earlier runs' into ``work``; -> the total."""
    path = work / "wall.json"
    total = (json.loads(path.read_text())["seconds"] if path.exists() else 0.0) + seconds
    write_json(path, {"seconds": total})
    return total


def measure_teacher(paths: tuple[Path, Path, Path, Path], seeds: int,
                    limit: int | None = None) -> dict:
    """Replay the cache's rows through teacher and student; the estimates' table."""
    reader, rows, teacher_cos, student = replay(*paths, limit=limit)
    labels = torch.as_tensor(rows.label, dtype=torch.long)
    table = tail_estimates.measure(teacher_cos, student, labels,
                                   kd_teacher_margin("margin", reader.spec.teacher), seeds)
    out = {"classes": reader.spec.num_classes, "rows": len(rows), "seeds": seeds,
           "teacher": reader.spec.teacher.arch, "table": table}
    if reader.spec.has_tail_samples:  # the dump's draws against draws from replayed logits
        again, _ = draw_store_rows(
            teacher_cos.float().numpy(), rows.label, rows.topk_index.astype("int64"),
            reader.spec.temperatures, reader.spec.tail_draws, reader.spec.extra["run_seed"],
            torch.arange(len(rows)).numpy(), rows.tail_index.dtype)
        out["cached_draws_replayed"] = float((again == rows.tail_index).mean())
        out["draws_rows_per_s"] = tail_estimates.draw_rate(teacher_cos, labels, 32, 32)
    return out


def big_teacher(plan: Plan, work: Path) -> tuple[Path, Path, Path, Path]:
    """Corpus, teacher, student at ``plan.speakers`` speakers; the top-32 + 32 draws cache."""
    corpus = work / "toy"
    if not corpus.exists():
        generate(ToyConfig(speakers=plan.speakers, utts_per_speaker=2, duration=1.0,
                           test_speakers=40, dev_speakers=0, seed=0), corpus, workers=2)
    data, setup = DataPaths(data=corpus), plan.demo
    teacher = train_model(setup, data, work / "teacher", setup.teacher_opts, plan.teacher_epochs)
    student = train_model(setup, data, work / "student", setup.student_opts, 1)
    cache = work / "logits.zarr"

    def run_dump() -> dict:
        config = DumpConfig(views_per_utt=1, crop_seconds=setup.crop_seconds, topk=32,
                            tail_samples=32, chunk_rows=1024, shard_rows=4096)
        stats = dump.dump(str(teacher), data, config, cache, resume=cache.exists(),
                          batch_size=64, workers=1)
        return {**stats, "note": "resumed" if stats["rows"] < len(StoreReader.open(cache))
                else "one run"}

    _kept(work / "dump.json", run_dump)
    return corpus, teacher, student, cache


def store_bytes(cache: Path) -> dict[str, float]:
    """On-disk bytes per row of each array (zstd-compressed shards)."""
    rows = len(StoreReader.open(cache))
    return {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / rows
            for d in sorted(cache.iterdir()) if d.is_dir()}


def kernels(rows: int) -> list[dict]:
    return [{"k": k, "m": 32, "threads": 2, **bench_sampled(rows=rows, k=k, m=32, threads=2)}
            for k in (32, 128)]


def write_report(path: Path, results: dict, facts: dict, summary: dict) -> None:
    lines = ["# Sampled tail vs a longer exact head, at equal bytes per row", "",
             "Written by `scripts/tail_bias.py` (module docstring: what is measured); rerun it "
             "to refresh. The estimator: [sampled_tail.md](sampled_tail.md).", "",
             *(f"- {key}: {value}" for key, value in facts.items()), ""]
    for name, title in (("demo", "Demo-like teacher"),
                        ("vox", f"{results['vox']['classes']:,} speakers")):
        r = results[name]
        lines += [f"## {title} (C = {r['classes']}, {r['rows']} rows, {r['seeds']} draw seeds)",
                  "", "Bias: (mean estimate - full-logit DKD) / full DKD, ± 2 standard errors "
                  "over draw seeds; std: over seeds, all rows / one 64-row batch; grad cos: "
                  "DKD gradient w.r.t. the student logits against the full-logit one (mean "
                  "over seeds / of the mean gradient). Bytes: ids + logits at one T.", "",
                  "| T | head + tail | bytes | bias | std (all / batch) | grad cos | "
                  "grad cos of mean |", "|---|---|---|---|---|---|---|"]
        for e in r["table"]:
            what = f"top-{e['k']}" + (f" + {e['m']} draws" if e["m"] else " (exact bucket)")
            spread = (f"{100 * e['std']:.2f} % / {100 * e['std_batch']:.2f} %" if e["m"]
                      else "0")
            lines.append(f"| {e['temperature']:g} | {what} | {e['bytes_per_row_one_t']} | "
                         f"{100 * e['bias']:+.2f} ± {200 * e['bias_se']:.2f} % | {spread} | "
                         f"{e['grad_cos']:.4f} | {e['grad_cos_of_mean']:.4f} |")
        lines.append("")
    v = results["vox"]
    d, b = results["dump"], results["store_bytes"]
    tail_b = b.get("tail_index", 0) + b.get("tail_logit", 0)
    lines += [f"## Costs at {v['classes']:,} classes (top-32 + 32 draws at T = 1, 2, 4)", "",
              f"- dump: {d['rows'] / d['total_s']:.1f} rows/s ({d['rows']} rows, teacher "
              f"{d['forward_s']:.1f} s, waiting for crops {d['wait_s']:.1f} s, writer "
              f"{d['write_s']:.1f} s; {d['note']}); the draws alone "
              f"{v['draws_rows_per_s']:.0f} rows/s on one thread "
              f"({100 * d['rows'] / d['total_s'] / v['draws_rows_per_s']:.1f} % of the dump's "
              "time per row)",
              f"- store, on disk per row: {sum(b.values()):.0f} B, of which the sampled tail "
              f"{tail_b:.0f} B (raw 384 B) and top-32 ids + logits "
              f"{b.get('topk_index', 0) + b.get('topk_logit', 0):.0f} B",
              f"- cached draws reproduced from replayed logits: "
              f"{100 * v['cached_draws_replayed']:.2f} % of ids", "",
              "| kernel (2 threads, M = 32) | k = 32 rows/s | k = 128 rows/s |", "|---|---|---|"]
    k32, k128 = results["kernels"]
    for name in ("teacher_probs", "sampled_tail_probs", "both"):
        lines.append(f"| {name} | {k32[name]:,.0f} | {k128[name]:,.0f} |")
    write_atomic(path, [*lines, ""], summary)


@click.command(help=__doc__)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("tail_bias_work"), show_default=True,
              help="Corpora, models, caches and per-stage results (reused when present).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("docs/sampled_tail_bias.md"), show_default=True)
@click.option("--from-demo", "demo", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="A finished `make demo` folder's teacher as the demo teacher.")
@click.option("--quick", is_flag=True, help="Small sizes (600 speakers, 256 rows, 4 seeds): "
                                            "proves the plumbing in minutes.")
@click.option("-v", "--verbose", is_flag=True)
def cli(work: Path, out_path: Path, demo: Path | None, quick: bool, verbose: bool) -> None:
    setup_logging(verbose)
    if not out_path.parent.is_dir():
        raise UserError(f"--out {out_path}: directory {out_path.parent} does not exist")
    plan = QUICK if quick else FULL
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    stages = {}
    stages["demo"] = _kept(work / "demo.json", lambda: measure_teacher(
        build(plan.demo, work / "demo", demo), plan.seeds))
    paths = big_teacher(plan, work / "vox")
    stages["vox"] = _kept(work / "vox.json",
                          lambda: measure_teacher(paths, plan.seeds, limit=plan.rows))
    stages["dump"] = json.loads((work / "vox" / "dump.json").read_text())
    stages["store_bytes"] = store_bytes(paths[3])
    stages["kernels"] = _kept(work / "kernels.json", lambda: kernels(plan.kernel_rows))
    facts = {
        "run": "`--quick` (reduced sizes: a plumbing check, not the measurement; the kernel "
               "timings on few rows are noisy)" if quick else "full",
        "sizes": ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(plan).items()
                           if k != "demo"),
        "demo-like setup": ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(plan.demo).items()),
        "demo teacher": f"a finished demo's ({demo.name})" if demo else "trained here "
                        "(the demo-like setup above, scripts/topk_coverage.py's recipe)",
        "DKD": f"alpha {tail_estimates.ALPHA}, beta {tail_estimates.BETA}, the --kd-logits "
               "margin convention; the student: a one-epoch x-vector's margin logits",
        "machine": f"{machine()}, torch threads {torch.get_num_threads()}, "
                   f"load {os.getloadavg()[0]:.1f}",
        "wall time (every run into this --work, resumed ones added)":
            f"{_add_wall(work, time.perf_counter() - t0):.0f} s",
    }
    summary = {f"{name}_T{e['temperature']:g}_k{e['k']}_m{e['m']}_bias": round(e["bias"], 5)
               for name in ("demo", "vox") for e in stages[name]["table"]}
    summary["quick"] = quick
    write_report(out_path, stages, facts, summary)
    click.echo(json.dumps(summary))
    if any(isinstance(v, float) and math.isnan(v) for v in summary.values()):
        raise UserError("a measured value is NaN")
