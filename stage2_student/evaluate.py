"""Evaluate one or more checkpoints on a trial list: ``python -m stage2_student.evaluate``.

Embeds the test utterances with every model in one batched pass (speaker.evaluation),
scores the trials by cosine, and writes ``results.json`` (EER with its 95 % interval from a
bootstrap over test speakers, minDCF at p=0.01 and 0.05 per model), ``results.md`` (the
same as a table) and ``det.png`` (all DET curves on one plot) into ``--out``.

Example::

    python -m stage2_student.evaluate --data toy --out exp/eval \\
        --model teacher=exp/teacher/model.pt --model xvector-dkd=exp/xvector-dkd/model.pt
"""

from __future__ import annotations

from pathlib import Path

import click

from speaker.evaluation.evaluate import BATCH_SIZE, VerificationResult, evaluate_models
from speaker.evaluation.metrics import plot_det
from speaker.io.audio import AudioReader
from speaker.io.paths import DataPaths, data_options
from speaker.models.checkpoint import load_checkpoint
from store.atomic import atomic_write_text, write_json
from store.cli import run, setup_logging
from store.errors import UserError


def evaluate_checkpoints(models: dict[str, Path], data: DataPaths,
                         batch_size: int = BATCH_SIZE,
                         split: str = "test") -> dict[str, VerificationResult]:
    """name -> verification result of each checkpoint on the data's ``split`` trials."""
    manifest, trials = data.split(split)
    reader = AudioReader(manifest[0].sample_rate)
    loaded = {name: load_checkpoint(path).model for name, path in models.items()}
    return evaluate_models(loaded, manifest, trials, reader, batch_size=batch_size)


def summarize(result: VerificationResult) -> dict[str, float]:
    """EER, its bootstrap 95 % interval (over test speakers) and minDCF of one model."""
    lo, hi = result.eer_ci()
    return {**result.summary(), "eer_ci95_low": lo, "eer_ci95_high": hi}


def results_table(summaries: dict[str, dict[str, float]]) -> str:
    """Markdown table of EER (%) with its 95 % interval, and minDCF per model."""
    lines = ["| model | EER (%) | 95 % CI | minDCF p=0.05 | minDCF p=0.01 |",
             "|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {100 * s['eer']:.2f} | {100 * s['eer_ci95_low']:.1f} - "
                     f"{100 * s['eer_ci95_high']:.1f} | {s['min_dcf_0.05']:.3f} | "
                     f"{s['min_dcf_0.01']:.3f} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, VerificationResult], out: Path) -> str:
    """Write results.json, results.md and det.png into ``out``; -> the table."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = {name: summarize(r) for name, r in results.items()}
    table = results_table(summaries)
    write_json(out / "results.json", summaries)
    atomic_write_text(out / "results.md", table)
    plot_det({name: r.det() for name, r in results.items()}, out / "det.png")
    return table


def _named_paths(pairs: tuple[str, ...]) -> dict[str, Path]:
    models: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            name, path = Path(pair).parent.name, pair
        if not Path(path).is_file():
            raise UserError(f"--model {pair!r}: no such checkpoint file {path}")
        if name in models:
            raise UserError(f"--model {pair!r}: the name {name!r} is used twice; give each "
                            "model its own NAME=checkpoint.pt")
        models[name] = Path(path)
    return models


@click.command(epilog="""\b
Examples:
  python -m stage2_student.evaluate --data toy --out exp/eval \\
      --model teacher=exp/teacher/model.pt --model xvector-dkd=exp/xvector-dkd/model.pt
  python -m stage2_student.evaluate --test vox1/manifest.jsonl --trials vox1/veri_test2.txt \\
      --out exp/eval --model exp/r34-dkd/model.pt --model exp/xv-dkd/model.pt  # NAME: its dir
""")
@data_options
@click.option("--model", "model_specs", multiple=True, required=True,
              help="NAME=checkpoint.pt (repeatable); NAME defaults to the parent directory.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True,
              help="Utterances of equal length embedded together.")
@click.option("--split", type=click.Choice(["dev", "test"]), default="test", show_default=True,
              help="Which trials to score: dev (choosing settings) or test (reporting).")
@click.option("-v", "--verbose", is_flag=True)
def cli(model_specs: tuple[str, ...], out: Path, batch_size: int, split: str, verbose: bool,
        **opts) -> None:
    """Score trials with each model; write a results table and a DET plot."""
    setup_logging(verbose)
    results = evaluate_checkpoints(_named_paths(model_specs), DataPaths.from_options(opts),
                                   batch_size, split)
    click.echo(write_report(results, out), nl=False)


if __name__ == "__main__":
    run(cli)
