"""evaluate_model against scores and metrics computed directly from known embeddings;
batched embedding against batch 1 (the same vectors for exact-length buckets, the same EER
with trimmed ones on a trained model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from speaker.evaluation.evaluate import (
    embed_utterances,
    evaluate_model,
    evaluate_models,
    extract_embeddings,
    length_batches,
    score_trials,
)
from speaker.evaluation.metrics import compute_eer, compute_min_dcf
from speaker.features.fbank import fbank
from speaker.io.audio import AudioReader, load_audio
from speaker.io.manifest import Manifest, Trial, Utterance, read_trials


class MeanFbank(nn.Module):
    """Embedding = time-average of the fbank, a known function of the audio."""

    input_kind = "fbank"

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        assert feats.ndim == 3 and feats.shape[2] == 80
        # mean normalisation makes the plain mean 0: use the per-band spread instead
        return feats.std(dim=1)


class WaveStats(nn.Module):
    input_kind = "wave"

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        assert wave.ndim == 2
        frames = wave[:, : wave.shape[1] // 160 * 160].reshape(wave.shape[0], -1, 160)
        return torch.log(frames.pow(2).mean(-1) + 1e-6)[:, :20]  # first 20 frame energies


@pytest.fixture(scope="module")
def test_set(toy_corpus: Path):
    manifest = Manifest.read(toy_corpus / "test" / "manifest.jsonl")
    return manifest, read_trials(toy_corpus / "test" / "trials.txt", set(manifest.ids))


def direct_scores(embed, manifest: Manifest, trials) -> np.ndarray:
    emb = {}
    for u in manifest:
        v = np.asarray(embed(load_audio(u.path, 16000)), dtype=np.float64)
        emb[u.id] = v / np.linalg.norm(v)
    return np.array([emb[t.enroll] @ emb[t.test] for t in trials])


def test_fbank_model_matches_direct_computation(test_set):
    manifest, trials = test_set
    labels = np.array([t.target for t in trials])
    assert labels.any() and not labels.all()
    model = MeanFbank().train()
    result = evaluate_model(model, manifest, trials, AudioReader(16000))
    assert model.training  # mode restored
    expect = direct_scores(lambda w: fbank(w, seed=None).std(0).numpy(), manifest, trials)
    np.testing.assert_allclose(result.scores, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.labels, labels)
    eer = compute_eer(expect, labels)[0]
    assert result.eer == pytest.approx(eer, abs=1e-6)
    summary = result.summary()
    assert summary["eer"] == pytest.approx(eer, abs=1e-6)
    assert summary["min_dcf_0.01"] == pytest.approx(compute_min_dcf(expect, labels, 0.01))
    assert summary["min_dcf_0.05"] == pytest.approx(compute_min_dcf(expect, labels, 0.05))
    p_miss, p_fa = result.det()
    assert len(p_miss) == len(p_fa) > 2


def test_wave_model_gets_the_waveform(test_set):
    manifest, trials = test_set
    result = evaluate_model(WaveStats(), manifest, trials, AudioReader(16000), batch_size=1)

    def embed(w: np.ndarray) -> np.ndarray:
        frames = w[: len(w) // 160 * 160].astype(np.float64).reshape(-1, 160)
        return np.log((frames**2).mean(-1) + 1e-6)[:20]

    np.testing.assert_allclose(result.scores, direct_scores(embed, manifest, trials), rtol=1e-4,
                               atol=1e-5)


def test_score_trials_is_cosine():
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 1.0]), "c": np.array([-2.0, 0.0])}
    trials = [Trial(True, "a", "b"), Trial(False, "a", "c"), Trial(True, "b", "b")]
    result = score_trials(emb, trials)
    np.testing.assert_allclose(result.scores, [np.sqrt(0.5), -1.0, 1.0])
    assert result.labels.tolist() == [True, False, True]


def test_short_utterances_are_repeat_padded(tmp_path: Path):
    """A 0.1-s utterance (8 frames) is tiled to 0.5 s before embedding; longer ones are not."""
    rng = np.random.default_rng(0)
    short = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    soundfile.write(tmp_path / "s.wav", short, 16000, subtype="PCM_16")
    soundfile.write(tmp_path / "l.wav", np.tile(short, 6), 16000, subtype="PCM_16")
    manifest = Manifest([Utterance("s", "x", str(tmp_path / "s.wav"), 1600, 16000),
                         Utterance("l", "x", str(tmp_path / "l.wav"), 9600, 16000)])
    seen = []

    class Frames(nn.Module):
        def forward(self, feats):
            seen.append(feats.shape[1])
            return feats.mean(1)

    extract_embeddings(Frames(), manifest, AudioReader(16000))
    assert seen == [48, 58]  # 0.5 s and 0.6 s at 25/10 ms
    seen.clear()
    extract_embeddings(Frames(), manifest, AudioReader(16000), min_seconds=0.0)
    assert seen == [8, 58]


@pytest.mark.parametrize("lengths,batch_size,max_trim", [
    ([5, 3, 5, 4, 3, 3], 2, 0.0), ([100, 99, 98, 97, 50, 51], 8, 0.02), ([7] * 9, 4, 0.0),
    (list(range(200, 100, -3)), 5, 0.05), ([], 4, 0.0),
])
def test_length_batches_cover_each_index_once_within_the_trim(lengths, batch_size, max_trim):
    batches = length_batches(lengths, batch_size, max_trim)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        ls = [lengths[i] for i in b]
        assert 1 <= len(b) <= batch_size and ls == sorted(ls)
        assert min(ls) >= (1 - max_trim) * max(ls)
    # greedy: a run stops only when full or when the next length would exceed the trim
    for b, nxt in zip(batches, batches[1:], strict=False):
        if len(b) < batch_size:
            assert lengths[b[0]] < (1 - max_trim) * lengths[nxt[0]]


@pytest.fixture(scope="module")
def cut_test_set(test_set, tmp_path_factory):
    """The test utterances cut to 1.2 s plus 0, 1 or 2 frames: batches of equal length hold
    several utterances, and a 2 % trim merges the three lengths."""
    manifest, trials = test_set
    root = tmp_path_factory.mktemp("cut")
    utts = []
    for i, u in enumerate(manifest):
        n = 19200 + 160 * (i % 3)
        path = root / f"{i}.wav"
        soundfile.write(path, load_audio(u.path, 16000)[:n], 16000, subtype="PCM_16")
        utts.append(Utterance(u.id, u.speaker, str(path), n, 16000))
    return Manifest(utts), trials


@pytest.fixture(scope="module")
def trained_teacher(student_cache):
    """The 1-epoch x-vector teacher of the stage-2 test cache (a small trained model)."""
    from speaker.models.checkpoint import load_checkpoint

    return load_checkpoint(student_cache.teacher).model


def test_exact_length_batches_give_the_batch1_embeddings(trained_teacher, cut_test_set,
                                                         one_torch_thread):
    manifest, _ = cut_test_set
    reader = AudioReader(16000)
    one = extract_embeddings(trained_teacher, manifest, reader, batch_size=1)
    batched = embed_utterances({"t": trained_teacher, "w": WaveStats()}, manifest, reader,
                               batch_size=16, max_trim=0.0)
    assert batched.vectors["t"].keys() == one.keys() and set(batched.forward_seconds) == {"t", "w"}
    for utt, vec in one.items():
        np.testing.assert_allclose(batched.vectors["t"][utt], vec, rtol=1e-4, atol=1e-5)
    assert len(length_batches([u.num_samples for u in manifest], 16, 0.0)) == 3


def test_trimmed_batches_keep_the_batch1_eer(trained_teacher, cut_test_set, one_torch_thread):
    """Batches trimmed up to 2 % of their frames: EER within 0.05 points of batch 1."""
    manifest, trials = cut_test_set
    reader = AudioReader(16000)
    base = evaluate_model(trained_teacher, manifest, trials, reader, batch_size=1)
    for max_trim in (0.0, 0.02):
        got = evaluate_models({"t": trained_teacher}, manifest, trials, reader, batch_size=16,
                              max_trim=max_trim)["t"]
        assert abs(got.eer - base.eer) <= 0.0005, max_trim
        np.testing.assert_allclose(got.scores, base.scores, atol=0.02)
    assert len(length_batches([u.num_samples for u in manifest], 16, 0.02)) == 1


def test_speakers_of_trials_give_a_bootstrap_interval(trained_teacher, test_set):
    manifest, trials = test_set
    result = evaluate_model(trained_teacher, manifest, trials, AudioReader(16000))
    spk = {u.id: u.speaker for u in manifest}
    assert result.speakers is not None
    assert result.speakers[0].tolist() == [spk[t.enroll] for t in trials]
    assert result.speakers[1].tolist() == [spk[t.test] for t in trials]
    lo, hi = result.eer_ci(n_boot=200)
    assert 0.0 <= lo <= hi <= 1.0
