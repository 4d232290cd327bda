"""The MUSAN-like noise bank and RIR-like impulse responses the toy corpus ships."""

from __future__ import annotations

import math

import numpy as np

from speaker.toy.config import (
    BABBLE_BASE,
    TAG_BANK,
    ToyConfig,
    tagged_rng,
)
from speaker.toy.voice import synthesize, voice

# ---- noise bank ----------------------------------------------------------------------------

NOISE_FILES, MUSIC_FILES, BABBLE_FILES, RIR_FILES = 12, 8, 8, 20
NOISE_SECONDS, MUSIC_SECONDS, BABBLE_SECONDS = 6.0, 8.0, 8.0


def noise_recording(seed: int, i: int, sr: int) -> np.ndarray:
    """Stationary or modulated coloured noise; the kind cycles through eight recipes."""
    rng = tagged_rng(seed, TAG_BANK, 0, i)
    n = round(NOISE_SECONDS * sr)
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    kind = i % 8
    if kind < 4:  # white, pink, brown, blue
        shape = f ** (-[0.0, 1.0, 2.0, -1.0][kind] / 2)
    elif kind == 4:  # band-pass
        centre = 200.0 * math.exp(rng.uniform(0.0, math.log(20.0)))
        shape = np.exp(-0.5 * (np.log2(f / centre) / 0.7) ** 2)
    else:
        shape = f ** -0.5
    x = np.fft.irfft(spectrum * shape, n)
    t = np.arange(n) / sr
    if kind == 5:  # mains hum with harmonics over pink noise
        mains = rng.choice([50.0, 60.0])
        hum = sum(np.sin(2 * np.pi * h * mains * t + rng.uniform(0, 2 * np.pi)) / h
                  for h in range(1, 8))
        x = x / np.std(x) + 2.0 * hum / np.std(hum)
    elif kind == 6:  # amplitude-modulated (fan, traffic)
        x = x * (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.5, 6.0) * t))
    elif kind == 7:  # crackle: sparse clicks over weak noise
        clicks = np.zeros(n)
        where = rng.integers(0, n, size=int(rng.uniform(5, 40) * NOISE_SECONDS))
        clicks[where] = rng.standard_normal(where.size) * 20.0
        x = x + clicks
    return x * (0.1 / np.std(x))


def music_recording(seed: int, i: int, sr: int) -> np.ndarray:
    """Notes and chords of a harmonic instrument on a random scale, some with a beat."""
    rng = tagged_rng(seed, TAG_BANK, 1, i)
    n = round(MUSIC_SECONDS * sr)
    out = np.zeros(n)
    root = 110.0 * 2.0 ** (rng.integers(0, 12) / 12)
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10]
    beat = 60.0 / rng.uniform(70, 160)
    plucked = rng.random() < 0.5
    rolloff = rng.uniform(0.8, 2.0)
    t0 = 0.0
    while t0 < MUSIC_SECONDS:
        length = beat * int(rng.choice([1, 1, 2, 4]))
        m = min(round(length * 1.5 * sr), n - round(t0 * sr))
        t = np.arange(m) / sr
        env = np.exp(-t / (0.3 * length)) if plucked else np.minimum(1.0, t / 0.02) * np.exp(
            -np.maximum(t - length, 0.0) / 0.05)
        degrees = rng.choice(len(scale) * 2, size=int(rng.integers(1, 4)), replace=False)
        note = np.zeros(m)
        for d in degrees:
            f0 = root * 2.0 ** ((12 * (d // len(scale)) + scale[d % len(scale)]) / 12)
            for h in range(1, 9):
                if h * f0 < 0.45 * sr:
                    note += np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 2 * np.pi)) / h**rolloff
        start = round(t0 * sr)
        out[start:start + m] += note * env
        t0 += length
    if rng.random() < 0.5:  # a noise-burst drum on every beat
        m = round(0.08 * sr)
        hit = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.015 * sr))
        for k in range(int(MUSIC_SECONDS / beat)):
            start = round(k * beat * sr)
            out[start:start + m] += 0.5 * hit[: n - start]
    return out * (0.1 / np.std(out))


def babble_recording(cfg: ToyConfig, i: int) -> np.ndarray:
    """One non-corpus synthetic voice talking (augmentation mixes several into babble)."""
    rng = tagged_rng(cfg.seed, TAG_BANK, 2, i)
    n = round(BABBLE_SECONDS * cfg.sample_rate)
    return synthesize(voice(cfg, BABBLE_BASE + i), rng, n, cfg.sample_rate, None)


def room_response(seed: int, i: int, sr: int) -> tuple[np.ndarray, float]:
    """Room impulse response (direct path, early reflections, decaying diffuse tail), RT60."""
    rng = tagged_rng(seed, TAG_BANK, 3, i)
    rt60 = 0.2 + 0.6 * (i + rng.random()) / RIR_FILES  # strata cover 0.2-0.8 s evenly
    n = round(min(1.2 * rt60 + 0.05, 1.0) * sr)
    t = np.arange(n) / sr
    direct = round(rng.uniform(0.001, 0.005) * sr)
    # diffuse tail: high frequencies die away faster (air and wall absorption)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    high = 1.0 / (1.0 + (2000.0 / np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 1.0)) ** 2)
    lo_part = np.fft.irfft(spectrum * (1.0 - high), n)
    hi_part = np.fft.irfft(spectrum * high, n)
    after = np.maximum(t - direct / sr, 0.0)
    tail = (lo_part * np.exp(-6.91 * after / rt60) + hi_part * np.exp(-6.91 * after / (0.6 * rt60)))
    tail *= np.minimum(1.0, np.maximum(after - 0.003, 0.0) / 0.01)  # builds up after ~5 ms
    drr_db = rng.uniform(-3.0, 8.0)
    tail *= 1.0 / math.sqrt(max(float(np.sum(tail**2)), 1e-12) * 10.0 ** (drr_db / 10.0))
    h = tail
    h[direct] += 1.0
    for _ in range(int(rng.integers(6, 12))):
        k = direct + round(rng.uniform(0.001, 0.04) * sr)
        if k < n:
            h[k] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7) * math.exp(
                -6.91 * (k - direct) / sr / rt60)
    return h * (0.9 / np.max(np.abs(h))), rt60
