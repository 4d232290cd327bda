"""Test conditions: the test audio whole, cut short, or under noise, reproducibly.

``full`` is the utterance as it is; ``2s`` / ``4s`` a segment of that length whose start
is drawn per utterance from ``(seed, crc32(utterance id))`` (an utterance no longer than
the segment is used whole); ``noise0`` / ``noise5`` / ``noise10`` the whole utterance plus
one MUSAN ``noise/`` file, from an offset (wrapping around), both drawn from the same
per-utterance stream, scaled so that ``10 log10(P_speech / P_noise)`` on the mix is the
condition's SNR in dB (the mixing is :func:`speaker.views.augment.apply_params`, the
training augmentation's own). Every draw depends only on the seed and the utterance id,
so every model sees the same test audio, in any order and any batch.

A condition acts through two objects :func:`speaker.evaluation.evaluate.evaluate_models`
already takes: the manifest (:meth:`Condition.manifest`: segment lengths, so batches
group equal lengths) and the reader (:class:`ConditionReader`).

Example::

    >>> c = Condition.parse("2s")
    >>> c.seconds, c.snr_db, Condition.parse("noise5").snr_db
    (2.0, None, 5.0)
    >>> c.segment_start("id1/a/00001.wav", num_samples=80000, sample_rate=16000) < 80000 - 32000
    True
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest, Utterance
from speaker.views.augment import AugmentParams, NoiseBank, apply_params
from store.errors import UserError

CONDITIONS = ("full", "2s", "4s", "noise0", "noise5", "noise10")
SEED = 0


@dataclass(frozen=True)
class Condition:
    """One test condition (see the module doc); ``seed`` fixes every draw."""

    name: str
    seconds: float | None = None
    snr_db: float | None = None
    seed: int = SEED

    @classmethod
    def parse(cls, name: str, seed: int = SEED) -> Condition:
        if name == "full":
            return cls(name, seed=seed)
        if name.endswith("s") and name[:-1].isdigit() and int(name[:-1]) > 0:
            return cls(name, seconds=float(name[:-1]), seed=seed)
        if name.startswith("noise") and name[5:].lstrip("-").isdigit():
            return cls(name, snr_db=float(name[5:]), seed=seed)
        raise UserError(f"unknown condition {name!r}; choose from {', '.join(CONDITIONS)} "
                        "(or any NUMs / noiseDB)")

    @property
    def needs_noise(self) -> bool:
        return self.snr_db is not None

    def _rng(self, utt_id: str, stream: int) -> np.random.Generator:
        key = [self.seed, zlib.crc32(utt_id.encode()), stream]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))

    def segment_samples(self, sample_rate: int) -> int | None:
        return None if self.seconds is None else int(round(self.seconds * sample_rate))

    def segment_start(self, utt_id: str, num_samples: int, sample_rate: int) -> int:
        """Where the segment of ``utt_id`` starts (0 when the utterance is not longer)."""
        seg = self.segment_samples(sample_rate)
        if seg is None or num_samples <= seg:
            return 0
        return int(self._rng(utt_id, 0).integers(0, num_samples - seg + 1))

    def noise_source(self, utt_id: str, bank: NoiseBank) -> tuple[int, int]:
        """``(noise file index, offset)`` mixed into ``utt_id``."""
        if not bank.noise:
            raise UserError(f"condition {self.name} needs MUSAN noise: give --musan DIR with "
                            "noise/ wavs (or --data ROOT with musan/noise/)")
        rng = self._rng(utt_id, 1)
        i = int(rng.integers(0, len(bank.noise)))
        return i, int(rng.integers(0, len(bank.noise[i][1])))

    def manifest(self, manifest: Manifest) -> Manifest:
        """``manifest`` with each utterance's length as this condition presents it."""
        if self.seconds is None:
            return manifest
        return Manifest([replace(u, num_samples=min(u.num_samples,
                                                    self.segment_samples(u.sample_rate)))
                         for u in manifest])


class ConditionReader:
    """An :class:`AudioReader` look-alike that reads each utterance under ``condition``.

    ``manifest`` is the original one (whole-utterance lengths), for the segment draws.
    """

    def __init__(self, reader: AudioReader, condition: Condition, manifest: Manifest,
                 bank: NoiseBank | None = None) -> None:
        if condition.needs_noise and (bank is None or not bank.noise):
            condition.noise_source("", bank or NoiseBank.empty())  # raises the one-line error
        self.reader, self.condition, self.bank = reader, condition, bank
        self.sample_rate = reader.sample_rate
        self._original = {u.id: u for u in manifest}

    def conditioned(self, utt: Utterance) -> np.ndarray:
        """The whole test signal of ``utt`` under the condition."""
        c, original = self.condition, self._original[utt.id]
        seg = c.segment_samples(original.sample_rate)
        if seg is not None and original.num_samples > seg:
            start = c.segment_start(utt.id, original.num_samples, original.sample_rate)
            return self.reader.read(original, start, seg)
        wave = self.reader.read(original)
        if c.snr_db is None:
            return wave
        params = AugmentParams("noise", c.snr_db, (c.noise_source(utt.id, self.bank),), 0.0)
        return apply_params(wave, params, self.bank)

    def read(self, utt: Utterance, start: int = 0, length: int | None = None) -> np.ndarray:
        """Like :meth:`AudioReader.read`, on the conditioned signal (repeat-padded)."""
        return AudioReader._crop(self.conditioned(utt), utt.path, start, length)
