"""``python -m speaker.toy``: the command line of the synthetic corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from speaker.toy.config import (
    ToyConfig,
)
from speaker.toy.corpus import generate
from store.cli import run, setup_logging

# ---- CLI -----------------------------------------------------------------------------------


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  python -m speaker.toy --speakers 200 --seed 0 --out toy
  python -m speaker.toy --speakers 2000 --utts-per-speaker 8 --pack --workers 2 --out toy2k
  python -m speaker.toy --speakers 200 --speaker-spread 0.3 --snr-db 20 --out toy-hard
""")
@click.option("--speakers", type=int, default=ToyConfig.speakers, show_default=True,
              help="Training speakers.")
@click.option("--seed", type=int, default=ToyConfig.seed, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output directory (must not exist or be empty, unless --force).")
@click.option("--utts-per-speaker", type=int, default=ToyConfig.utts_per_speaker,
              show_default=True)
@click.option("--duration", type=float, default=ToyConfig.duration, show_default=True,
              help="Mean utterance length in seconds (each is 0.8-1.2x).")
@click.option("--dev-speakers", type=int, default=ToyConfig.dev_speakers, show_default=True,
              help="Held-out speakers for dev/ and its trials (choosing settings); 0: none.")
@click.option("--test-speakers", type=int, default=ToyConfig.test_speakers, show_default=True,
              help="Held-out speakers for test/ and trials.txt.")
@click.option("--test-utts-per-speaker", type=int, default=None,
              help="Utterances per test speaker [default: --utts-per-speaker].")
@click.option("--pack/--no-pack", default=False, show_default=True,
              help="Write audio.h5 HDF5 packs instead of wav trees.")
@click.option("--sample-rate", type=int, default=ToyConfig.sample_rate, show_default=True)
@click.option("--populations", type=int, default=ToyConfig.populations, show_default=True)
@click.option("--families", type=int, default=ToyConfig.families, show_default=True,
              help="Families per population.")
@click.option("--population-spread", type=float, default=ToyConfig.population_spread,
              show_default=True)
@click.option("--family-spread", type=float, default=ToyConfig.family_spread,
              show_default=True, help="Spread of families inside a population.")
@click.option("--speaker-spread", type=float, default=ToyConfig.speaker_spread,
              show_default=True, help="Spread of speakers inside a family (lower = harder).")
@click.option("--session-variation", type=float, default=ToyConfig.session_variation,
              show_default=True,
              help="Scale of recording/voice-state variation between a speaker's utterances "
                   "(higher = harder).")
@click.option("--snr-db", type=float, default=ToyConfig.snr_db, show_default=True,
              help="Mean background-noise SNR of the recordings (lower = harder).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes; the output does not depend on it.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("-v", "--verbose", is_flag=True)
def cli(out: Path, workers: int, force: bool, verbose: bool, **params: Any) -> None:
    """Synthesise a deterministic multi-speaker corpus (train, test + trials, noises, RIRs)."""
    setup_logging(verbose)
    generate(ToyConfig(**params), out, workers=workers, force=force)


if __name__ == "__main__":
    run(cli)
