"""The synthetic corpus's parameters, speaker identities and seeding (one ``PCG64`` stream
per tagged draw, so any speaker or utterance can be made alone)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from store.errors import UserError

FORMAT_VERSION = 1
DEV_BASE = 80_000  # global index of the first dev speaker
TEST_BASE = 90_000  # global index of the first test speaker
BABBLE_BASE = 100_000  # voices of musan/speech, never in train or test
UTTS_PER_VIDEO = 4
# SeedSequence domain tags
TAG_POPULATION, TAG_FAMILY, TAG_SPEAKER, TAG_VIDEO, TAG_UTTERANCE, TAG_TRIALS, TAG_BANK = range(7)
TAG_DEV_TRIALS = 7
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines the corpus bytes (``workers`` does not).

    The spreads are in standardised parameter units: populations are far apart, families
    less, speakers of a family closer still; ``session_variation`` scales the recording and
    voice-state variation between a speaker's utterances, ``snr_db`` the background noise.

    Example::

        >>> ToyConfig(speakers=6, utts_per_speaker=3, duration=1.0, test_speakers=3).test_utts
        3
    """

    speakers: int = 200
    seed: int = 0
    utts_per_speaker: int = 10
    test_speakers: int = 100
    test_utts_per_speaker: int | None = None  # None: same as utts_per_speaker
    dev_speakers: int = 40  # held out for choosing settings; 0: no dev/ split
    duration: float = 3.0  # mean seconds per utterance (each is 0.8-1.2 times that)
    sample_rate: int = 16000
    pack: bool = False
    populations: int = 8
    families: int = 4  # per population
    population_spread: float = 1.0
    family_spread: float = 0.6
    speaker_spread: float = 0.4
    session_variation: float = 1.0
    snr_db: float = 25.0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.speakers <= DEV_BASE, f"--speakers must be in [1, {DEV_BASE}]"),
            (self.dev_speakers == 0 or 2 <= self.dev_speakers <= TEST_BASE - DEV_BASE,
             f"--dev-speakers must be 0 or in [2, {TEST_BASE - DEV_BASE}] (trials need "
             "non-target pairs)"),
            (0 <= self.seed < 2**63, "--seed must be in [0, 2**63)"),
            (self.utts_per_speaker >= 1, "--utts-per-speaker must be >= 1"),
            (2 <= self.test_speakers <= BABBLE_BASE - TEST_BASE,
             f"--test-speakers must be in [2, {BABBLE_BASE - TEST_BASE}] (trials need "
             "non-target pairs)"),
            (self.test_utts_per_speaker is None or self.test_utts_per_speaker >= 2,
             "--test-utts-per-speaker must be >= 2 (trials need target pairs)"),
            (0.2 <= self.duration <= 60.0, "--duration must be in [0.2, 60] seconds"),
            (8000 <= self.sample_rate <= 48000, "--sample-rate must be in [8000, 48000]"),
            (self.populations >= 1 and self.families >= 1,
             "--populations and --families must be >= 1"),
            (min(self.population_spread, self.family_spread, self.speaker_spread,
                 self.session_variation) >= 0, "spreads and --session-variation must be >= 0"),
            (-20.0 <= self.snr_db <= 100.0, "--snr-db must be in [-20, 100]"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.test_utts < 2:
            raise UserError("test speakers need >= 2 utterances each: set "
                            "--test-utts-per-speaker (or --utts-per-speaker) to 2 or more")

    @property
    def test_utts(self) -> int:
        return self.utts_per_speaker if self.test_utts_per_speaker is None else \
            self.test_utts_per_speaker

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_utts_per_speaker"] = self.test_utts
        return d


def tagged_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def speaker_id(index: int) -> str:
    """``id00012`` for global speaker index 12 (dev speakers start at 80000, test at 90000)."""
    return f"id{index:05d}"


def family_of(cfg: ToyConfig, index: int) -> tuple[int, int]:
    """(population, family) of global speaker ``index``; families are numbered globally."""
    family = index % (cfg.populations * cfg.families)
    return family // cfg.families, family
