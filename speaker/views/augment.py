"""Waveform augmentation as a pure function of (wave, seed, config, noise bank).

Wespeaker/Kaldi style: with probability ``aug_prob`` a view gets exactly one of

* **reverb** (share ``reverb_prob``): convolution with a room impulse response normalised to
  unit energy, aligned at its direct-path peak (strongest tap) so speech is not delayed,
  cut to the original length. FFT length is padded to a power of two (4 ms instead of
  22 ms for ``fftconvolve`` on a 2-s crop with a 0.5-s RIR; docs/ARCHITECTURE.md);
* **noise** / **music** / **babble** (the rest, in equal shares): MUSAN noise or music at an
  SNR drawn from ``noise_snr`` / ``music_snr``, or the sum of 3-7 MUSAN speech segments
  (each at equal power) at an SNR drawn from ``babble_snr``.

A type whose bank is empty is skipped: the remaining types share its probability (an empty
bank means no augmentation). Then an optional gain from ``gain_db`` applies to every view.

**Replay.** Every random number comes from ``numpy.random.Generator(PCG64(seed))`` and all of
them are drawn up front in a fixed layout (:func:`draw_params`), whichever branch is taken,
so changing one probability never shifts another parameter and the drawn parameters can be
logged (:class:`AugmentParams`). Same (wave, seed, config, bank) -> bit-identical output.

Example::

    bank = NoiseBank.from_dirs("/data/musan", "/data/RIRS_NOISES")
    cfg = AugmentConfig()
    noisy = augment(wave, seed=1234, config=cfg, bank=bank)
    draw_params(len(wave), 1234, cfg, bank)  # what was applied, e.g.
    # AugmentParams(kind='music', snr_db=7.3, sources=((12, 40311),), gain_db=0.0)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from speaker.io.audio import load_audio
from store.errors import UserError

logger = logging.getLogger(__name__)

KINDS = ("reverb", "noise", "music", "babble")
MUSAN_CATEGORIES = {"noise": "noise", "music": "music", "speech": "speech"}


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults follow wespeaker's VoxCeleb recipe.

    ``speeds`` lists speed-perturbation factors; a view draws one uniformly (see
    :mod:`speaker.views.view`) and each factor is its own set of classes (:class:`LabelMap`).
    ``AugmentConfig(aug_prob=0.0)`` disables noise and reverb.

    Example::

        >>> cfg = AugmentConfig(speeds=(1.0, 0.9, 1.1))
        >>> AugmentConfig.from_dict(cfg.to_dict()) == cfg, len(cfg.content_hash())
        (True, 64)
    """

    aug_prob: float = 0.6
    reverb_prob: float = 0.5
    noise_snr: tuple[float, float] = (0.0, 15.0)
    music_snr: tuple[float, float] = (5.0, 15.0)
    babble_snr: tuple[float, float] = (13.0, 20.0)
    babble_speakers: tuple[int, int] = (3, 7)
    gain_db: tuple[float, float] = (0.0, 0.0)
    speeds: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        def norm(name: str, conv: type) -> tuple[Any, ...]:
            value = getattr(self, name)
            try:
                out = tuple(conv(v) for v in value)
            except (TypeError, ValueError):
                raise UserError(f"augment config {name}={value!r}: expected numbers") from None
            object.__setattr__(self, name, out)
            return out

        for name in ("noise_snr", "music_snr", "babble_snr", "gain_db"):
            lo_hi = norm(name, float)
            if len(lo_hi) != 2 or not lo_hi[0] <= lo_hi[1]:
                raise UserError(
                    f"augment config {name}={lo_hi!r}: expected (low, high), low <= high"
                )
        spk = norm("babble_speakers", int)
        if len(spk) != 2 or not 1 <= spk[0] <= spk[1]:
            raise UserError(f"augment config babble_speakers={spk!r}: expected 1 <= low <= high")
        speeds = norm("speeds", float)
        if not speeds or any(not s > 0 for s in speeds) or len(set(speeds)) != len(speeds):
            raise UserError(f"augment config speeds={speeds!r}: expected unique positive factors")
        for name in ("aug_prob", "reverb_prob"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
                raise UserError(f"augment config {name}={p!r}: expected a probability in [0, 1]")
            object.__setattr__(self, name, float(p))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"augment config: unknown key(s) {sorted(unknown)}")
        return cls(**d)

    def content_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


Source = tuple[str, np.ndarray]


def _frozen_sources(sources: Any, what: str) -> tuple[Source, ...]:
    out = []
    for name, wave in sources:
        arr = np.array(wave, dtype=np.float32, copy=True).reshape(-1)
        if arr.size == 0:
            raise UserError(f"{what} {name}: audio is empty")
        arr.setflags(write=False)
        out.append((str(name), arr))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class NoiseBank:
    """Noise, music, babble speech and RIRs, held in memory as read-only float32 arrays.

    Build it from MUSAN / RIRS_NOISES style directories with :meth:`from_dirs`, or directly
    from ``(name, wave)`` pairs. Its :meth:`content_hash` (names + samples) goes into the
    cache attrs, so a replay with another bank is detected.

    Example::

        >>> bank = NoiseBank(16000, noise=(("hum", np.sin(np.arange(16000) / 5)),))
        >>> bank.available(), NoiseBank.empty().available()
        (('noise',), ())
    """

    sample_rate: int = 16000
    noise: tuple[Source, ...] = ()
    music: tuple[Source, ...] = ()
    speech: tuple[Source, ...] = ()
    rirs: tuple[Source, ...] = ()

    def __post_init__(self) -> None:
        for kind in ("noise", "music", "speech", "rirs"):
            object.__setattr__(self, kind, _frozen_sources(getattr(self, kind), kind))

    @classmethod
    def empty(cls, sample_rate: int = 16000) -> NoiseBank:
        return cls(sample_rate)

    @classmethod
    def from_dirs(
        cls,
        musan: str | os.PathLike[str] | None,
        rirs: str | os.PathLike[str] | None,
        sample_rate: int = 16000,
        max_seconds: float | None = None,
    ) -> NoiseBank:
        """Load every ``.wav`` of a MUSAN-style and an RIR directory (sorted paths).

        ``musan`` holds ``noise/``, ``music/`` and ``speech/`` (any depth below them; a
        missing one is simply absent from the bank). ``rirs`` is any directory of RIR wavs;
        for the RIRS_NOISES layout only ``simulated_rirs/`` is used, because its siblings
        ``pointsource_noises/`` and ``real_rirs_isotropic_noises/`` also hold noises.
        ``max_seconds`` keeps only the start of each file (full MUSAN is ~25 GB as float32).

        Example::

            bank = NoiseBank.from_dirs("/data/musan", "/data/RIRS_NOISES", max_seconds=60)
            # NoiseBank(16000 Hz: noise 930, music 660, speech 426, rirs 60000)
        """
        limit = None if max_seconds is None else max(1, int(max_seconds * sample_rate))

        def load_dir(d: Path) -> tuple[Source, ...]:
            files = sorted(p for p in d.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
            return tuple(
                (p.relative_to(d).as_posix(), load_audio(p, sample_rate)[:limit]) for p in files
            )

        parts: dict[str, tuple[Source, ...]] = {}
        if musan is not None:
            musan = Path(musan)
            if not musan.is_dir():
                raise UserError(f"MUSAN directory {musan} does not exist")
            for sub, kind in MUSAN_CATEGORIES.items():
                if (musan / sub).is_dir():
                    parts[kind] = load_dir(musan / sub)
            if not any(parts.values()):
                raise UserError(
                    f"no wavs in {musan}/noise, {musan}/music or {musan}/speech "
                    "(expected the MUSAN layout)"
                )
        if rirs is not None:
            rirs = Path(rirs)
            if not rirs.is_dir():
                raise UserError(f"RIR directory {rirs} does not exist")
            root = rirs / "simulated_rirs" if (rirs / "simulated_rirs").is_dir() else rirs
            parts["rirs"] = load_dir(root)
            if not parts["rirs"]:
                raise UserError(f"no RIR wavs under {root}")
        bank = cls(sample_rate, **parts)
        logger.info("loaded %s", bank)
        return bank

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{k} {len(getattr(self, k))}" for k in ("noise", "music", "speech", "rirs")
        )
        return f"NoiseBank({self.sample_rate} Hz: {counts})"

    def available(self) -> tuple[str, ...]:
        """Augmentation kinds this bank can serve, in the fixed order of :data:`KINDS`."""
        have = {
            "reverb": self.rirs,
            "noise": self.noise,
            "music": self.music,
            "babble": self.speech,
        }
        return tuple(k for k in KINDS if have[k])

    def content_hash(self) -> str:
        """sha256 hex over the sample rate and every (category, name, samples)."""
        return self._hash

    @cached_property
    def _hash(self) -> str:
        h = hashlib.sha256(f"entkd-noisebank-1 {self.sample_rate}\n".encode())
        for kind in ("noise", "music", "speech", "rirs"):
            items = getattr(self, kind)
            h.update(f"{kind} {len(items)}\n".encode())
            for name, wave in items:
                h.update(f"{name} {len(wave)}\n".encode())
                h.update(np.ascontiguousarray(wave, dtype="<f4").tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class AugmentParams:
    """What :func:`augment` does to one view (for logging and tests).

    ``sources`` are ``(bank index, offset)`` pairs into the bank list of ``kind``
    (noise/music/speech, or the RIR list for reverb with offset 0).
    """

    kind: str = "none"
    snr_db: float | None = None
    sources: tuple[tuple[int, int], ...] = ()
    gain_db: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": [list(s) for s in self.sources]}


# Fixed layout of the uniform draws (indices into the vector drawn by draw_params).
_U_APPLY, _U_KIND, _U_GAIN, _U_RIR = 0, 1, 2, 3
_U_NOISE = 4  # file, offset, snr
_U_MUSIC = 7  # file, offset, snr
_U_BABBLE_SNR, _U_BABBLE_COUNT = 10, 11
_U_BABBLE = 12  # (file, offset) per speaker, up to babble_speakers[1]; last so its size is free


def _pick(u: float, n: int) -> int:
    return min(int(u * n), n - 1)


def _offset(u: float, source_len: int, n: int) -> int:
    """Crop start inside a source: any full-length window, or any phase when tiling."""
    span = source_len - n + 1 if source_len >= n else source_len
    return _pick(u, span)


def _uniform(u: float, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo + u * (hi - lo)


def _kind_weights(config: AugmentConfig, bank: NoiseBank) -> list[tuple[str, float]]:
    """(kind, unnormalised share) of every kind a view may get: ``reverb_prob`` for reverb,
    the rest split evenly over noise, music and babble; kinds the bank lacks drop out."""
    share = (1.0 - config.reverb_prob) / 3.0
    weights = [(k, config.reverb_prob if k == "reverb" else share) for k in bank.available()]
    return [(k, w) for k, w in weights if w > 0]


def applied_augmentation(config: AugmentConfig, bank: NoiseBank) -> dict[str, Any]:
    """What a run with ``config`` and ``bank`` really does to its crops, for config.json.

    ``aug_prob`` only says how often a view *would* be augmented; without MUSAN/RIR audio
    nothing is added, and a run must say so rather than record 0.6 and train on clean
    crops. ``probability`` is 0 when no kind can be served.

    Example::

        >>> applied_augmentation(AugmentConfig(), NoiseBank.empty())
        {'kinds': [], 'probability': 0.0, 'speeds': [1.0], 'gain_db': [0.0, 0.0]}
    """
    kinds = [k for k, _ in _kind_weights(config, bank)] if config.aug_prob > 0 else []
    return {"kinds": kinds, "probability": config.aug_prob if kinds else 0.0,
            "speeds": list(config.speeds), "gain_db": list(config.gain_db)}


def describe_augmentation(config: AugmentConfig, bank: NoiseBank) -> str:
    """One line for the start of a run: what its crops get, and why nothing if nothing.

    Example::

        >>> describe_augmentation(AugmentConfig(), NoiseBank.empty())[:44]
        'augmentation: none -- no MUSAN/RIR audio (--'
    """
    applied = applied_augmentation(config, bank)
    speeds = config.speeds != (1.0,)
    extra = f"; speed perturbation {', '.join(f'{s:g}' for s in config.speeds)}" if speeds else ""
    if applied["kinds"]:
        return (f"augmentation: with probability {config.aug_prob:g} one of "
                f"{', '.join(applied['kinds'])}{extra}")
    if config.aug_prob == 0:
        return f"augmentation: none -- aug_prob 0{extra}"
    return ("augmentation: none -- no MUSAN/RIR audio (--musan/--rirs, or musan/ and rirs/ "
            f"under --data), so aug_prob {config.aug_prob:g} adds nothing{extra}")


def announce_augmentation(config: AugmentConfig, bank: NoiseBank) -> dict[str, Any]:
    """Log :func:`describe_augmentation` (a warning when ``aug_prob`` asks for augmentation
    the bank cannot give) and return :func:`applied_augmentation` for the run's record."""
    applied = applied_augmentation(config, bank)
    level = logging.WARNING if config.aug_prob > 0 and not applied["kinds"] else logging.INFO
    logger.log(level, describe_augmentation(config, bank))
    return applied


def draw_params(
    num_samples: int, seed: int, config: AugmentConfig, bank: NoiseBank
) -> AugmentParams:
    """Draw every random choice of one view from ``Generator(PCG64(seed))``.

    Always draws ``12 + 2 * babble_speakers[1]`` uniforms in one fixed layout, so each
    parameter depends only on its own slot.

    Example::

        >>> draw_params(32000, 7, AugmentConfig(aug_prob=0.0), NoiseBank.empty())
        AugmentParams(kind='none', snr_db=None, sources=(), gain_db=0.0)
    """
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    u = rng.random(_U_BABBLE + 2 * config.babble_speakers[1]).tolist()
    gain = _uniform(u[_U_GAIN], config.gain_db)

    weights = _kind_weights(config, bank)
    total = sum(w for _, w in weights)
    if not weights or u[_U_APPLY] >= config.aug_prob:
        return AugmentParams(gain_db=gain)
    kind, acc = weights[-1][0], 0.0
    for k, w in weights:
        acc += w
        if u[_U_KIND] * total < acc:
            kind = k
            break

    if kind == "reverb":
        return AugmentParams("reverb", None, ((_pick(u[_U_RIR], len(bank.rirs)), 0),), gain)
    if kind in ("noise", "music"):
        items = bank.noise if kind == "noise" else bank.music
        base = _U_NOISE if kind == "noise" else _U_MUSIC
        snr_range = config.noise_snr if kind == "noise" else config.music_snr
        i = _pick(u[base], len(items))
        src = ((i, _offset(u[base + 1], len(items[i][1]), num_samples)),)
        return AugmentParams(kind, _uniform(u[base + 2], snr_range), src, gain)
    lo, hi = config.babble_speakers
    count = lo + _pick(u[_U_BABBLE_COUNT], hi - lo + 1)
    srcs = []
    for j in range(count):
        i = _pick(u[_U_BABBLE + 2 * j], len(bank.speech))
        srcs.append((i, _offset(u[_U_BABBLE + 2 * j + 1], len(bank.speech[i][1]), num_samples)))
    return AugmentParams("babble", _uniform(u[_U_BABBLE_SNR], config.babble_snr), tuple(srcs), gain)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with the unit-energy ``rir``, aligned at its peak, same length as ``wave``.

    Equals ``np.convolve(wave, rir / ||rir||)[p : p + len(wave)]`` with ``p = argmax|rir|``,
    computed with real FFTs whose length is the next power of two that avoids wrap-around
    on the kept samples.

    Example::

        >>> reverberate(np.ones(4), np.array([0.0, 2.0, 0.0])).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    x = np.asarray(wave, dtype=np.float64)
    h = np.asarray(rir, dtype=np.float64)
    energy = _sum_squares(h)
    n, m = len(x), len(h)
    if n == 0 or energy == 0.0:
        return x.astype(np.float32)
    h = h / np.sqrt(energy)
    p = int(np.argmax(np.abs(h)))
    # kept outputs p..p+n-1 must lie inside the FFT and not receive tail wrap-around
    need = max(n + m - 1 - p, p + n)
    nfft = 1 << (need - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)
    return y[p : p + n].astype(np.float32)


def _segment(source: np.ndarray, offset: int, n: int) -> np.ndarray:
    if offset + n <= len(source):
        return source[offset : offset + n]
    return source[(offset + np.arange(n)) % len(source)]


def _sum_squares(x: np.ndarray) -> float:
    """sum(x**2) without BLAS: np.dot goes to multi-threaded OpenBLAS, whose result
    depends on its thread count (replay must not) and which spins on a busy CPU."""
    return float(np.einsum("i,i->", x, x))


def _power(x: np.ndarray) -> float:
    return _sum_squares(x) / max(len(x), 1)


def apply_params(wave: np.ndarray, params: AugmentParams, bank: NoiseBank) -> np.ndarray:
    """Apply drawn parameters; float32 output of the same length, input untouched."""
    x = np.asarray(wave, dtype=np.float32)
    n = len(x)
    if params.kind == "reverb":
        out = reverberate(x, bank.rirs[params.sources[0][0]][1]).astype(np.float64)
    elif params.kind in ("noise", "music", "babble"):
        items = {"noise": bank.noise, "music": bank.music, "babble": bank.speech}[params.kind]
        added = np.zeros(n, dtype=np.float64)
        for i, offset in params.sources:
            seg = _segment(items[i][1], offset, n).astype(np.float64)
            p = _power(seg)
            if p > 0.0:
                added += seg / np.sqrt(p)  # babble speakers at equal power
        p_added = _power(added)
        out = x.astype(np.float64)
        if p_added > 0.0 and params.snr_db is not None:
            scale = np.sqrt(_power(out) / (p_added * 10.0 ** (params.snr_db / 10.0)))
            out = out + scale * added
    elif params.kind == "none":
        out = x
    else:
        raise ValueError(f"unknown augmentation kind {params.kind!r}")
    if params.gain_db != 0.0:
        out = out * 10.0 ** (params.gain_db / 20.0)
    return np.array(out, dtype=np.float32)  # always a fresh array: never alias the input


def augment(wave: np.ndarray, seed: int, config: AugmentConfig, bank: NoiseBank) -> np.ndarray:
    """Augment one crop; a pure function of its arguments (see the module docstring).

    Example::

        >>> w = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
        >>> bank = NoiseBank(noise=(("white", np.random.default_rng(1).standard_normal(8000)),))
        >>> out = augment(w, 42, AugmentConfig(aug_prob=1.0), bank)
        >>> again = augment(w, 42, AugmentConfig(aug_prob=1.0), bank)
        >>> out.dtype, out.shape, np.array_equal(out, again)
        (dtype('float32'), (16000,), True)
    """
    return apply_params(wave, draw_params(len(wave), seed, config, bank), bank)
