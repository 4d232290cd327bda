"""80-dim Kaldi log-mel filterbanks with per-utterance mean normalisation.

Same settings as wespeaker's ``compute_fbank`` (25 ms Hamming frames every 10 ms, no energy,
input scaled to the int16 range) followed by cepstral mean normalisation over time.

Dither is the one random part of Kaldi fbank. We add it ourselves, from
``Generator(PCG64(SeedSequence([seed, 1])))``, and call ``kaldi.fbank`` with ``dither=0``:
the global torch RNG is never touched, so a view's features replay bit-exactly from its row
seed. ``seed=None`` means no dither (evaluation).

Example::

    >>> wave = np.zeros(32000, np.float32)
    >>> feats = fbank(wave, seed=123)
    >>> feats.shape, feats.dtype
    (torch.Size([198, 80]), torch.float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from store.errors import UserError
from store.schema import FeatureInfo

FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
NUM_MEL_BINS = 80
# Every ``kaldi.fbank`` option :func:`fbank` sets besides the mel count and the rate: the one
# definition, also written beside exported models (stage2_student.export) so users can
# reproduce the input. Dither is added by :func:`fbank` itself, hence 0 here.
KALDI_OPTIONS = {"frame_length": FRAME_LENGTH_MS, "frame_shift": FRAME_SHIFT_MS, "dither": 0.0,
                 "energy_floor": 0.0, "window_type": "hamming", "use_energy": False}


def num_frames(num_samples: int, sample_rate: int = 16000) -> int:
    """Frames :func:`fbank` yields for ``num_samples`` (Kaldi ``snip_edges``).

    Example::

        >>> num_frames(32000)
        198
    """
    win = int(sample_rate * FRAME_LENGTH_MS / 1000)
    hop = int(sample_rate * FRAME_SHIFT_MS / 1000)
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def feature_info(num_samples: int, sample_rate: int = 16000) -> FeatureInfo:
    """What :func:`fbank` (the students' front-end, default settings) gives for a crop of
    ``num_samples``: recorded with stored features and compared by stage 2 before it uses
    them.

    Example::

        >>> feature_info(32000).frames
        198
    """
    return FeatureInfo(frames=num_frames(num_samples, sample_rate), mel_bins=NUM_MEL_BINS,
                       frame_length_ms=FRAME_LENGTH_MS, frame_shift_ms=FRAME_SHIFT_MS,
                       dither=1.0, window="hamming", normalization="utterance_mean")


def dither_noise(seed: int, num_samples: int) -> np.ndarray:
    """Standard-normal dither noise of a view, from its own stream ``SeedSequence([seed, 1])``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 1])))
    return rng.standard_normal(num_samples, dtype=np.float32)


def fbank(
    wave: np.ndarray | torch.Tensor,
    seed: int | None,
    sample_rate: int = 16000,
    num_mel_bins: int = NUM_MEL_BINS,
    dither: float = 1.0,
) -> torch.Tensor:
    """Mean-normalised log-mel filterbank ``[frames, num_mel_bins]`` float32 of a 1-D wave.

    ``wave`` is float in [-1, 1]; it is scaled by 2**15 like wespeaker. ``dither`` is the
    noise std in int16 units, drawn from ``seed`` (``None``: no dither).

    Example::

        >>> fbank(torch.zeros(16000), seed=None).shape
        torch.Size([98, 80])
    """
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
    n = x.numel()
    if num_frames(n, sample_rate) == 0:
        raise UserError(
            f"wave of {n} samples is shorter than one {FRAME_LENGTH_MS:g} ms frame at {sample_rate} Hz"
        )
    x = x * 32768.0
    if seed is not None and dither != 0.0:
        x = x + torch.from_numpy(dither_noise(seed, n)) * dither
    feats = kaldi.fbank(
        x.unsqueeze(0),
        num_mel_bins=num_mel_bins,
        sample_frequency=sample_rate,
        **KALDI_OPTIONS,
    )
    return (feats - feats.mean(dim=0, keepdim=True)).contiguous()


def fbank_batch(
    waves: np.ndarray | torch.Tensor,
    seeds: Sequence[int | None],
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    dither: float = 1.0,
) -> torch.Tensor:
    """:func:`fbank` of each row of ``waves [B, n]`` -> ``[B, frames, num_mel_bins]``.

    Row ``i`` equals ``fbank(waves[i], seeds[i])`` exactly.

    Example::

        >>> fbank_batch(np.zeros((2, 32000), np.float32), [1, 2]).shape
        torch.Size([2, 198, 80])
    """
    w = torch.as_tensor(waves, dtype=torch.float32)
    if w.ndim != 2 or w.shape[0] != len(seeds):
        raise ValueError(
            f"waves {tuple(w.shape)} need shape [B, n] with B = len(seeds) = {len(seeds)}"
        )
    return torch.stack(
        [fbank(w[i], s, sample_rate, num_mel_bins, dither) for i, s in enumerate(seeds)]
    )
