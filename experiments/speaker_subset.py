"""Write a training manifest restricted to a share of the speakers and of each one's utterances.

``make results`` (section 3) trains teachers and students on 25 %, 50 % and 100 %
of the speakers at the same total number of utterances: with ``--speakers f`` it keeps
``--utterances u/f`` of each kept speaker's utterances (the first ones by id), so every
subset has about ``u`` of the corpus's utterances. Speakers are drawn at random with
``--seed``; a speaker keeps at least one utterance.

\b
Example:
    python scripts/speaker_subset.py --train toy/train/manifest.jsonl --speakers 0.25 \\
        --utterances 0.25 --out exp/spk25/train.jsonl
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

from speaker.io.manifest import Manifest
from speaker.io.paths import load_manifest
from store.errors import UserError


def subset(manifest: Manifest, speakers: float, utterances: float, seed: int) -> Manifest:
    """The utterances of ``round(speakers * S)`` random speakers, ``min(1, utterances /
    speakers)`` of each one's utterances (first by id, at least one)."""
    if not (0 < speakers <= 1 and 0 < utterances <= speakers):
        raise UserError(f"--speakers {speakers} must be in (0, 1] and --utterances "
                        f"{utterances} in (0, --speakers]")
    by_speaker: dict[str, list] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker, []).append(u)
    names = sorted(by_speaker)
    keep = max(2, round(speakers * len(names)))
    chosen = sorted(np.random.default_rng(seed).permutation(len(names))[:keep])
    share = utterances / speakers
    kept = []
    for i in chosen:
        utts = sorted(by_speaker[names[i]], key=lambda u: u.id)
        kept += utts[: max(1, math.floor(share * len(utts) + 1e-9))]
    return Manifest(kept, source="speaker subset")


@click.command(help=__doc__, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--train", type=click.Path(exists=True, path_type=Path), required=True,
              help="Training manifest (.jsonl, Kaldi dir or VoxCeleb tree).")
@click.option("--speakers", type=float, required=True, help="Share of the speakers kept.")
@click.option("--utterances", type=float, required=True,
              help="Share of all utterances kept (<= --speakers).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .jsonl.")
def main(train: Path, speakers: float, utterances: float, seed: int, out: Path) -> None:
    """Write the speaker/utterance subset of TRAIN to OUT."""
    sub = subset(load_manifest(train), speakers, utterances, seed)
    sub.write(out)
    click.echo(f"{len(sub)} utterances of {len(set(sub.speakers))} speakers -> {out}")
