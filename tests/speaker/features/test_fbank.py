"""Kaldi fbank with our own seeded dither: shape, normalisation, bit-exact replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speaker.features.fbank import fbank, fbank_batch, num_frames
from store.errors import UserError


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    return (0.2 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(16000)).astype(
        np.float32
    )


def test_shape_dtype_and_mean_normalisation(wave):
    feats = fbank(wave, seed=5)
    assert feats.shape == (num_frames(16000), 80) == (98, 80)
    assert feats.dtype == torch.float32 and feats.is_contiguous()
    assert feats.mean(dim=0).abs().max() < 1e-4
    assert fbank(wave, None, num_mel_bins=40).shape == (98, 40)


def test_matches_kaldi_without_dither(wave):
    ref = kaldi.fbank(
        torch.from_numpy(wave).unsqueeze(0) * 32768,
        num_mel_bins=80,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        sample_frequency=16000,
        window_type="hamming",
    )
    torch.testing.assert_close(fbank(wave, None), ref - ref.mean(0), rtol=0, atol=1e-5)


def test_replay_bit_identical_and_seeds_differ(wave):
    a = fbank(wave, 123)
    assert torch.equal(a, fbank(wave.copy(), 123))
    assert torch.equal(a, fbank(torch.from_numpy(wave), 123))
    assert not torch.equal(a, fbank(wave, 124))
    assert torch.equal(fbank(wave, None), fbank(wave, None))
    assert torch.equal(fbank(wave, 123, dither=0.0), fbank(wave, None))
    assert fbank(wave, 2**63 - 1).shape == a.shape  # the largest row seed works


def test_global_torch_rng_untouched(wave):
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    fbank(wave, 7)
    fbank_batch(np.stack([wave, wave]), [1, None])
    assert torch.equal(torch.rand(3), want)


def test_batch_equals_rows(wave):
    waves = np.stack([wave, wave[::-1].copy(), 0.5 * wave])
    seeds = [1, None, 3]
    batch = fbank_batch(waves, seeds)
    assert batch.shape == (3, 98, 80)
    for i, s in enumerate(seeds):
        assert torch.equal(batch[i], fbank(waves[i], s))
    with pytest.raises(ValueError):
        fbank_batch(waves, [1, 2])


def test_silence_is_finite_and_too_short_is_an_error():
    assert torch.isfinite(fbank(np.zeros(800, np.float32), None)).all()
    assert torch.isfinite(fbank(np.zeros(800, np.float32), 1)).all()
    with pytest.raises(UserError, match="shorter than one 25 ms frame"):
        fbank(np.zeros(399, np.float32), 1)
