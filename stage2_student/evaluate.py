"""Evaluate one or more models on a trial list: ``python -m stage2_student.evaluate``.

A model is any spec :func:`speaker.evaluation.embedders.load_embedder` takes: an entkd run
folder or checkpoint, an exported ONNX / TorchScript file, ``module:factory``,
``speechbrain:DIR`` or ``wespeaker:DIR``. Embeds the test utterances with every model in
one batched pass (speaker.evaluation), scores the trials by cosine, and writes
``results.json`` (EER with its 95 % interval from a bootstrap over test speakers, minDCF at
p=0.01 and 0.05 per model), ``results.md`` (the same as a table) and ``det.png`` (all DET
curves on one plot) into ``--out``.

``--condition`` (repeatable; :mod:`speaker.evaluation.conditions`) evaluates on 2-s or 4-s
segments at seeded positions, or with MUSAN noise at 0/5/10 dB SNR; each model then has
one row per condition, named ``NAME [CONDITION]`` (a lone ``full`` keeps ``NAME``).

Example::

    python -m stage2_student.evaluate --data toy --out exp/eval \\
        --model teacher=exp/teacher/model.pt --model xvector-dkd=exp/xvector-dkd/model.pt
"""

from __future__ import annotations

from pathlib import Path

import click

from speaker.evaluation.conditions import CONDITIONS, SEED, Condition, ConditionReader
from speaker.evaluation.embedders import check_rate, load_embedder
from speaker.evaluation.evaluate import BATCH_SIZE, VerificationResult, evaluate_models
from speaker.evaluation.metrics import plot_det
from speaker.io.audio import AudioReader
from speaker.io.paths import DataPaths, data_options
from speaker.teachers.load import is_pretrained_spec
from store.atomic import atomic_write_text, write_json
from store.cli import run, setup_logging
from store.errors import UserError


def evaluate_specs(models: dict[str, str], data: DataPaths, batch_size: int = BATCH_SIZE,
                   conditions: tuple[str, ...] = ("full",),
                   seed: int = SEED, split: str = "test") -> dict[str, VerificationResult]:
    """name -> verification result of each model spec on the data's ``split`` trials (dev:
    choosing settings; test: reporting); with conditions other than a lone ``full``, names
    are ``NAME [CONDITION]``."""
    manifest, trials = data.split(split)
    rate = manifest[0].sample_rate
    reader = AudioReader(rate)
    parsed = [Condition.parse(c, seed) for c in dict.fromkeys(conditions)]
    bank = data.noise_bank(rate) if any(c.needs_noise for c in parsed) else None
    loaded = {name: load_embedder(spec) for name, spec in models.items()}
    for name, model in loaded.items():
        check_rate(model, rate, models[name])
    results: dict[str, VerificationResult] = {}
    for c in parsed:
        conditioned = ConditionReader(reader, c, manifest, bank)
        out = evaluate_models(loaded, c.manifest(manifest), trials, conditioned,
                              batch_size=batch_size)
        plain = [c.name for c in parsed] == ["full"]
        results.update({name if plain else f"{name} [{c.name}]": r for name, r in out.items()})
    return results


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


def _named_specs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``NAME=SPEC`` or ``SPEC`` (named after its directory) -> {name: spec}."""
    models: dict[str, str] = {}
    for pair in pairs:
        name, sep, spec = pair.partition("=")
        if not sep:
            name, spec = _default_name(pair), pair
        if not (Path(spec).exists() or is_pretrained_spec(spec) or ":" in spec):
            raise UserError(f"--model {pair!r}: no such checkpoint file or run folder {spec}")
        if name in models:
            raise UserError(f"--model {pair!r}: the name {name!r} is used twice; give each "
                            "model its own NAME=SPEC")
        models[name] = spec
    return models


def _default_name(spec: str) -> str:
    path = Path(spec.partition(":")[2] if is_pretrained_spec(spec) else spec)
    return path.name if path.is_dir() else path.parent.name


@click.command(epilog="""\b
Examples:
  python -m stage2_student.evaluate --data toy --out exp/eval \\
      --model teacher=exp/teacher/model.pt --model xvector-dkd=exp/xvector-dkd/model.pt
  python -m stage2_student.evaluate --test vox1/manifest.jsonl --trials vox1/veri_test2.txt \\
      --out exp/eval --model exp/r34-dkd/model.pt --model exp/xv-dkd/model.pt  # NAME: its dir
  python -m stage2_student.evaluate --data toy --out exp/eval --model xv=xvector.onnx \\
      --model ecapa=speechbrain:pretrained/spkrec-ecapa-voxceleb \\
      --condition full --condition 2s --condition noise5
""")
@data_options
@click.option("--model", "model_specs", multiple=True, required=True,
              help="NAME=SPEC (repeatable): a run folder or model.pt, an .onnx / TorchScript "
                   "file, module:factory, speechbrain:DIR or wespeaker:DIR; NAME defaults to "
                   "the directory.")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True,
              help="Utterances of equal length embedded together.")
@click.option("--condition", "conditions", multiple=True, default=("full",), show_default=True,
              metavar="|".join(CONDITIONS),
              help="Test condition (repeatable): whole utterances, seeded 2-/4-s segments, "
                   "or MUSAN noise (--musan) at 0/5/10 dB SNR.")
@click.option("--condition-seed", type=int, default=SEED, show_default=True,
              help="Seed of the segment positions and noise draws.")
@click.option("--split", type=click.Choice(["dev", "test"]), default="test", show_default=True,
              help="Which trials to score: dev (choosing settings) or test (reporting).")
@click.option("-v", "--verbose", is_flag=True)
def cli(model_specs: tuple[str, ...], out: Path, batch_size: int, conditions: tuple[str, ...],
        condition_seed: int, split: str, verbose: bool, **opts) -> None:
    """Score trials with each model; write a results table and a DET plot."""
    setup_logging(verbose)
    results = evaluate_specs(_named_specs(model_specs), DataPaths.from_options(opts),
                             batch_size, conditions, condition_seed, split)
    click.echo(write_report(results, out), nl=False)


if __name__ == "__main__":
    run(cli)
