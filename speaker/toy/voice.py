"""Voices and speech: per-speaker voice parameters from a population/family/speaker
hierarchy, and utterances synthesised from them (source-filter, per-video channels)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from speaker.toy.config import (
    ID_ALPHABET,
    TAG_FAMILY,
    TAG_POPULATION,
    TAG_SPEAKER,
    TAG_UTTERANCE,
    TAG_VIDEO,
    UTTS_PER_VIDEO,
    ToyConfig,
    family_of,
    speaker_id,
    tagged_rng,
)

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
    centre = tagged_rng(cfg.seed, TAG_POPULATION, population).standard_normal(_NDIM)
    # across populations a higher pitch goes with a shorter vocal tract (as across sexes)
    centre[_D["vtl"]] = 0.7 * centre[_D["f0"]] + 0.7 * centre[_D["vtl"]]
    offset = tagged_rng(cfg.seed, TAG_FAMILY, family).standard_normal(_NDIM)
    own = tagged_rng(cfg.seed, TAG_SPEAKER, index).standard_normal(_NDIM)
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


def synthesize(v: Voice, rng: np.random.Generator, n: int, sr: int,
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


def quantise(wave: np.ndarray) -> np.ndarray:
    """16-bit PCM the way :func:`speaker.io.audio.write_pack` quantises floats."""
    return np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)


def _video(cfg: ToyConfig, index: int, video: int) -> tuple[str, np.ndarray, _Channel]:
    """Video id, voice-state offset and recording channel of one video of a speaker."""
    rng = tagged_rng(cfg.seed, TAG_VIDEO, index, video)
    name = "".join(ID_ALPHABET[i] for i in rng.integers(0, len(ID_ALPHABET), 11))
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
    rng = tagged_rng(cfg.seed, TAG_UTTERANCE, index, utt)
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
    wave = synthesize(_voice_from_vector(z), rng, n, cfg.sample_rate, channel)
    return f"{speaker_id(index)}/{name}/{number + 1:05d}.wav", quantise(wave)
