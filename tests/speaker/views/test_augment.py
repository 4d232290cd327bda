"""Augmentation: config, noise bank, replay, reverb correctness and SNR accuracy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speaker.views.augment import (
    AugmentConfig,
    AugmentParams,
    NoiseBank,
    apply_params,
    augment,
    draw_params,
    reverberate,
)
from store.errors import UserError

N = 8000


def _noise(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


def _rir(seed: int, n: int = 1600, peak: int = 40) -> np.ndarray:
    h = np.random.default_rng(seed).standard_normal(n) * np.exp(-np.arange(n) / 300) * 0.1
    h[:peak] *= 0.01
    h[peak] = 1.0
    return h.astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> NoiseBank:
    return NoiseBank(
        16000,
        noise=[("n0", _noise(1, 20000)), ("n1", _noise(2, 3000))],  # n1 shorter than a crop
        music=[("m0", _noise(3, 12000))],
        speech=[(f"s{i}", _noise(10 + i, 9000 + 500 * i)) for i in range(5)],
        rirs=[("r0", _rir(4)), ("r1", _rir(5, peak=0))],
    )


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    t = np.arange(N) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_config_round_trip_hash_and_validation():
    cfg = AugmentConfig(speeds=[1.0, 0.9, 1.1], gain_db=[-3, 3])
    assert cfg.speeds == (1.0, 0.9, 1.1) and cfg.gain_db == (-3.0, 3.0)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.content_hash() == AugmentConfig.from_dict(cfg.to_dict()).content_hash()
    assert cfg.content_hash() != AugmentConfig().content_hash()
    d = AugmentConfig().to_dict()
    assert d["noise_snr"] == [0.0, 15.0] and d["babble_speakers"] == [3, 7]
    for bad in [
        {"aug_prob": 1.5},
        {"reverb_prob": -0.1},
        {"noise_snr": (10, 5)},
        {"music_snr": (1, 2, 3)},
        {"babble_speakers": (0, 2)},
        {"speeds": (1.0, 1.0)},
        {"speeds": ()},
        {"gain_db": ("a", 1)},
    ]:
        with pytest.raises(UserError, match="augment config"):
            AugmentConfig(**bad)
    with pytest.raises(UserError, match="unknown key"):
        AugmentConfig.from_dict({"aug_prb": 0.5})


def test_replay_is_bit_identical_and_seeds_differ(wave, bank):
    cfg = AugmentConfig(aug_prob=1.0, gain_db=(-6, 6))
    kinds = set()
    outs = []
    for seed in range(40):
        a = augment(wave, seed, cfg, bank)
        b = augment(wave.copy(), seed, cfg, bank)
        assert a.dtype == np.float32 and a.shape == wave.shape
        assert np.array_equal(a, b)
        kinds.add(draw_params(N, seed, cfg, bank).kind)
        outs.append(a)
    assert kinds == {"reverb", "noise", "music", "babble"}
    assert not any(np.array_equal(outs[0], o) for o in outs[1:])


def test_input_is_not_modified_and_output_is_fresh(wave, bank):
    before = wave.copy()
    out = augment(wave, 3, AugmentConfig(aug_prob=0.0), NoiseBank.empty())
    assert np.array_equal(out, wave) and out is not wave
    out[:] = 0
    for seed in range(10):
        augment(wave, seed, AugmentConfig(aug_prob=1.0), bank)
    assert np.array_equal(wave, before)


def test_draws_have_a_fixed_layout(bank):
    """Changing one probability must not shift any other drawn parameter."""
    base = AugmentConfig(aug_prob=1.0, reverb_prob=0.0, gain_db=(-6, 6))
    for seed in range(30):
        p = draw_params(N, seed, base, bank)
        q = draw_params(N, seed, replace(base, aug_prob=0.0), bank)
        assert q.kind == "none" and q.gain_db == p.gain_db
        r = draw_params(N, seed, replace(base, babble_speakers=(1, 2)), bank)
        assert r.gain_db == p.gain_db
        if p.kind == r.kind and p.kind != "babble":
            assert r == p
        only_noise = draw_params(N, seed, base, replace(bank, music=(), speech=()))
        assert only_noise.kind == "noise"
        if p.kind == "noise":
            assert only_noise == p


def test_missing_types_are_skipped(wave, bank):
    cfg = AugmentConfig(aug_prob=1.0)
    music_only = NoiseBank(16000, music=bank.music)
    assert {draw_params(N, s, cfg, music_only).kind for s in range(20)} == {"music"}
    no_rir = NoiseBank(16000, noise=bank.noise, speech=bank.speech)
    assert {draw_params(N, s, cfg, no_rir).kind for s in range(40)} == {"noise", "babble"}
    rir_only = NoiseBank(16000, rirs=bank.rirs)
    assert {draw_params(N, s, replace(cfg, reverb_prob=0.0), rir_only).kind for s in range(9)} == {
        "none"
    }
    for s in range(5):
        assert np.array_equal(augment(wave, s, cfg, NoiseBank.empty()), wave)


def test_aug_prob_is_respected(bank):
    cfg = AugmentConfig(aug_prob=0.6)
    applied = np.mean([draw_params(N, s, cfg, bank).kind != "none" for s in range(2000)])
    assert 0.55 < applied < 0.65
    reverb = [draw_params(N, s, cfg, bank).kind == "reverb" for s in range(2000)]
    assert 0.25 < np.mean(reverb) < 0.35  # reverb_prob 0.5 of the 0.6


def test_reverb_equals_direct_convolution_at_peak():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3000)
    for m, peak in [(400, 30), (400, 390), (5000, 100), (1, 0), (257, 0)]:
        h = rng.standard_normal(m) * 0.01
        h[peak] = 1.0
        hn = h / np.sqrt(np.sum(h**2))
        want = np.convolve(x, hn)[peak : peak + len(x)]
        got = reverberate(x.astype(np.float32), h)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert np.array_equal(reverberate(x, np.zeros(10)), x.astype(np.float32))


def test_reverb_view_uses_the_drawn_rir(wave, bank):
    cfg = AugmentConfig(aug_prob=1.0, reverb_prob=1.0)
    for seed in range(6):
        p = draw_params(N, seed, cfg, bank)
        assert p.kind == "reverb"
        want = reverberate(wave, bank.rirs[p.sources[0][0]][1])
        assert np.array_equal(augment(wave, seed, cfg, bank), want)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    added = noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(added**2))


@pytest.mark.parametrize("kind", ["noise", "music", "babble"])
def test_added_noise_has_the_drawn_snr(wave, bank, kind):
    cfg = AugmentConfig(aug_prob=1.0, reverb_prob=0.0)
    sub = NoiseBank(
        16000,
        **{
            "speech" if kind == "babble" else kind: getattr(
                bank, "speech" if kind == "babble" else kind
            )
        },
    )
    lo, hi = {"noise": cfg.noise_snr, "music": cfg.music_snr, "babble": cfg.babble_snr}[kind]
    for seed in range(8):
        p = draw_params(N, seed, cfg, sub)
        assert p.kind == kind and lo <= p.snr_db <= hi
        if kind == "babble":
            assert cfg.babble_speakers[0] <= len(p.sources) <= cfg.babble_speakers[1]
        out = augment(wave, seed, cfg, sub)
        assert abs(_snr_db(wave, out) - p.snr_db) < 1e-3


def test_short_noise_is_tiled_from_its_offset(wave, bank):
    short = bank.noise[1][1]  # 3000 samples < N
    p = AugmentParams("noise", 10.0, ((1, 2500),))
    out = apply_params(wave, p, bank).astype(np.float64)
    added = out - wave
    want = short[(2500 + np.arange(N)) % len(short)].astype(np.float64)
    scale = added[0] / want[0]
    np.testing.assert_allclose(added, scale * want, atol=1e-6)


def test_gain(wave, bank):
    cfg = AugmentConfig(aug_prob=0.0, gain_db=(-6, 6))
    p = draw_params(N, 11, cfg, bank)
    assert p.kind == "none" and -6 <= p.gain_db <= 6 and p.gain_db != 0
    np.testing.assert_allclose(
        augment(wave, 11, cfg, bank), wave * 10 ** (p.gain_db / 20), rtol=1e-6
    )


def _write(path: Path, x: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, x, rate, subtype="PCM_16")


def test_noise_bank_from_dirs(tmp_path):
    musan = tmp_path / "musan"
    _write(musan / "noise" / "free-sound" / "noise-b.wav", _noise(1, 1000))
    _write(musan / "noise" / "free-sound" / "noise-a.wav", _noise(2, 1100))
    _write(musan / "music" / "fma" / "music-a.wav", _noise(3, 1200), rate=8000)
    _write(musan / "speech" / "librivox" / "speech-a.wav", _noise(4, 1300))
    rirs = tmp_path / "RIRS_NOISES"
    _write(rirs / "simulated_rirs" / "smallroom" / "Room001" / "Room001-00001.wav", _rir(1, 800))
    _write(rirs / "pointsource_noises" / "noise-free-sound-0001.wav", _noise(5, 700))
    bank = NoiseBank.from_dirs(musan, rirs)
    assert [name for name, _ in bank.noise] == ["free-sound/noise-a.wav", "free-sound/noise-b.wav"]
    assert len(bank.music[0][1]) == 2400  # resampled from 8 kHz
    assert [name for name, _ in bank.rirs] == ["smallroom/Room001/Room001-00001.wav"]
    assert bank.available() == ("reverb", "noise", "music", "babble")
    assert bank.content_hash() == NoiseBank.from_dirs(musan, rirs).content_hash()
    assert bank.content_hash() != NoiseBank.from_dirs(musan, None).content_hash()
    assert NoiseBank.from_dirs(musan, rirs, max_seconds=0.05).noise[0][1].shape == (800,)
    _write(musan / "noise" / "free-sound" / "noise-a.wav", _noise(6, 1100))
    assert NoiseBank.from_dirs(musan, rirs).content_hash() != bank.content_hash()
    with pytest.raises(ValueError):
        bank.noise[0][1][0] = 1.0  # read-only: augment cannot alter the bank
    plain = tmp_path / "my_rirs"
    _write(plain / "r.wav", _rir(2, 500))
    assert len(NoiseBank.from_dirs(None, plain).rirs) == 1


def test_noise_bank_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        NoiseBank.from_dirs(tmp_path / "nope", None)
    (tmp_path / "musan" / "other").mkdir(parents=True)
    with pytest.raises(UserError, match="MUSAN layout"):
        NoiseBank.from_dirs(tmp_path / "musan", None)
    (tmp_path / "rirs").mkdir()
    with pytest.raises(UserError, match="no RIR wavs"):
        NoiseBank.from_dirs(None, tmp_path / "rirs")
    bad = tmp_path / "m2" / "noise" / "x.wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk" * 30)
    with pytest.raises(UserError, match="cannot read audio"):
        NoiseBank.from_dirs(tmp_path / "m2", None)
    assert NoiseBank.empty().content_hash() == NoiseBank.empty().content_hash()
    assert NoiseBank.empty().available() == ()
