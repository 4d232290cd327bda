"""Deterministic synthetic multi-speaker corpus, laid out like VoxCeleb + MUSAN + RIRS_NOISES.

``python -m speaker.toy --speakers 200 --seed 0 --out toy`` writes::

    toy/README.txt                 generation parameters (the same arguments give the same bytes)
    toy/toy.json                   the same parameters, machine-readable
    toy/train/wav/<spk>/<video>/<nnnnn>.wav      16-bit PCM (absent with --pack)
    toy/train/audio.h5             HDF5 pack of the same audio (only with --pack)
    toy/train/manifest.jsonl       Manifest.read() resolves its relative paths against its folder
    toy/train/wav.scp              "<utt> wav/<utt>" - paths relative to toy/train (absent with --pack)
    toy/train/utt2spk  spk2utt  utt2num_samples  speakers.tsv (speaker, population, family)
    toy/test/...                   the same for held-out speakers, plus
    toy/test/trials.txt            "1 id90000/<video>/00001.wav id90000/<video>/00002.wav" (VoxCeleb)
    toy/musan/{noise,music,speech}/*.wav   coloured noises, synthetic music, single-voice babble
    toy/rirs/*.wav                 exponentially decaying room responses, RT60 0.2-0.8 s

Utterance ids are VoxCeleb paths relative to ``wav/`` (``id00012/xK3_9aZq-Lw/00001.wav``);
training speakers are ``id00000``... in index order, test speakers ``id90000``...
(disjoint, like VoxCeleb1-O), babble voices are indices from 100000 on.

**Signal model.** Speakers come from a hierarchy: ``populations`` clusters, each with
``families`` sub-clusters; a speaker's parameter vector (in standardised units) is
``population_spread * c_pop + family_spread * c_family + speaker_spread * c_own`` with
independent standard normal ``c`` (family = index mod populations*families, so every family
keeps growing as speakers are added). The vector sets mean pitch and pitch range,
vocal-tract length (all formants scaled together, correlated with pitch across populations),
formant bandwidths, glottal spectral tilt, jitter, shimmer, aspiration noise, speaking rate,
a fixed pole/zero "fingerprint" resonance, a nasal anti-resonance, high-formant offsets and
per-vowel F1/F2 offsets (an accent: shared within families and populations). An utterance is
a random sequence of syllables from a shared phone inventory (10 vowels, nasals, approximants,
fricatives) with smoothed formant glides, a wandering and declining pitch contour and pauses,
synthesised as a pulse train plus aspiration noise and a frication noise stream, each filtered
by a per-frame spectral envelope (16 ms hop, overlap-add). Recording conditions vary per
video (4 utterances per video) and slightly per utterance: voice state (pitch, rate, tilt,
breathiness), an EQ tilt and bump, sometimes a band limit, level, and coloured background
noise at an SNR around ``snr_db``. ``session_variation`` scales all of that.

**Determinism.** Every random draw comes from ``numpy.random.Generator(PCG64(SeedSequence(
[seed, tag, ...])))``: the tag says what is drawn (population or family centre, speaker,
video, utterance, trial list, noise bank) and the rest which one, e.g. utterance ``u`` of
speaker ``i`` uses ``[seed, 4, i, u]``. So any speaker or utterance can be synthesised alone
(:func:`synthesize_utterance`), speakers in any order or process, and a corpus with more
speakers or utterances contains the smaller one's audio. Files carry no timestamps or
absolute paths.

Example::

    python -m speaker.toy --speakers 200 --seed 0 --out toy
    python -m speaker.toy --speakers 2000 --utts-per-speaker 8 --pack --workers 2 --out toy2k
    python -m speaker.toy --speakers 6 --utts-per-speaker 3 --duration 1 --test-speakers 3 \\
        --out /tmp/tiny
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import soundfile

from speaker.atomic import atomic_dir, atomic_write_text
from speaker.cli import run, setup_logging
from speaker.data import Manifest, Utterance
from speaker.errors import UserError

logger = logging.getLogger("speaker.toy")  # also when run as __main__

__all__ = [
    "ToyConfig",
    "Voice",
    "family_of",
    "generate",
    "speaker_id",
    "synthesize_utterance",
    "utterance_id",
    "voice",
]

FORMAT_VERSION = 1
TEST_BASE = 90_000  # global index of the first test speaker
BABBLE_BASE = 100_000  # voices of musan/speech, never in train or test
UTTS_PER_VIDEO = 4
# SeedSequence domain tags
_POPULATION, _FAMILY, _SPEAKER, _VIDEO, _UTTERANCE, _TRIALS, _BANK = range(7)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


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
            (1 <= self.speakers <= TEST_BASE, f"--speakers must be in [1, {TEST_BASE}]"),
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


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *key])))


def speaker_id(index: int) -> str:
    """``id00012`` for global speaker index 12 (test speakers start at 90000)."""
    return f"id{index:05d}"


def family_of(cfg: ToyConfig, index: int) -> tuple[int, int]:
    """(population, family) of global speaker ``index``; families are numbered globally."""
    family = index % (cfg.populations * cfg.families)
    return family // cfg.families, family


# ---- speaker parameters --------------------------------------------------------------------

# phone inventory: name, kind, F1, F2, F3 (Hz at vocal-tract scale 1), amplitude, duration (ms)
_VOWEL, _NASAL, _APPROX, _FRIC = range(4)
_PHONES = [
    ("i", _VOWEL, 280, 2250, 2900, 1.0, 110), ("I", _VOWEL, 400, 1900, 2550, 1.0, 90),
    ("E", _VOWEL, 550, 1770, 2490, 1.0, 100), ("ae", _VOWEL, 690, 1660, 2490, 1.0, 130),
    ("a", _VOWEL, 750, 1200, 2500, 1.0, 130), ("O", _VOWEL, 570, 840, 2410, 1.0, 120),
    ("U", _VOWEL, 450, 1030, 2380, 1.0, 90), ("u", _VOWEL, 310, 870, 2250, 1.0, 110),
    ("V", _VOWEL, 640, 1190, 2390, 1.0, 90), ("3", _VOWEL, 490, 1350, 1690, 1.0, 120),
    ("m", _NASAL, 280, 1000, 2200, 0.35, 70), ("n", _NASAL, 280, 1600, 2600, 0.35, 70),
    ("l", _APPROX, 360, 1300, 2800, 0.55, 60), ("w", _APPROX, 300, 700, 2200, 0.5, 60),
    ("j", _APPROX, 280, 2200, 3000, 0.5, 60), ("r", _APPROX, 350, 1100, 1500, 0.5, 60),
    # fricatives: F1 = noise centre, F2 = noise bandwidth
    ("s", _FRIC, 5500, 1800, 0, 0.22, 100), ("S", _FRIC, 2900, 1200, 0, 0.25, 100),
    ("f", _FRIC, 6500, 5000, 0, 0.08, 90),
]
_KIND = np.array([p[1] for p in _PHONES])
_FORMANTS = np.array([p[2:5] for p in _PHONES], dtype=np.float64)
_AMP = np.array([p[5] for p in _PHONES])
_DUR_MS = np.array([p[6] for p in _PHONES], dtype=np.float64)
_VOWELS = np.flatnonzero(_KIND == _VOWEL)
_CONSONANTS = np.flatnonzero(_KIND != _VOWEL)
_FRICS = np.flatnonzero(_KIND == _FRIC)
_SCHWA = np.array([500.0, 1500.0, 2500.0])  # formants held through fricatives and pauses
_BANDWIDTHS = np.array([60.0, 90.0, 120.0, 175.0, 250.0])

# dimensions of the standardised speaker vector and how far one unit moves each parameter
_DIMS = ["f0", "f0_range", "vtl", "bandwidth", "tilt", "jitter", "shimmer", "breath", "rate",
         "fp_freq", "fp_bw", "fp_ratio", "nasal_zero", "F3", "F4", "F5"]
_D = {name: i for i, name in enumerate(_DIMS)}
_ACCENT = len(_DIMS)  # then F1 and F2 offsets of each vowel
_NDIM = _ACCENT + 2 * len(_VOWELS)
# voice-state dimensions that also vary between videos and utterances of one speaker
_STATE = np.array([_D[k] for k in ("f0", "f0_range", "tilt", "breath", "rate", "jitter",
                                   "shimmer")])


@dataclass(frozen=True)
class Voice:
    """Physical parameters of one speaker (or of one utterance's voice state)."""

    f0: float  # mean pitch, Hz
    f0_range: float  # pitch movement, semitones (std)
    vtl: float  # formant scale: > 1 is a shorter vocal tract
    bandwidth: float  # formant bandwidth scale
    tilt: float  # glottal spectral slope, dB/octave
    jitter: float  # period perturbation, fraction of the period (std)
    shimmer: float  # pulse amplitude perturbation, dB (std)
    breath: float  # aspiration noise relative to the pulses, dB
    rate: float  # phone duration scale (> 1 is slower)
    fp_freq: float  # fingerprint resonance, Hz
    fp_bw: float  # its bandwidth, Hz
    fp_zero: float  # fingerprint anti-resonance, Hz
    nasal_zero: float  # anti-resonance of nasal phones, Hz
    formant_scale: np.ndarray = field(repr=False)  # [phones, 5] multiplier on the inventory


def _speaker_vector(cfg: ToyConfig, index: int) -> np.ndarray:
    population, family = family_of(cfg, index)
    centre = _rng(cfg.seed, _POPULATION, population).standard_normal(_NDIM)
    # across populations a higher pitch goes with a shorter vocal tract (as across sexes)
    centre[_D["vtl"]] = 0.7 * centre[_D["f0"]] + 0.7 * centre[_D["vtl"]]
    offset = _rng(cfg.seed, _FAMILY, family).standard_normal(_NDIM)
    own = _rng(cfg.seed, _SPEAKER, index).standard_normal(_NDIM)
    return (cfg.population_spread * centre + cfg.family_spread * offset
            + cfg.speaker_spread * own)


def _voice_from_vector(z: np.ndarray) -> Voice:
    d = _D
    vtl = math.exp(0.06 * z[d["vtl"]])
    scale = np.ones((len(_PHONES), 5))
    scale[:, 2:] *= np.exp(0.04 * z[[d["F3"], d["F4"], d["F5"]]])
    accent = np.exp(0.05 * z[_ACCENT:].reshape(len(_VOWELS), 2))
    scale[_VOWELS, :2] *= accent
    fp = 1400.0 * math.exp(0.3 * z[d["fp_freq"]])
    return Voice(
        f0=150.0 * math.exp(0.22 * z[d["f0"]]),
        f0_range=2.5 * math.exp(0.3 * z[d["f0_range"]]),
        vtl=vtl,
        bandwidth=math.exp(0.2 * z[d["bandwidth"]]),
        tilt=-7.0 + 1.5 * z[d["tilt"]],
        jitter=0.008 * math.exp(0.4 * z[d["jitter"]]),
        shimmer=0.5 * math.exp(0.4 * z[d["shimmer"]]),
        breath=-26.0 + 4.0 * z[d["breath"]],
        rate=math.exp(0.12 * z[d["rate"]]),
        fp_freq=fp,
        fp_bw=150.0 * math.exp(0.3 * z[d["fp_bw"]]),
        fp_zero=fp * 1.45 * math.exp(0.15 * z[d["fp_ratio"]]),
        nasal_zero=1100.0 * math.exp(0.3 * z[d["nasal_zero"]]),
        formant_scale=scale * vtl,
    )


def voice(cfg: ToyConfig, index: int) -> Voice:
    """The voice of global speaker ``index`` (train ``0..``, test ``90000..``).

    Example::

        >>> round(voice(ToyConfig(), 0).f0) > 0
        True
    """
    return _voice_from_vector(_speaker_vector(cfg, index))


# ---- synthesis -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    hop: int
    win: int
    nfft: int
    window: np.ndarray
    freqs: np.ndarray
    cos_w: np.ndarray
    sin_w: np.ndarray
    delay: np.ndarray  # linear phase that centres the zero-phase filters in the FFT buffer
    delay_samples: int


@functools.lru_cache(maxsize=4)
def _grid(sample_rate: int) -> _Grid:
    hop = round(0.016 * sample_rate)
    win = 2 * hop
    nfft = 1 << (2 * win - 1).bit_length()
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
    freqs = np.arange(nfft // 2 + 1) * sample_rate / nfft
    w = 2 * np.pi * freqs / sample_rate
    d = (nfft - win) // 2
    return _Grid(hop, win, nfft, window, freqs.astype(np.float32), np.cos(w).astype(np.float32),
                 np.sin(w).astype(np.float32), np.exp(-1j * w * d).astype(np.complex64), d)


def _resonance(g: _Grid, sr: int, freq: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """|H|^2 of two-pole resonators (unit gain at DC) on the FFT grid; broadcasts freq/bw.

    A resonance too close to Nyquist is left out (flat) instead of folding back.
    """
    freq = np.asarray(freq, dtype=np.float32)[..., None]
    bw = np.asarray(bw, dtype=np.float32)[..., None]
    r = np.where(freq < 0.45 * sr, np.exp(-np.pi * bw / sr), 0.0).astype(np.float32)
    theta = (2 * np.pi / sr) * freq
    c, s = np.cos(theta), np.sin(theta)
    rr = 1 + r * r
    a, b = g.cos_w * c, g.sin_w * s
    den = (rr - 2 * r * (a + b)) * (rr - 2 * r * (a - b))
    return (rr - 2 * r * c) ** 2 / den


def _smooth(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Moving average along axis 0 with edge padding (same length)."""
    k = kernel / kernel.sum()
    h = len(k) // 2
    xp = np.concatenate([np.repeat(x[:1], h, axis=0), x, np.repeat(x[-1:], h, axis=0)])
    out = np.zeros_like(x, dtype=np.float64)
    for i, w in enumerate(k):
        out += w * xp[i:i + len(x)]
    return out


def _phone_track(rng: np.random.Generator, n_frames: int, rate: float, hop_s: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame phone index (-1 = pause) and the phrase position in [0, 1] for declination."""
    phones: list[int] = [-1]
    lengths: list[int] = [max(1, round(rng.uniform(0.05, 0.3) / hop_s))]
    total = lengths[0]

    def add(p: int, ms: float) -> None:
        nonlocal total
        n = max(1, round(ms * rate * math.exp(0.25 * rng.standard_normal()) / 1000 / hop_s))
        phones.append(p)
        lengths.append(n)
        total += n

    while total < n_frames:
        for _ in range(int(rng.integers(1, 5))):  # a word of 1-4 syllables
            if rng.random() < 0.65:
                c = int(rng.choice(_CONSONANTS))
                add(c, _DUR_MS[c])
            v = int(rng.choice(_VOWELS))
            add(v, _DUR_MS[v] * (1.4 if rng.random() < 0.25 else 1.0))  # some stressed
            if rng.random() < 0.3:
                c = int(rng.choice(_CONSONANTS))
                add(c, _DUR_MS[c])
        if rng.random() < 0.35:
            add(-1, rng.uniform(80, 350))
    track = np.repeat(np.array(phones), lengths)[:n_frames]
    # phrase position: restarts after every pause, for a falling pitch within phrases
    pos = np.zeros(n_frames)
    starts = np.flatnonzero(np.diff(np.concatenate([[0], (track < 0).astype(int)])) == -1)
    bounds = np.concatenate([[0], starts, [n_frames]])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        pos[a:b] = np.linspace(0.0, 1.0, b - a) if b > a else 0.0
    return track, pos


@dataclass(frozen=True)
class _Channel:
    tilt: float  # dB/octave around 1 kHz
    bump_freq: float
    bump_db: float
    lowpass: float  # Hz, 0 = none
    level_db: float
    snr_db: float
    noise_colour: float  # 1/f^colour power spectrum


def _channel_response(g: _Grid, ch: _Channel) -> np.ndarray:
    f = np.maximum(g.freqs, 100.0)
    octaves = np.log2(f / 1000.0)
    db = ch.tilt * octaves + ch.bump_db * np.exp(-0.5 * (np.log2(f / ch.bump_freq) / 0.6) ** 2)
    gain = 10.0 ** (db / 20.0)
    if ch.lowpass > 0:
        gain = gain / np.sqrt(1.0 + (g.freqs / ch.lowpass) ** 12)
    return gain.astype(np.float32)


def _synthesize(v: Voice, rng: np.random.Generator, n: int, sr: int,
                channel: _Channel | None) -> np.ndarray:
    """Float64 waveform of ``n`` samples; ``channel=None`` gives clean speech at -26 dBFS."""
    g = _grid(sr)
    hop = g.hop
    n_frames = n // hop + 2  # frame k is centred on sample k * hop
    track, phrase = _phone_track(rng, n_frames, v.rate, hop / sr)
    idx = np.maximum(track, 0)
    pause = track < 0
    kind = np.where(pause, -1, _KIND[idx])
    fric = (kind == _FRIC).astype(np.float64)
    nasal = (kind == _NASAL).astype(np.float64)
    amp = np.where(pause, 0.0, _AMP[idx])

    # formant tracks: targets with glides between them (coarticulation)
    targets = _FORMANTS[idx] * v.formant_scale[idx, :3]
    neutral = pause | (kind == _FRIC)
    targets[neutral] = _SCHWA * v.vtl
    log_f = _smooth(np.log(targets), np.array([1.0, 2.0, 3.0, 2.0, 1.0]))
    formants = np.empty((n_frames, 5))
    formants[:, :3] = np.exp(log_f)
    formants[:, 3] = 3300.0 * v.formant_scale[0, 3]
    formants[:, 4] = 4200.0 * v.formant_scale[0, 4]
    bws = np.broadcast_to(_BANDWIDTHS * v.bandwidth, (n_frames, 5)).copy()
    amp = _smooth(amp, np.array([1.0, 2.0, 1.0]))
    fric = _smooth(fric, np.array([1.0, 2.0, 1.0]))
    nasal = _smooth(nasal, np.array([1.0, 2.0, 1.0]))
    bws[:, 0] *= 1.0 + nasal

    # fricative spectra: one noise resonance per fricative phone; a frame takes the last
    # fricative's (the next one's just before it, where smoothing already lets noise in)
    is_fric = kind == _FRIC
    last = np.maximum.accumulate(np.where(is_fric, np.arange(n_frames), -1))
    fr_phone = np.where(last >= 0, idx[np.maximum(last, 0)], _FRICS[0])
    onset = np.flatnonzero(~is_fric[:-1] & is_fric[1:])
    fr_phone[onset] = idx[onset + 1]
    centre = _FORMANTS[_FRICS, 0] * v.vtl
    fr_spec = np.sqrt(_resonance(g, sr, centre, _FORMANTS[_FRICS, 1]))
    fr_spec *= (g.freqs / centre[:, None]) ** 2 / (1 + (g.freqs / centre[:, None]) ** 2)
    fr_spec /= fr_spec.max(axis=1, keepdims=True)
    fr_row = np.searchsorted(_FRICS, fr_phone)

    # voiced envelope: formants x fingerprint x (nasal zero on nasals) x glottal tilt
    power = np.ones((n_frames, len(g.freqs)), dtype=np.float32)
    for k in range(5):
        power *= _resonance(g, sr, formants[:, k], bws[:, k])
    fingerprint = np.sqrt(_resonance(g, sr, np.array(v.fp_freq), np.array(v.fp_bw))
                          / _resonance(g, sr, np.array(v.fp_zero), np.array(v.fp_bw * 1.2)))
    nasal_zero = np.sqrt(1.0 / _resonance(g, sr, np.array(v.nasal_zero), np.array(120.0)))
    tilt = (1.0 + (g.freqs / 200.0) ** 2) ** (v.tilt / 12.04)
    fixed = (fingerprint * tilt).astype(np.float32)
    if channel is not None:
        response = _channel_response(g, channel)
        fixed = fixed * response
    env_v = np.sqrt(power) * fixed
    env_v *= (1.0 - nasal[:, None] + nasal[:, None] * nasal_zero).astype(np.float32)
    env_v *= (amp * (1.0 - fric)).astype(np.float32)[:, None]
    env_n = fr_spec[fr_row] * (amp * fric)[:, None]
    if channel is not None:
        env_n = env_n * response

    # excitation: pulse train with jitter/shimmer plus pulse-synchronous aspiration noise
    total = (n_frames + 1) * hop + g.win
    st = _smooth(rng.standard_normal(n_frames), np.hanning(17)[1:-1])
    st = st / max(st.std(), 1e-6) * 0.8 * v.f0_range - 2.0 * (phrase - 0.5)
    f0_frames = v.f0 * 2.0 ** (st / 12.0)
    # frame k is centred on padded sample (k + 1) * hop
    f0 = np.interp(np.arange(total), (np.arange(n_frames) + 1) * hop, f0_frames)
    phase = np.cumsum(f0 / sr)
    pulses = np.flatnonzero(np.diff(np.floor(phase))) + 1
    pulses = pulses + np.rint(rng.standard_normal(pulses.size) * v.jitter * sr / f0[pulses])
    pulses = np.clip(pulses.astype(np.int64), 0, total - 1)
    voiced = np.zeros(total)
    np.add.at(voiced, pulses, np.exp(rng.standard_normal(pulses.size) * v.shimmer / 8.686))
    unit = math.sqrt(v.f0 / sr)  # rms of the pulse train: noises are set relative to it
    breath = unit * 10.0 ** (v.breath / 20.0) * (0.6 + 0.8 * np.cos(np.pi * (phase % 1.0)) ** 2)
    voiced += breath * rng.standard_normal(total)
    noise = unit * 0.7 * rng.standard_normal(total)

    # per-frame filtering with overlap-add
    frames_v = np.lib.stride_tricks.sliding_window_view(voiced.astype(np.float32), g.win)
    frames_n = np.lib.stride_tricks.sliding_window_view(noise.astype(np.float32), g.win)
    spec = np.fft.rfft(frames_v[:n_frames * hop:hop] * g.window, g.nfft) * env_v
    spec += np.fft.rfft(frames_n[:n_frames * hop:hop] * g.window, g.nfft) * env_n
    blocks = np.fft.irfft(spec * g.delay, g.nfft)
    per = -(-g.nfft // hop)
    blocks = np.pad(blocks, ((0, 0), (0, per * hop - g.nfft))).reshape(n_frames, per, hop)
    out = np.zeros((n_frames + per, hop))
    for j in range(per):
        out[j:j + n_frames] += blocks[:, j]
    start = hop + g.delay_samples  # the padded sample that frame 0 is centred on, plus delay
    wave = out.reshape(-1)[start:start + n]

    # level: active speech at -26 dBFS (+ channel level), then background noise at the SNR
    active = np.interp(np.arange(n), np.arange(n_frames) * hop, amp) > 0.3
    rms = math.sqrt(float(np.mean(wave[active] ** 2))) if active.any() else 0.0
    level = 10.0 ** ((-26.0 + (channel.level_db if channel else 0.0)) / 20.0)
    wave = wave * (level / max(rms, 1e-9))
    if channel is not None:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 50.0)
        bg = np.fft.irfft(spectrum * (f / 1000.0) ** (-channel.noise_colour / 2), n)
        bg *= level * 10.0 ** (-channel.snr_db / 20.0) / max(float(np.std(bg)), 1e-12)
        wave = wave + bg
    peak = float(np.max(np.abs(wave))) if n else 0.0
    if peak > 0.99:
        wave = wave * (0.99 / peak)
    return wave


def _quantise(wave: np.ndarray) -> np.ndarray:
    """16-bit PCM the way :func:`speaker.audio.write_pack` quantises floats."""
    return np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)


def _video(cfg: ToyConfig, index: int, video: int) -> tuple[str, np.ndarray, _Channel]:
    """Video id, voice-state offset and recording channel of one video of a speaker."""
    rng = _rng(cfg.seed, _VIDEO, index, video)
    name = "".join(_ID_ALPHABET[i] for i in rng.integers(0, len(_ID_ALPHABET), 11))
    sv = cfg.session_variation
    state = sv * 0.2 * rng.standard_normal(len(_STATE))
    tilt, bump_db, level_db, snr = rng.standard_normal(4)
    bump_freq = 300.0 * math.exp(rng.uniform(0.0, math.log(4000.0 / 300.0)))
    band_limited = rng.random() < min(0.3, 0.15 * sv)
    cutoff = rng.uniform(3500.0, 7000.0)
    channel = _Channel(
        tilt=1.5 * sv * tilt,
        bump_freq=bump_freq,
        bump_db=3.0 * sv * bump_db,
        lowpass=cutoff if band_limited else 0.0,
        level_db=3.0 * sv * level_db,
        snr_db=cfg.snr_db + 4.0 * sv * snr,
        noise_colour=rng.uniform(0.0, 2.0),
    )
    return name, state, channel


def utterance_id(cfg: ToyConfig, index: int, utt: int) -> str:
    """VoxCeleb-style id ``<spk>/<video>/<nnnnn>.wav`` of utterance ``utt`` of a speaker.

    Example::

        >>> utterance_id(ToyConfig(), 12, 5)
        'id00012/LDaYS6BRgZR/00002.wav'
    """
    video, number = divmod(utt, UTTS_PER_VIDEO)
    return f"{speaker_id(index)}/{_video(cfg, index, video)[0]}/{number + 1:05d}.wav"


def synthesize_utterance(cfg: ToyConfig, index: int, utt: int) -> tuple[str, np.ndarray]:
    """(id, int16 audio) of utterance ``utt`` of global speaker ``index``; a pure function.

    Example::

        >>> uid, audio = synthesize_utterance(ToyConfig(duration=1.0), 0, 0)
        >>> audio.dtype, 12800 <= audio.size <= 19200
        (dtype('int16'), True)
    """
    video, number = divmod(utt, UTTS_PER_VIDEO)
    name, state, channel = _video(cfg, index, video)
    rng = _rng(cfg.seed, _UTTERANCE, index, utt)
    sv = cfg.session_variation
    z = _speaker_vector(cfg, index)
    z[_STATE] += state + sv * 0.12 * rng.standard_normal(len(_STATE))
    tilt, level_db, snr = rng.standard_normal(3)
    channel = _Channel(
        tilt=channel.tilt + 0.3 * sv * tilt,
        bump_freq=channel.bump_freq,
        bump_db=channel.bump_db,
        lowpass=channel.lowpass,
        level_db=channel.level_db + sv * level_db,
        snr_db=channel.snr_db + 2.0 * sv * snr,
        noise_colour=channel.noise_colour,
    )
    n = round(cfg.duration * rng.uniform(0.8, 1.2) * cfg.sample_rate)
    wave = _synthesize(_voice_from_vector(z), rng, n, cfg.sample_rate, channel)
    return f"{speaker_id(index)}/{name}/{number + 1:05d}.wav", _quantise(wave)


# ---- noise bank ----------------------------------------------------------------------------

NOISE_FILES, MUSIC_FILES, BABBLE_FILES, RIR_FILES = 12, 8, 8, 20
NOISE_SECONDS, MUSIC_SECONDS, BABBLE_SECONDS = 6.0, 8.0, 8.0


def _noise(seed: int, i: int, sr: int) -> np.ndarray:
    """Stationary or modulated coloured noise; the kind cycles through eight recipes."""
    rng = _rng(seed, _BANK, 0, i)
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


def _music(seed: int, i: int, sr: int) -> np.ndarray:
    """Notes and chords of a harmonic instrument on a random scale, some with a beat."""
    rng = _rng(seed, _BANK, 1, i)
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


def _babble(cfg: ToyConfig, i: int) -> np.ndarray:
    """One non-corpus synthetic voice talking (augmentation mixes several into babble)."""
    rng = _rng(cfg.seed, _BANK, 2, i)
    n = round(BABBLE_SECONDS * cfg.sample_rate)
    return _synthesize(voice(cfg, BABBLE_BASE + i), rng, n, cfg.sample_rate, None)


def _rir(seed: int, i: int, sr: int) -> tuple[np.ndarray, float]:
    """Room impulse response (direct path, early reflections, decaying diffuse tail), RT60."""
    rng = _rng(seed, _BANK, 3, i)
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


# ---- trials --------------------------------------------------------------------------------


def _trials(cfg: ToyConfig, ids_by_speaker: dict[int, list[str]]) -> list[str]:
    """Every same-speaker pair once (enrol = the smaller id), each followed by a non-target
    with the same enrolment: cycling through same family, same population (other family)
    and other population, as far as the test speakers allow."""
    rng = _rng(cfg.seed, _TRIALS)
    speakers = sorted(ids_by_speaker)
    fam = {s: family_of(cfg, s) for s in speakers}
    groups: dict[int, list[list[int]]] = {}
    for s in speakers:
        others = [o for o in speakers if o != s]
        groups[s] = [
            [o for o in others if fam[o][1] == fam[s][1]],
            [o for o in others if fam[o][0] == fam[s][0] and fam[o][1] != fam[s][1]],
            [o for o in others if fam[o][0] != fam[s][0]],
        ]
    lines: list[str] = []
    seen: set[tuple[str, str]] = set()
    count = 0
    for s in speakers:
        ids = sorted(ids_by_speaker[s])
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                enroll = ids[a]
                lines.append(f"1 {enroll} {ids[b]}")
                category = count % 3
                count += 1
                pool = next(g for g in (groups[s][category:] + groups[s][:category]) if g)
                for _ in range(50):  # avoid repeating a non-target pair
                    o = pool[int(rng.integers(len(pool)))]
                    test = ids_by_speaker[o][int(rng.integers(len(ids_by_speaker[o])))]
                    if (enroll, test) not in seen:
                        break
                seen.add((enroll, test))
                lines.append(f"0 {enroll} {test}")
    return lines


# ---- writing the corpus --------------------------------------------------------------------


def _write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    # Encoded in memory (the same bytes), so a full or read-only disk fails as an OSError
    # naming the file; libsndfile's own writes fail with a bare "System error.".
    buf = io.BytesIO()
    soundfile.write(buf, audio, sr, subtype="PCM_16", format="WAV")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def _speaker_job(args: tuple[ToyConfig, int, int, str | None]
                 ) -> list[tuple[str, np.ndarray | None, int]]:
    """Synthesise one speaker; write its wavs under ``wav_root`` or return the audio."""
    cfg, index, n_utts, wav_root = args
    out = []
    for u in range(n_utts):
        uid, audio = synthesize_utterance(cfg, index, u)
        if wav_root is not None:
            _write_wav(Path(wav_root) / uid, audio, cfg.sample_rate)
            out.append((uid, None, audio.size))
        else:
            out.append((uid, audio, audio.size))
    return out


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_set(cfg: ToyConfig, root: Path, indices: list[int], n_utts: int, imap: Any,
               desc: str) -> dict[int, list[str]]:
    """One data directory (train/ or test/); -> {speaker index: utterance ids}."""
    from tqdm import tqdm

    root.mkdir(parents=True)
    wav_root = None if cfg.pack else str(root / "wav")
    jobs = [(cfg, i, n_utts, wav_root) for i in indices]
    results: dict[str, int] = {}
    ids_by_speaker: dict[int, list[str]] = {}

    def stream() -> Iterator[tuple[str, np.ndarray]]:
        bar = tqdm(imap(_speaker_job, jobs), total=len(jobs), desc=desc, unit="spk",
                   disable=None)
        for index, utts in zip(indices, bar, strict=True):
            ids_by_speaker[index] = [uid for uid, _, _ in utts]
            for uid, audio, n in utts:
                results[uid] = n
                if audio is not None:
                    yield uid, audio

    if cfg.pack:
        from speaker.audio import write_pack

        write_pack(root / "audio.h5", stream(), cfg.sample_rate)
    else:
        for _ in stream():
            pass
    ids = sorted(results)
    speaker_of = {uid: uid.split("/", 1)[0] for uid in ids}
    utts = [
        Utterance(uid, speaker_of[uid], "audio.h5" if cfg.pack else f"wav/{uid}",
                  results[uid], cfg.sample_rate, uid if cfg.pack else None)
        for uid in ids
    ]
    Manifest(utts, source=str(root)).write(root / "manifest.jsonl")
    if not cfg.pack:
        _write_lines(root / "wav.scp", [f"{uid} wav/{uid}" for uid in ids])
    _write_lines(root / "utt2spk", [f"{uid} {speaker_of[uid]}" for uid in ids])
    _write_lines(root / "utt2num_samples", [f"{uid} {results[uid]}" for uid in ids])
    _write_lines(root / "spk2utt", [
        f"{speaker_id(i)} " + " ".join(sorted(ids_by_speaker[i])) for i in sorted(indices)])
    _write_lines(root / "speakers.tsv", ["speaker\tpopulation\tfamily"] + [
        f"{speaker_id(i)}\t{family_of(cfg, i)[0]}\t{family_of(cfg, i)[1]}"
        for i in sorted(indices)])
    return ids_by_speaker


def _write_bank(cfg: ToyConfig, out: Path) -> list[float]:
    sr = cfg.sample_rate
    for sub, count, make in [
        ("noise", NOISE_FILES, lambda i: _noise(cfg.seed, i, sr)),
        ("music", MUSIC_FILES, lambda i: _music(cfg.seed, i, sr)),
        ("speech", BABBLE_FILES, lambda i: _babble(cfg, i)),
    ]:
        for i in range(count):
            _write_wav(out / "musan" / sub / f"{sub}-{i:04d}.wav", _quantise(make(i)), sr)
    rt60s = []
    for i in range(RIR_FILES):
        h, rt60 = _rir(cfg.seed, i, sr)
        _write_wav(out / "rirs" / f"rir-{i:04d}.wav", _quantise(h), sr)
        rt60s.append(rt60)
    return rt60s


_README = """\
Synthetic speaker-verification corpus written by `python -m speaker.toy` (entkd), format
version {version}. Every byte is a function of the parameters below: rerunning with them
(and the same numpy, libsndfile and h5py) reproduces this directory exactly, whatever the
number of worker processes.

Parameters
{params}

Contents
  train/  {n_train} speakers (id{first_train:05d}..), {train_utts} utterances
  test/   {n_test} held-out speakers (id{first_test:05d}..), {test_utts} utterances,
          trials.txt with {n_trials} trials (half target; non-targets cycle through same
          family, same population and other population as far as the speakers allow)
  musan/noise   {noise} coloured/modulated noises of {noise_s:g} s
  musan/music   {music} synthetic music clips of {music_s:g} s
  musan/speech  {babble} clean single synthetic voices of {babble_s:g} s (not in train/test)
  rirs/         {rirs} room impulse responses, RT60 {rt_min:.2f}-{rt_max:.2f} s

Each data directory holds manifest.jsonl (paths relative to that directory, which is how
speaker.data.Manifest.read resolves them), Kaldi-style utt2spk, spk2utt, utt2num_samples
and (without --pack) wav.scp with paths relative to the data directory, the VoxCeleb tree
wav/<speaker>/<video>/<nnnnn>.wav (16-bit PCM, {sample_rate} Hz) or, with --pack,
audio.h5 (one int16 dataset per utterance id), and speakers.tsv giving each speaker's
population and family. Utterance ids are the VoxCeleb relative paths.

Signal model: hierarchical speakers (population -> family -> speaker) controlling pitch,
vocal-tract length, formant bandwidths, spectral tilt, jitter, shimmer, breathiness,
speaking rate, a fingerprint resonance/anti-resonance, nasal anti-resonance, high-formant
and per-vowel accent offsets; utterances are random syllable strings from a shared phone
inventory with formant glides, pitch contour and pauses; recording conditions (EQ, band
limit, level, coloured background noise at ~snr_db) vary per video of 4 utterances and
slightly per utterance. See the docstring of speaker/toy.py for the seeding scheme.
"""


def generate(cfg: ToyConfig, out: str | os.PathLike[str], workers: int = 1,
             force: bool = False) -> None:
    """Write the corpus to ``out`` (staged next to it and renamed into place when complete,
    :func:`speaker.atomic.atomic_dir`: a full disk or an interrupt leaves nothing behind).

    An existing non-empty ``out`` is a :class:`UserError` unless ``force`` (then it is
    replaced once the new corpus is complete).

    Example::

        >>> generate(ToyConfig(speakers=6, utts_per_speaker=3, duration=1.0, test_speakers=3),
        ...          "/tmp/tiny", force=True)   # doctest: +SKIP
    """
    out = Path(out)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise UserError(f"{out} already exists and is not empty; remove it or pass --force")
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        with atomic_dir(out) as stage:
            imap = pool.imap if pool is not None else map
            train = list(range(cfg.speakers))
            test = [TEST_BASE + j for j in range(cfg.test_speakers)]
            logger.info("synthesising %d training speakers x %d utterances", len(train),
                        cfg.utts_per_speaker)
            _write_set(cfg, stage / "train", train, cfg.utts_per_speaker, imap, "train")
            logger.info("synthesising %d test speakers x %d utterances", len(test), cfg.test_utts)
            test_ids = _write_set(cfg, stage / "test", test, cfg.test_utts, imap, "test")
            trials = _trials(cfg, test_ids)
            _write_lines(stage / "test" / "trials.txt", trials)
            logger.info("writing the noise bank and RIRs")
            rt60s = _write_bank(cfg, stage)
            params = cfg.to_dict()
            atomic_write_text(stage / "toy.json", json.dumps(
                {"format_version": FORMAT_VERSION, **params}, indent=2, sort_keys=True) + "\n")
            width = max(len(k) for k in params)
            atomic_write_text(stage / "README.txt", _README.format(
                version=FORMAT_VERSION,
                params="\n".join(f"  {k:<{width}}  {v}" for k, v in params.items()),
                n_train=cfg.speakers, first_train=0, train_utts=cfg.speakers * cfg.utts_per_speaker,
                n_test=cfg.test_speakers, first_test=TEST_BASE,
                test_utts=cfg.test_speakers * cfg.test_utts, n_trials=len(trials),
                noise=NOISE_FILES, noise_s=NOISE_SECONDS, music=MUSIC_FILES, music_s=MUSIC_SECONDS,
                babble=BABBLE_FILES, babble_s=BABBLE_SECONDS, rirs=RIR_FILES,
                rt_min=min(rt60s), rt_max=max(rt60s), sample_rate=cfg.sample_rate,
            ))
    finally:
        if pool is not None:
            pool.terminate()
    logger.info("wrote %s", out)


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
