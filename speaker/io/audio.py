"""Audio I/O: whole files, random crops, and HDF5 audio packs.

* Files are read with soundfile only (torchaudio's loaders need torchcodec). Multi-channel
  audio keeps its **first channel**: for VoxCeleb (mono) this changes nothing, and for
  multi-microphone RIRs the first channel is a physical response where a channel mean would
  smear several.
* Audio at another sample rate is resampled with :func:`torchaudio.functional.resample`
  (logged once per path); such files are read whole, so keep a corpus at one rate for speed.
* An HDF5 pack (:func:`write_pack`) holds one int16 dataset per utterance id, contiguous,
  so a crop reads only its own bytes.
* A crop that runs past the end of an utterance is **repeat-padded** (the utterance is
  tiled, as in wespeaker): the documented fallback for audio shorter than the crop.

Example::

    reader = AudioReader(16000)
    crop = reader.read(manifest[0], start=8000, length=32000)
    write_pack("train.h5", ((u.id, load_audio(u.path, 16000)) for u in manifest), 16000)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from speaker.io.manifest import Utterance
from store.atomic import atomic_path
from store.errors import UserError

logger = logging.getLogger(__name__)

_resample_logged: set[str] = set()


def _fail(path: str | os.PathLike[str], exc: BaseException | str) -> UserError:
    reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    if not isinstance(exc, str) and not os.path.exists(path):
        reason = "no such file"
    return UserError(f"cannot read audio {path}: {reason}")


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation), float32 in and out.

    The result has ``ceil(len(wave) * new_rate / orig_rate)`` samples.

    Example::

        >>> resample(np.zeros(8000, np.float32), 8000, 16000).shape
        (16000,)
    """
    if orig_rate == new_rate:
        return np.asarray(wave, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    return AF.resample(t, orig_rate, new_rate).numpy()


def _log_resample(path: str, orig: int, new: int) -> None:
    if path not in _resample_logged:
        _resample_logged.add(path)
        logger.info("resampling %s from %d Hz to %d Hz", path, orig, new)


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Whole file as float32 mono in [-1, 1] at ``sample_rate``.

    First channel of multi-channel files; other rates are resampled (logged once per path).
    A missing or unreadable file is a :class:`UserError` naming the path.

    Example::

        wave = load_audio("id10270/5r0dWxy17C8/00001.wav", 16000)  # float32, 1-D
    """
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, OSError, ValueError) as exc:
        raise _fail(path, exc) from None
    wave = np.ascontiguousarray(data[:, 0])
    _check_finite(wave, f"audio {path}")
    if rate != sample_rate:
        _log_resample(str(path), rate, sample_rate)
        wave = resample(wave, rate, sample_rate)
    return wave


def _check_finite(wave: np.ndarray, what: str) -> None:
    """Refuse NaN/inf samples (float wav files can hold them) before they reach a model,
    where they would surface as a NaN loss far from the file at fault. A crop costs one
    vectorised pass, microseconds next to decoding it."""
    if not np.isfinite(wave).all():
        raise UserError(f"{what} has NaN/inf samples; fix or remove the file")


def _take(wave: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples from ``start``, tiling the wave when it runs out (repeat-padding)."""
    n = len(wave)
    if start + length <= n:
        return wave[start : start + length]
    return wave[(start + np.arange(length)) % n]


class AudioReader:
    """Reads utterances or crops of them from files or HDF5 packs.

    Open HDF5 packs are cached per process: after a fork (DataLoader workers) the cache
    is dropped and the packs reopen lazily, since HDF5 handles must not cross a fork.
    Pickling (spawned workers) also drops it.

    Example::

        reader = AudioReader(16000)
        crop = reader.read(utt, start=0, length=32000)  # float32[32000]
    """

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self._packs: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sample_rate"])

    def close(self) -> None:
        """Close the packs this process opened."""
        if self._pid == os.getpid():
            for f in self._packs.values():
                f.close()
        self._packs = {}

    def _pack(self, path: str) -> h5py.File:
        if self._pid != os.getpid():
            # forked: the parent's handles are not ours to use or close
            self._packs = {}
            self._pid = os.getpid()
        f = self._packs.get(path)
        if f is None:
            try:
                f = h5py.File(path, "r")
            except (OSError, ValueError) as exc:
                raise _fail(path, exc) from None
            self._packs[path] = f
        return f

    def read(self, utt: Utterance, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 samples ``[start, start + length)`` of ``utt`` (to its end when ``length`` is None).

        Reads only the needed frames. If the utterance is shorter than ``start + length``
        it is repeat-padded (tiled from ``start``; ``start`` wraps around as well). A file
        at the manifest's rate whose length is not the manifest's ``num_samples`` is refused
        naming the utterance: crops drawn for the listed length would wrap around silently.
        """
        if utt.sample_rate != self.sample_rate:
            raise UserError(
                f"utterance {utt.id!r} is listed at {utt.sample_rate} Hz but the reader runs "
                f"at {self.sample_rate} Hz; rebuild the manifest at {self.sample_rate} Hz"
            )
        if start < 0 or (length is not None and length < 0):
            raise ValueError(f"negative start/length ({start}, {length})")
        if utt.key is not None:
            wave, frames = self._read_pack(utt, start, length)
        else:
            wave, frames = self._read_file(utt.path, start, length)
        _check_finite(wave, f"audio {utt.path} of utterance {utt.id!r}")
        if frames is not None and frames != utt.num_samples:
            where = utt.path if utt.key is None else f"{utt.path}[{utt.key}]"
            raise UserError(
                f"utterance {utt.id!r}: the manifest lists {utt.num_samples} samples but "
                f"{where} holds {frames}; the audio changed since the manifest was made: "
                f"rebuild the manifest (and any cache dumped from it)"
            )
        return wave

    def _read_file(self, path: str, start: int,
                   length: int | None) -> tuple[np.ndarray, int | None]:
        """-> (samples, the file's length when it is at the reader's rate, else None)."""
        try:
            with soundfile.SoundFile(path) as f:
                rate, frames = f.samplerate, f.frames
                if rate == self.sample_rate and frames > 0:
                    if length is None:
                        length = max(frames - start, 0)
                    if start + length <= frames:
                        f.seek(start)
                        data = f.read(length, dtype="float32", always_2d=True)
                        if len(data) != length:
                            raise _fail(path, f"file ends after {start + len(data)} samples")
                        return np.ascontiguousarray(data[:, 0]), frames
        except (soundfile.SoundFileError, OSError, ValueError) as exc:
            raise _fail(path, exc) from None
        # other rate, or a crop that needs repeat-padding: whole file
        wave = self._crop(load_audio(path, self.sample_rate), path, start, length)
        return wave, frames if rate == self.sample_rate else None

    def _read_pack(self, utt: Utterance, start: int,
                   length: int | None) -> tuple[np.ndarray, int | None]:
        where = f"{utt.path}[{utt.key}]"
        f = self._pack(utt.path)
        try:
            ds = f[utt.key]
            rate = int(f.attrs["sample_rate"])
            n = ds.shape[0]
            if rate == self.sample_rate and n > 0:
                if length is None:
                    length = max(n - start, 0)
                if start + length <= n:
                    return ds[start : start + length].astype(np.float32) / 32768.0, n
            wave = ds[()].astype(np.float32) / 32768.0
        except KeyError:
            raise _fail(where, "no such dataset in the pack") from None
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(where, exc) from None
        if rate != self.sample_rate:
            _log_resample(where, rate, self.sample_rate)
            return self._crop(resample(wave, rate, self.sample_rate), where, start, length), None
        return self._crop(wave, where, start, length), n

    @staticmethod
    def _crop(wave: np.ndarray, where: str, start: int, length: int | None) -> np.ndarray:
        if len(wave) == 0:
            raise _fail(where, "audio is empty")
        if length is None:
            return np.ascontiguousarray(wave[start:])
        return np.ascontiguousarray(_take(wave, start % len(wave), length))


def write_pack(
    path: str | os.PathLike[str],
    items: Iterable[tuple[str, np.ndarray]],
    sample_rate: int,
) -> None:
    """Write utterances to an HDF5 pack: one contiguous int16 dataset per id, atomically.

    Float input in [-1, 1] is quantised like a 16-bit wav (``round(x * 32768)``, clipped),
    so a pack built from :func:`load_audio` of 16-bit files reads back bit-identically;
    int16 input is stored as is. Ids may contain ``/`` (they become HDF5 groups and read
    back under the same key). The file only appears under ``path`` once complete; root
    attribute ``sample_rate`` records the rate.

    Example::

        write_pack("train.h5", [("spk1/a.wav", np.zeros(16000, np.float32))], 16000)
        utt = Utterance("spk1/a.wav", "spk1", "train.h5", 16000, 16000, key="spk1/a.wav")
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["sample_rate"] = int(sample_rate)
        f.attrs["format"] = "entkd-audio-pack-1"
        for key, wave in items:
            if not key or key.startswith("/") or "//" in key or key.endswith("/"):
                raise UserError(f"{path}: utterance id {key!r} cannot be a pack key")
            if key in f:
                raise UserError(f"{path}: duplicate utterance id {key!r}")
            arr = np.asarray(wave)
            if arr.ndim != 1 or arr.size == 0:
                raise UserError(f"{path}: audio for {key!r} must be a non-empty 1-D array")
            if arr.dtype != np.int16:
                arr = np.clip(np.rint(arr.astype(np.float64) * 32768.0), -32768, 32767)
                arr = arr.astype(np.int16)
            try:
                f.create_dataset(key, data=arr)
            except (ValueError, TypeError) as exc:
                raise UserError(f"{path}: cannot store {key!r}: {exc}") from None
