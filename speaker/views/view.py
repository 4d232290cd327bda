"""Views: one augmented crop of one utterance, fully determined by (utterance, start, seed).

The teacher dump draws views with :func:`draw_view` and stores ``(utt, start, seed)`` per
row; training, the dump and stage 2 all rebuild the exact same samples with
:func:`render_view` (and the same fbank dither via :func:`speaker.features.fbank`).

The seed's stream is used in a fixed order: first the speed index (always drawn, even with
one speed), then one child seed for :func:`speaker.views.augment.augment`. Fbank dither uses the
separate stream ``SeedSequence([seed, 1])``.

Example::

    start, seed = draw_view(run_seed=0, row=17, num_samples=48000, crop_samples=32000)
    wave, speed_index = render_view(reader, utt, start, seed, 32000, cfg, bank)
    label = label_map.index(utt.speaker, cfg.speeds[speed_index])
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from speaker.io.audio import AudioReader
from speaker.io.manifest import Utterance
from speaker.views.augment import AugmentConfig, NoiseBank, augment
from store.errors import UserError

SEED_LIMIT = 2**63  # seeds fit int64 and uint64 columns alike


def draw_view(run_seed: int, row: int, num_samples: int, crop_samples: int) -> tuple[int, int]:
    """``(start, seed)`` of row ``row``: a pure function of ``(run_seed, row)`` and the lengths.

    ``seed`` is drawn first (so it does not depend on the lengths) and is < 2**63;
    ``start`` is uniform in ``[0, max(0, num_samples - crop_samples)]``.

    Example::

        >>> draw_view(0, 0, 48000, 32000) == draw_view(0, 0, 48000, 32000)
        True
    """
    if run_seed < 0 or row < 0:
        raise ValueError(f"run_seed and row must be >= 0, got {run_seed}, {row}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(run_seed), int(row)])))
    seed = int(rng.integers(0, SEED_LIMIT, dtype=np.int64))
    start = int(rng.integers(0, max(0, num_samples - crop_samples) + 1))
    return start, seed


ROW_ORDER_KEY = 0x0DE5
"""Spawn key of the row-order stream, so it never shares a stream with a row's draws."""


def row_order(num_rows: int, run_seed: int) -> np.ndarray:
    """Slot (utterance * views + view) written at each row: a seeded permutation.

    The dump writes views in this order rather than utterance by utterance, so that any
    run of consecutive rows -- a chunk, a shard, a rank's share -- mixes speakers and a
    student reading a few chunks at a time still draws near-iid batches (a manifest is
    usually sorted by speaker).

    Example::

        >>> sorted(row_order(5, 0)) == [0, 1, 2, 3, 4]
        True
    """
    rng = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(int(run_seed), spawn_key=(ROW_ORDER_KEY,))))
    return rng.permutation(num_rows)


def speed_perturb(wave: np.ndarray, speed: float, sample_rate: int, out_samples: int) -> np.ndarray:
    """Play ``wave`` ``speed`` times faster (pitch shifts too, like sox ``speed``), fixed length.

    Resamples from ``sample_rate * speed`` to ``sample_rate`` and cuts or wrap-pads the one
    or two samples of rounding to exactly ``out_samples``.

    Example::

        >>> speed_perturb(np.zeros(35200, np.float32), 1.1, 16000, 32000).shape
        (32000,)
    """
    orig = int(round(sample_rate * speed))
    if orig != sample_rate:
        t = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        wave = AF.resample(t, orig, sample_rate).numpy()
    if len(wave) >= out_samples:
        return np.ascontiguousarray(wave[:out_samples], dtype=np.float32)
    return np.pad(wave, (0, out_samples - len(wave)), mode="wrap").astype(np.float32)


def crop_checksum(samples: np.ndarray) -> int:
    """The cache's per-row audio check (``crop_checksum`` column, format version 2).

    crc32 (zlib) of the raw crop exactly as read -- float32 little-endian samples, before
    speed perturbation and augmentation -- masked to 31 bits, so it fits the store's int32
    column whose fill value -1 stays invalid. The dump records it and stage 2 recomputes it
    on every crop it replays: other audio under the same ids is refused, not trained on.

    Example::

        >>> crop_checksum(np.zeros(4, np.float32)) == crop_checksum(np.zeros(4, np.float32))
        True
    """
    return zlib.crc32(np.ascontiguousarray(samples, dtype="<f4")) & 0x7FFF_FFFF


@dataclass(frozen=True)
class RenderedView:
    """A rendered view: the augmented crop, its speed index and its raw crop's checksum."""

    wave: np.ndarray
    speed_index: int
    crop_checksum: int


def render_view(
    reader: AudioReader,
    utt: Utterance,
    start: int,
    seed: int,
    crop_samples: int,
    config: AugmentConfig,
    bank: NoiseBank,
) -> tuple[np.ndarray, int]:
    """Rebuild a view: ``(wave float32[crop_samples], speed_index)``, bit-identical on replay.

    See :func:`render_view_checked` (which also returns the raw crop's checksum).

    Example::

        wave, k = render_view(AudioReader(), utt, 0, 99, 32000, AugmentConfig(), bank)
    """
    view = render_view_checked(reader, utt, start, seed, crop_samples, config, bank)
    return view.wave, view.speed_index


def render_view_checked(
    reader: AudioReader,
    utt: Utterance,
    start: int,
    seed: int,
    crop_samples: int,
    config: AugmentConfig,
    bank: NoiseBank,
) -> RenderedView:
    """Rebuild a view with the :func:`crop_checksum` of the samples it read.

    Reads ``round(crop_samples * speed)`` samples at ``start`` (moved back just enough to
    stay inside the utterance when a faster speed needs more samples than were drawn for;
    utterances shorter than that are repeat-padded), speed-perturbs to ``crop_samples``,
    then augments with a child seed.

    Example::

        view = render_view_checked(AudioReader(), utt, 0, 99, 32000, AugmentConfig(), bank)
        view.wave, view.speed_index, view.crop_checksum
    """
    if bank.sample_rate != reader.sample_rate:
        raise UserError(
            f"noise bank is at {bank.sample_rate} Hz but audio is read at {reader.sample_rate} Hz"
        )
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    # a uniform draw, not rng.integers: integers(1) would consume nothing with one speed
    speed_index = min(int(rng.random() * len(config.speeds)), len(config.speeds) - 1)
    aug_seed = int(rng.integers(0, SEED_LIMIT, dtype=np.int64))
    speed = config.speeds[speed_index]
    read_len = int(round(crop_samples * speed)) if speed != 1.0 else crop_samples
    start = min(start, max(0, utt.num_samples - read_len))
    wave = reader.read(utt, start, read_len)
    checksum = crop_checksum(wave)
    if speed != 1.0:
        wave = speed_perturb(wave, speed, reader.sample_rate, crop_samples)
    return RenderedView(augment(wave, aug_seed, config, bank), speed_index, checksum)
