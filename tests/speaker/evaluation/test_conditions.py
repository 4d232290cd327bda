"""Test conditions (speaker.evaluation.conditions): segments at their seeded positions,
recomputed directly; noise at the asked SNR measured on the mix; determinism."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.evaluation.conditions import Condition, ConditionReader
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest, Utterance
from speaker.views.augment import NoiseBank
from store.errors import UserError

RATE = 16000


@pytest.fixture
def long_manifest(tmp_path: Path) -> Manifest:
    """Three utterances of 5, 3 and 1.5 s (the last shorter than a 2-s segment)."""
    rng = np.random.default_rng(0)
    utts = []
    for i, seconds in enumerate((5.0, 3.0, 1.5)):
        n = int(seconds * RATE)
        path = tmp_path / f"u{i}.wav"
        soundfile.write(path, (rng.standard_normal(n) * 0.1).astype(np.float32), RATE,
                        subtype="FLOAT")
        utts.append(Utterance(f"spk{i}/u{i}.wav", f"spk{i}", str(path), n, RATE))
    return Manifest(utts)


@pytest.mark.parametrize("name, seconds", [("2s", 2.0), ("4s", 4.0)])
def test_segments_are_the_seeded_positions(long_manifest: Manifest, name: str,
                                           seconds: float) -> None:
    c = Condition.parse(name, seed=7)
    reader = ConditionReader(AudioReader(RATE), c, long_manifest)
    seg = int(seconds * RATE)
    shown = c.manifest(long_manifest)
    starts = []
    for utt, cut in zip(long_manifest, shown, strict=True):
        whole = AudioReader(RATE).read(utt)
        got = reader.read(cut)
        if utt.num_samples <= seg:  # used whole
            assert cut.num_samples == utt.num_samples and np.array_equal(got, whole)
            continue
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [7, zlib.crc32(utt.id.encode()), 0])))
        start = int(rng.integers(0, utt.num_samples - seg + 1))
        starts.append(start)
        assert cut.num_samples == seg and np.array_equal(got, whole[start:start + seg])
    assert starts and len(set(starts)) == len(starts)
    other = Condition.parse(name, seed=8)
    assert any(other.segment_start(u.id, u.num_samples, RATE) != s
               for u, s in zip(long_manifest, starts, strict=False))


@pytest.mark.parametrize("snr", [0, 5, 10])
def test_noise_at_the_asked_snr(long_manifest: Manifest, snr: int) -> None:
    rng = np.random.default_rng(1)
    bank = NoiseBank(RATE, noise=(("a", rng.standard_normal(RATE) * 0.3),
                                  ("b", np.sin(np.arange(3 * RATE) / 7.0))))
    c = Condition.parse(f"noise{snr}")
    reader = ConditionReader(AudioReader(RATE), c, long_manifest, bank)
    for utt in long_manifest:
        speech = AudioReader(RATE).read(utt).astype(np.float64)
        mix = reader.read(utt).astype(np.float64)
        noise = mix - speech
        measured = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
        assert abs(measured - snr) < 0.1, (utt.id, measured)
        assert np.array_equal(reader.read(utt), mix.astype(np.float32))  # fixed draws


def test_noise_needs_musan(long_manifest: Manifest) -> None:
    with pytest.raises(UserError, match="needs MUSAN noise"):
        ConditionReader(AudioReader(RATE), Condition.parse("noise5"), long_manifest)
    with pytest.raises(UserError, match="unknown condition"):
        Condition.parse("loud")
