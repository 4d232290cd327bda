"""Score a trial list from stored embeddings: ``python -m stage2_student.score``.

Reads files written by ``stage2_student.embed``, cosine-scores the trials
(:func:`speaker.evaluation.evaluate.score_trials`) and writes the report
``stage2_student.evaluate`` writes (``results.json``, ``results.md``, ``det.png``: EER with
its speaker-bootstrap 95 % interval, minDCF at p=0.01 and 0.05) -- the same numbers, since
the embeddings, the scoring and the metrics are the same code.

``--cohort TRAIN.h5`` (embeddings of a training list, e.g. ``embed --input data/train``)
turns on adaptive s-norm (:mod:`speaker.evaluation.scoring`): the cohort's mean embedding is
subtracted from every embedding, and the cohort is one mean embedding per training speaker
(each utterance where the speakers are unknown), of which the ``--top-n`` best-matching
normalise each side of a trial.

Example::

    python -m stage2_student.embed --model exp/xvector-dkd --input data/test --out test.h5
    python -m stage2_student.score --embeddings test.h5 --trials data/test/trials.txt --out ev
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from speaker.evaluation.evaluate import VerificationResult, score_trials
from speaker.io.manifest import read_trials
from stage2_student.embed import Embedded, read_embeddings
from stage2_student.evaluate import write_report
from store.cli import run, setup_logging
from store.errors import UserError


def cohort_of(train: Embedded) -> tuple[np.ndarray, np.ndarray]:
    """(mean embedding, cohort matrix) of a training list's embeddings: per-speaker means
    when its speakers are known, else every utterance."""
    mean = train.matrix.astype(np.float64).mean(axis=0)
    if not train.speakers_known:
        return mean, train.matrix
    speakers = np.array(train.speakers)
    names = sorted(set(train.speakers))
    return mean, np.stack([train.matrix[speakers == s].mean(axis=0) for s in names])


def score_file(embedded: Embedded, trials_path: Path, cohort: Embedded | None = None,
               top_n: int = 300) -> VerificationResult:
    """The trials of ``trials_path`` scored from ``embedded`` (AS-norm with ``cohort``)."""
    trials = read_trials(trials_path, set(embedded.ids))
    if not embedded.speakers_known:
        raise UserError("the embeddings' speakers are unknown (a wav list), so the EER's "
                        "bootstrap interval cannot be drawn; embed a manifest instead")
    speakers = dict(zip(embedded.ids, embedded.speakers, strict=True))
    mean = norm_cohort = None
    if cohort is not None:
        mean, norm_cohort = cohort_of(cohort)
    return score_trials(embedded.as_dict(), trials, speakers, cohort=norm_cohort, mean=mean,
                        top_n=top_n)


def _named_files(pairs: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep:
            name, path = Path(pair).stem, pair
        if not Path(path).is_file():
            raise UserError(f"--embeddings {pair!r}: no such file {path}")
        if name in files:
            raise UserError(f"--embeddings {pair!r}: the name {name!r} is used twice")
        files[name] = Path(path)
    return files


@click.command(epilog="""\b
Examples:
  python -m stage2_student.score --embeddings test.h5 --trials data/test/trials.txt --out ev
  python -m stage2_student.score --embeddings xv=xv_test.h5 --embeddings r34=r34_test.h5 \\
      --trials data/test/trials.txt --cohort xv_train.h5 --top-n 300 --out ev_asnorm
""")
@click.option("--embeddings", "files", multiple=True, required=True,
              help="NAME=FILE.h5 from stage2_student.embed (repeatable; NAME: the file stem).")
@click.option("--trials", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--cohort", type=click.Path(exists=True, path_type=Path), default=None,
              help="Embeddings of a training list: AS-norm cohort and mean (one file for all).")
@click.option("--top-n", type=click.IntRange(min=1), default=300, show_default=True,
              help="AS-norm: best cohort scores kept per embedding.")
@click.option("-v", "--verbose", is_flag=True)
def cli(files: tuple[str, ...], trials: Path, out: Path, cohort: Path | None, top_n: int,
        verbose: bool) -> None:
    """Score trials from stored embeddings; write a results table and a DET plot."""
    setup_logging(verbose)
    train = None if cohort is None else read_embeddings(cohort)
    results = {name: score_file(read_embeddings(path), trials, train, top_n)
               for name, path in _named_files(files).items()}
    click.echo(write_report(results, out), nl=False)


if __name__ == "__main__":
    run(cli)
