"""Batched evaluation against batch 1, side by side in one run, on a finished demo.

Embeds the demo's test utterances with every model of a ``scripts/demo.py`` output
folder (teacher and students) twice, in alternating order per repeat:

- ``batch1``: what evaluation did before: each model on its own, every utterance read,
  featurised and embedded alone;
- ``batched``: :func:`speaker.evaluation.evaluate.evaluate_models`: one pass, each batch of
  equal-length utterances read and featurised once for all models.

Reports wall seconds of each (the median over repeats), their ratio, and the largest EER
difference between the two over the models (points), then writes docs/bench_eval.md.
Prints, last, one JSON object with ``speedup`` and ``max_eer_diff_points``.

\b
Examples:
  python scripts/bench_eval.py --demo demo_out
  python scripts/bench_eval.py --demo demo_out --threads 1 --batch-size 32 --max-trim 0.02
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import torch

from experiments.machine import load_average, machine
from experiments.markdown import write_atomic
from experiments.paths import DOCS
from speaker.evaluation.evaluate import BATCH_SIZE, evaluate_model, evaluate_models
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest
from speaker.io.paths import DataPaths
from speaker.models.checkpoint import load_checkpoint

REPORT = DOCS / "bench_eval.md"


def demo_models(demo: Path) -> dict[str, Path]:
    """teacher + every finished student of a demo folder, in the demo's order."""
    models = {"teacher": demo / "teacher" / "model.pt"}
    for result in sorted((demo / "students").glob("*/results.json")):
        models[result.parent.name] = result.parent / "model.pt"
    missing = [str(p) for p in models.values() if not p.is_file()]
    if missing:
        raise click.ClickException(f"no checkpoint at {', '.join(missing)}: run the demo first")
    return models


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--demo", type=click.Path(path_type=Path, exists=True), default=Path("demo_out"),
              show_default=True, help="Output folder of scripts/demo.py.")
@click.option("--threads", type=int, default=2, show_default=True, help="Torch threads.")
@click.option("--batch-size", type=int, default=BATCH_SIZE, show_default=True)
@click.option("--max-trim", type=float, default=0.0, show_default=True)
@click.option("--repeats", type=int, default=1, show_default=True)
@click.option("--speakers", type=int, default=0,
              help="Only the first N test speakers and the trials among them (0: all).")
@click.option("--report", type=click.Path(path_type=Path), default=REPORT, show_default=True)
def main(demo: Path, threads: int, batch_size: int, max_trim: float, repeats: int,
         speakers: int, report: Path) -> None:
    """Time batch-1 against batched evaluation of a demo's models; write the report."""
    torch.set_num_threads(threads)
    load = load_average()
    paths = demo_models(demo)
    models = {name: load_checkpoint(p).model for name, p in paths.items()}
    manifest, trials = DataPaths.from_options({"data": demo / "toy"}).test_set()
    if speakers:
        keep = set(sorted({u.speaker for u in manifest})[:speakers])
        manifest = Manifest([u for u in manifest if u.speaker in keep])
        ids = set(manifest.ids)
        trials = [t for t in trials if t.enroll in ids and t.test in ids]
    reader = AudioReader(manifest[0].sample_rate)
    wall: dict[str, list[float]] = {"batch1": [], "batched": []}
    eers: dict[str, dict[str, float]] = {}
    for r in range(repeats):
        for mode in (("batch1", "batched") if r % 2 == 0 else ("batched", "batch1")):
            t0 = time.perf_counter()
            if mode == "batch1":
                results = {name: evaluate_model(m, manifest, trials, reader, batch_size=1)
                           for name, m in models.items()}
            else:
                results = evaluate_models(models, manifest, trials, reader,
                                          batch_size=batch_size, max_trim=max_trim)
            wall[mode].append(time.perf_counter() - t0)
            eers[mode] = {name: res.eer for name, res in results.items()}
            click.echo(f"repeat {r + 1} {mode}: {wall[mode][-1]:.1f} s", err=True)
    t1, tb = statistics.median(wall["batch1"]), statistics.median(wall["batched"])
    diff = {name: 100 * abs(eers["batched"][name] - eers["batch1"][name]) for name in models}
    rows = [f"| {name} | {100 * eers['batch1'][name]:.3f} | {100 * eers['batched'][name]:.3f} "
            f"| {diff[name]:.3f} |" for name in models]
    summary = {"batch1_s": round(t1, 2), "batched_s": round(tb, 2),
               "speedup": round(t1 / tb, 2), "max_eer_diff_points": round(max(diff.values()), 4),
               "models": len(models), "utterances": len(manifest), "trials": len(trials)}
    lines = [
        "# Batched evaluation against batch 1",
        "",
        f"`python scripts/bench_eval.py --demo {demo} --threads {threads} --batch-size "
        f"{batch_size} --max-trim {max_trim} --repeats {repeats} --speakers {speakers}` on "
        f"{datetime.now(UTC):%Y-%m-%d}: {machine()}, "
        f"{threads} torch threads; load average {load} at the start (other jobs inflate both "
        "columns alike: the modes alternate within the run).",
        "",
        f"{len(models)} models (teacher and students of `{demo}`), {len(manifest)} test "
        f"utterances, {len(trials)} trials. batch 1: each model alone, every utterance read, "
        f"featurised and embedded by itself (evaluation before batching). batched: one pass, "
        f"runs of up to {batch_size} utterances of equal length (max trim {max_trim}) read "
        "and featurised once for all models.",
        "",
        "| | wall s (median) |",
        "|---|---:|",
        f"| batch 1 | {t1:.1f} |",
        f"| batched | {tb:.1f} |",
        f"| speed-up | {t1 / tb:.2f}x |",
        "",
        "| model | EER batch 1 (%) | EER batched (%) | difference (points) |",
        "|---|---:|---:|---:|",
        *rows,
        "",
    ]
    write_atomic(report, lines, summary)
    click.echo("\n".join(lines))
    click.echo(json.dumps(summary))
