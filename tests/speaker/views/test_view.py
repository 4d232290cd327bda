"""Views: (start, seed) drawing and bit-exact rendering with speed and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.io.audio import AudioReader, load_audio
from speaker.io.manifest import Utterance
from speaker.views.augment import AugmentConfig, NoiseBank, augment
from speaker.views.view import draw_view, render_view, row_order, speed_perturb
from store.errors import UserError

RATE = 16000
CROP = 4000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Utterance, Utterance]:
    d = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(0)
    t = np.arange(12000) / RATE
    long = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.01 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    soundfile.write(d / "long.wav", long, RATE, subtype="PCM_16")
    soundfile.write(d / "short.wav", long[:1500], RATE, subtype="PCM_16")
    return (
        d,
        Utterance("long", "s1", str(d / "long.wav"), 12000, RATE),
        Utterance("short", "s2", str(d / "short.wav"), 1500, RATE),
    )


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    rng = np.random.default_rng(1)
    return NoiseBank(
        RATE,
        noise=[("n", rng.standard_normal(20000) * 0.1)],
        speech=[(f"s{i}", rng.standard_normal(5000) * 0.1) for i in range(3)],
        rirs=[("r", np.exp(-np.arange(800) / 100) * rng.standard_normal(800))],
    )


def test_draw_view():
    start, seed = draw_view(7, 3, 48000, 32000)
    assert (start, seed) == draw_view(7, 3, 48000, 32000)
    assert isinstance(start, int) and isinstance(seed, int)
    draws = [draw_view(7, row, 48000, 32000) for row in range(500)]
    assert all(0 <= s <= 16000 and 0 <= sd < 2**63 for s, sd in draws)
    assert len({sd for _, sd in draws}) == 500
    assert min(s for s, _ in draws) < 1000 and max(s for s, _ in draws) > 15000
    assert draw_view(8, 3, 48000, 32000) != (start, seed)
    assert draw_view(7, 3, 1000, 32000)[0] == 0  # shorter than the crop
    assert draw_view(7, 3, 1000, 32000)[1] == seed  # seed does not depend on the lengths
    assert np.array([seed], dtype=np.int64)[0] == np.array([seed], dtype=np.uint64)[0]


def test_row_order_is_a_seeded_permutation_that_mixes_speakers():
    order = row_order(1000, 7)
    assert np.array_equal(np.sort(order), np.arange(1000))
    assert np.array_equal(order, row_order(1000, 7))
    assert not np.array_equal(order, row_order(1000, 8))
    # 100 speakers x 10 slots, manifest sorted by speaker: any 100 consecutive rows
    # hold about 100 * (1 - 0.9**10) = 65 speakers, where manifest order holds 10
    speakers = order // 10
    assert min(len(set(speakers[i:i + 100])) for i in range(0, 1000, 100)) > 50


def test_render_view_replays_bit_identically(corpus, bank):
    _, utt, _ = corpus
    cfg = AugmentConfig(aug_prob=1.0, speeds=(1.0, 0.9, 1.1), gain_db=(-3, 3))
    speeds = set()
    for row in range(12):
        start, seed = draw_view(1, row, utt.num_samples, CROP)
        a, k = render_view(AudioReader(RATE), utt, start, seed, CROP, cfg, bank)
        b, k2 = render_view(AudioReader(RATE), utt, start, seed, CROP, cfg, bank)
        assert a.dtype == np.float32 and a.shape == (CROP,)
        assert k == k2 and np.array_equal(a, b)
        speeds.add(k)
    assert speeds == {0, 1, 2}
    s0, seed0 = draw_view(1, 0, utt.num_samples, CROP)
    s1, seed1 = draw_view(1, 1, utt.num_samples, CROP)
    reader = AudioReader(RATE)
    assert not np.array_equal(
        render_view(reader, utt, s0, seed0, CROP, cfg, bank)[0],
        render_view(reader, utt, s0, seed1, CROP, cfg, bank)[0],
    )


def test_stream_order_speed_first_then_child_seed(corpus, bank):
    """The documented stream layout, which stored rows depend on."""
    _, utt, _ = corpus
    cfg = AugmentConfig(aug_prob=1.0)
    seed = 987654321
    rng = np.random.Generator(np.random.PCG64(seed))
    rng.random()  # speed draw, consumed even with one speed
    child = int(rng.integers(0, 2**63, dtype=np.int64))
    want = augment(load_audio(utt.path, RATE)[500 : 500 + CROP], child, cfg, bank)
    got, k = render_view(AudioReader(RATE), utt, 500, seed, CROP, cfg, bank)
    assert k == 0 and np.array_equal(got, want)


def test_speed_perturbation(corpus):
    _, utt, _ = corpus
    cfg = AugmentConfig(aug_prob=0.0, speeds=(1.0, 1.1))
    seeds = [
        s
        for s in range(50)
        if render_view(AudioReader(RATE), utt, 0, s, CROP, cfg, NoiseBank())[1] == 1
    ]
    wave, _ = render_view(AudioReader(RATE), utt, 0, seeds[0], CROP, cfg, NoiseBank())
    want = speed_perturb(load_audio(utt.path, RATE)[:4400], 1.1, RATE, CROP)
    assert np.array_equal(wave, want)
    # a 200 Hz tone played 1.1x faster becomes 220 Hz
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(CROP)))
    assert abs(np.argmax(spectrum) * RATE / CROP - 220) < 5
    for speed in (0.9, 1.1, 0.95):
        assert speed_perturb(
            np.zeros(int(round(CROP * speed)), np.float32), speed, RATE, CROP
        ).shape == (CROP,)


def test_fast_view_near_the_end_stays_inside_the_utterance(corpus):
    _, utt, _ = corpus
    cfg = AugmentConfig(aug_prob=0.0, speeds=(1.1,))
    start = utt.num_samples - CROP  # the largest start draw_view gives
    wave, _ = render_view(AudioReader(RATE), utt, start, 5, CROP, cfg, NoiseBank())
    full = load_audio(utt.path, RATE)
    want = speed_perturb(full[utt.num_samples - 4400 :], 1.1, RATE, CROP)
    assert np.array_equal(wave, want)


def test_short_utterance_is_repeat_padded(corpus, bank):
    _, _, short = corpus
    start, seed = draw_view(0, 0, short.num_samples, CROP)
    assert start == 0
    cfg = AugmentConfig(aug_prob=0.0)
    wave, _ = render_view(AudioReader(RATE), short, start, seed, CROP, cfg, bank)
    full = load_audio(short.path, RATE)
    assert np.array_equal(wave, np.tile(full, 3)[:CROP])


def test_bank_rate_must_match_reader(corpus):
    _, utt, _ = corpus
    with pytest.raises(UserError, match="noise bank is at 8000 Hz"):
        render_view(AudioReader(RATE), utt, 0, 1, CROP, AugmentConfig(), NoiseBank(8000))
