"""Which optimizer settings make a short CPU run learn? EER per epoch for a few recipes.

Trains one architecture alone (AAM cross-entropy, no teacher: what
``python -m stage1_teacher.train`` runs) on one corpus with each recipe below, evaluates
on the corpus's **dev** trials every ``--eval-every`` epochs (a sweep chooses settings, so it
never scores the test trials; a corpus without ``dev/`` is refused), and writes the table to
docs/recipe_sweep.md. Recipes differ only in the schedule (optimizer, LR, warm-up,
margin ramp), so the table shows what the schedule alone does on a run of a few
hundred steps -- the regime of the demo and the tests, far from wespeaker's 150 epochs.

Prints the table and, as its last line, one JSON object {recipe: final EER}.

\b
Examples:
  python scripts/sweep_recipe.py --corpus demo_out/toy            # demo student, ~15 min
  python scripts/sweep_recipe.py --arch ecapa --arch-opt channels=256 --epochs 8
  python scripts/sweep_recipe.py --recipe sgd-0.1 --recipe adamw-3e-3 --speakers 100
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click

from experiments.machine import cores, machine
from experiments.markdown import write_atomic
from experiments.paths import DOCS
from speaker.io.paths import DataPaths
from speaker.toy.config import ToyConfig
from speaker.toy.corpus import generate
from speaker.training.trainer import Schedule, scaled_schedule
from speaker.views.augment import AugmentConfig
from stage1_teacher.train import TeacherConfig, train_teacher
from store.cli import parse_options, setup_logging

log = logging.getLogger("sweep_recipe")

RECIPES = {  # name -> (optimizer, peak LR)
    "sgd-0.1": ("sgd", 0.1),  # wespeaker's LR (session 1's demo preset)
    "sgd-0.02": ("sgd", 0.02),
    "sgd-0.01": ("sgd", 0.01),
    "sgd-0.005": ("sgd", 0.005),
    "adamw-1e-2": ("adamw", 1e-2),
    "adamw-3e-3": ("adamw", 3e-3),
    "adamw-1e-3": ("adamw", 1e-3),
}


def recipes(epochs: int) -> dict[str, Schedule]:
    """The schedules compared: speaker.training.trainer.scaled_schedule of each optimizer and LR
    (warm-up 1/8 of the run, margin ramp 1/8 -> 1/2, LR decays 100x)."""
    return {name: scaled_schedule(epochs, opt, lr) for name, (opt, lr) in RECIPES.items()}


def run_recipe(name: str, schedule: Schedule, base: TeacherConfig, data: DataPaths,
               workdir: Path) -> dict:
    config = replace(base, schedule=schedule)
    t0 = time.perf_counter()
    train_teacher(config, data, workdir / name, resume=False)
    seconds = time.perf_counter() - t0
    history = json.loads((workdir / name / "results.json").read_text())["history"]
    return {"seconds": seconds, "history": history}


def write_markdown(path: Path, results: dict[str, dict], schedules: dict[str, Schedule],
                   settings: dict, command: str) -> None:
    evals = sorted({h["epoch"] for r in results.values() for h in r["history"] if "eer" in h})
    lines = [
        "# Recipe sweep: what makes a short CPU run learn",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"- Machine: {machine()}.",
        f"- Model: {settings['arch']} {settings['arch_kwargs']} trained alone (AAM softmax, "
        f"scale 32, margin 0.2), {settings['epochs']} epochs x {settings['steps']} steps of "
        f"{settings['batch_size']} {settings['crop_seconds']} s crops, augmentation "
        f"probability {settings['aug_prob']}.",
        f"- Corpus: {settings['corpus']}; EER on its dev trials (cosine, full utterances).",
        "",
        "| recipe | optimizer | lr -> final | weight decay | "
        + " | ".join(f"EER @{e}" for e in evals) + " | minutes |",
        "|---|---|---|---:|" + "---:|" * len(evals) + "---:|",
    ]
    for name, result in results.items():
        s = schedules[name]
        eer = {h["epoch"]: h["eer"] for h in result["history"] if "eer" in h}
        lines.append(
            f"| {name} | {s.optimizer} | {s.lr:g} -> {s.final_lr:g} | {s.weight_decay:g} | "
            + " | ".join(f"{100 * eer[e]:.2f} %" if e in eer else "" for e in evals)
            + f" | {result['seconds'] / 60:.1f} |"
        )
    lines += ["", "Final training loss / accuracy (last epoch, with margin):", ""]
    for name, result in results.items():
        last = result["history"][-1]
        lines.append(f"- {name}: loss {last['loss']:.3f}, accuracy {last['acc']:.3f}")
    lines.append("")
    write_atomic(path, lines)


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Prepared data root (default: synthesise the demo corpus).")
@click.option("--speakers", type=click.IntRange(min=2), default=200, show_default=True)
@click.option("--utts-per-speaker", type=click.IntRange(min=2), default=10, show_default=True)
@click.option("--test-speakers", type=click.IntRange(min=2), default=100, show_default=True)
@click.option("--arch", default="xvector", show_default=True)
@click.option("--arch-opt", multiple=True, default=("channels=128", "embed_dim=128"),
              show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--recipe", "chosen", multiple=True, help="Run only these recipes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=DOCS / "recipe_sweep.md", show_default=True)
def main(corpus: Path | None, speakers: int, utts_per_speaker: int, test_speakers: int,
         arch: str, arch_opt: tuple[str, ...], epochs: int, batch_size: int, eval_every: int,
         workers: int, chosen: tuple[str, ...], out: Path) -> None:
    setup_logging()
    schedules = recipes(epochs)
    unknown = sorted(set(chosen) - set(schedules))
    if unknown:
        raise click.UsageError(f"unknown --recipe {unknown[0]}; choose from {sorted(schedules)}")
    schedules = {k: v for k, v in schedules.items() if not chosen or k in chosen}
    with tempfile.TemporaryDirectory(prefix="sweep_recipe_") as tmp:
        workdir = Path(tmp)
        if corpus is None:
            corpus = workdir / "toy"
            generate(ToyConfig(speakers=speakers, utts_per_speaker=utts_per_speaker,
                               test_speakers=test_speakers, seed=0), corpus,
                     workers=cores())
            corpus_desc = (f"toy, {speakers} training speakers x {utts_per_speaker} "
                           f"utterances, {test_speakers} test speakers")
        else:
            corpus_desc = str(corpus)
        data = DataPaths(data=corpus)
        if not data.has_dev:
            raise click.UsageError(f"--corpus {corpus}: no dev/ split (dev/manifest.jsonl); "
                                   "the sweep scores dev trials, never test ones")
        base = TeacherConfig(arch=arch, arch_kwargs=parse_options(arch_opt), epochs=epochs,
                             batch_size=batch_size, crop_seconds=2.0, views_per_utt=1,
                             schedule=Schedule(), augment=AugmentConfig(aug_prob=0.6),
                             eval_every=eval_every, workers=workers)
        results = {}
        for name, schedule in schedules.items():
            log.info("recipe %s: %s", name, schedule)
            results[name] = run_recipe(name, schedule, base, data, workdir)
            log.info("recipe %s: %s", name, results[name]["history"][-1])
        steps = len(data.train_manifest()) // batch_size
    settings = {"arch": arch, "arch_kwargs": parse_options(arch_opt), "epochs": epochs,
                "steps": steps, "batch_size": batch_size, "crop_seconds": base.crop_seconds,
                "aug_prob": base.augment.aug_prob, "corpus": corpus_desc}
    command = "python scripts/sweep_recipe.py" + "".join(f" {a}" for a in sys.argv[1:])
    write_markdown(out, results, schedules, settings, command)
    click.echo(out.read_text())
    click.echo(json.dumps({k: r["history"][-1].get("eer") for k, r in results.items()}))
