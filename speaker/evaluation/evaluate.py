"""Verification evaluation of embedding models: embeddings -> cosine scores -> EER/minDCF.

Shared by teacher training (stage 1), student training and ``stage2_student.evaluate``.
Whole utterances are embedded without augmentation or dither, as in wespeaker;
utterances shorter than ``min_seconds`` (0.5 s) are repeat-padded to that length first
(the documented fallback: every architecture needs a few frames of context).

**Batching.** Utterances are embedded in batches of equal length, never padded: padding
would enter statistics pooling (mean and std over time) and change the embedding. They are
sorted by input length (fbank frames, or samples for a waveform model) and cut into runs
of at most ``batch_size`` whose shortest is at most ``max_trim`` (a fraction) shorter than
their longest; every input of a run is cut to the shortest by dropping its last frames
(fbank is computed on the whole utterance first, so its mean normalisation is the batch-1
one). ``max_trim=0`` (the default) buckets exact lengths and gives batch-1's embeddings up
to float rounding; a small ``max_trim`` makes fuller batches where lengths are spread out,
at the cost of those frames -- on weak demo students 2 % moved the EER by up to 1 point
over 732 trials (scripts/bench_eval.py), so it is off unless asked for.

Several models are evaluated in one pass (:func:`embed_utterances`): each batch is read
and featurised once and fed to every model that takes that input kind.

Example::

    result = evaluate_model(model, test_manifest, trials, AudioReader(16000))
    print(result.summary())   # {"eer": 0.081, "min_dcf_0.01": 0.52, "min_dcf_0.05": 0.31}
    results = evaluate_models({"teacher": t, "student": s}, test_manifest, trials, reader)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from speaker.evaluation.metrics import (
    compute_eer,
    compute_min_dcf,
    det_points,
    speaker_bootstrap_eer,
)
from speaker.evaluation.scoring import cosine_score
from speaker.features.fbank import fbank, num_frames
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest, Trial, Utterance

MIN_SECONDS = 0.5
BATCH_SIZE = 16  # CPU forward time per utterance stops falling beyond ~16 (docs/bench_eval.md)
MAX_TRIM = 0.0  # exact-length buckets: batch-1 embeddings (see the module doc)


def length_batches(lengths: list[int], batch_size: int, max_trim: float) -> list[list[int]]:
    """Indices of ``lengths`` in runs of at most ``batch_size``, shortest first, each run's
    shortest at least ``(1 - max_trim)`` times its longest (``max_trim=0``: equal lengths).

    Example::

        >>> length_batches([5, 3, 5, 4], batch_size=4, max_trim=0.0)
        [[1], [3], [0, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        run = batches[-1] if batches else None
        if run and len(run) < batch_size and lengths[run[0]] >= (1.0 - max_trim) * lengths[i]:
            run.append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class _Input:
    """How one input kind ("fbank" or "wave") is read, measured and cut."""

    kind: str
    reader: AudioReader
    min_samples: int

    def samples(self, utt: Utterance) -> int:
        return max(utt.num_samples, self.min_samples)

    def length(self, utt: Utterance) -> int:
        n = self.samples(utt)
        return num_frames(n, utt.sample_rate) if self.kind == "fbank" else n

    def batch(self, utts: list[Utterance]) -> torch.Tensor:
        """``[B, frames, 80]`` or ``[B, samples]``, each cut to the batch's shortest."""
        xs = []
        for utt in utts:
            short = utt.num_samples < self.min_samples
            wave = self.reader.read(utt, 0, self.min_samples if short else None)
            xs.append(fbank(wave, seed=None, sample_rate=utt.sample_rate)
                      if self.kind == "fbank" else torch.from_numpy(wave))
        n = min(x.shape[0] for x in xs)
        return torch.stack([x[:n] for x in xs])


@dataclass
class Embeddings:
    """Per model: {utterance id: float32 vector}, and the seconds its forward passes took."""

    vectors: dict[str, dict[str, np.ndarray]]
    forward_seconds: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def embed_utterances(
    models: Mapping[str, nn.Module],
    manifest: Manifest,
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    batch_size: int = BATCH_SIZE,
    max_trim: float = MAX_TRIM,
) -> Embeddings:
    """Embed every utterance of ``manifest`` whole with every model (see the module doc).

    Models with the same input kind share one reading and featurising of each batch.
    """
    if batch_size < 1 or not 0.0 <= max_trim < 1.0:
        raise ValueError(f"batch_size {batch_size} must be >= 1 and max_trim {max_trim} in [0, 1)")
    min_samples = int(round(min_seconds * reader.sample_rate))
    out = Embeddings({name: {} for name in models}, {name: 0.0 for name in models})
    by_kind: dict[str, list[str]] = {}
    for name, model in models.items():
        by_kind.setdefault(getattr(model, "input_kind", "fbank"), []).append(name)
    modes = {name: m.training for name, m in models.items()}
    for m in models.values():
        m.eval()
    try:
        for kind, names in by_kind.items():
            inputs = _Input(kind, reader, min_samples)
            utts = list(manifest)
            batches = length_batches([inputs.length(u) for u in utts], batch_size, max_trim)
            # a bar only where embedding takes a while (seconds per hundred utterances)
            bar = tqdm(total=len(utts), desc=f"embedding ({', '.join(names)})", unit="utt",
                       leave=False, disable=len(utts) < 100)
            for idx in batches:
                group = [utts[i] for i in idx]
                x = inputs.batch(group).to(device)
                for name in names:
                    t0 = time.perf_counter()
                    emb = models[name](x).float().cpu().numpy()
                    out.forward_seconds[name] += time.perf_counter() - t0
                    out.vectors[name].update((u.id, e) for u, e in zip(group, emb, strict=True))
                bar.update(len(group))
            bar.close()
    finally:
        for name, m in models.items():
            m.train(modes[name])
    return out


def extract_embeddings(
    model: nn.Module,
    manifest: Manifest,
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    batch_size: int = BATCH_SIZE,
    max_trim: float = MAX_TRIM,
) -> dict[str, np.ndarray]:
    """Embed every utterance of ``manifest`` whole; -> {utterance id: float32 vector}."""
    return embed_utterances({"model": model}, manifest, reader, device, min_seconds,
                            batch_size, max_trim).vectors["model"]


@dataclass(frozen=True)
class VerificationResult:
    """Trial scores and labels; ``speakers`` (enrolment and test speaker per trial) when
    known, for the bootstrap confidence interval of the EER."""

    scores: np.ndarray
    labels: np.ndarray
    speakers: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def eer(self) -> float:
        return compute_eer(self.scores, self.labels)[0]

    def summary(self) -> dict[str, float]:
        return {
            "eer": self.eer,
            "min_dcf_0.01": compute_min_dcf(self.scores, self.labels, p_target=0.01),
            "min_dcf_0.05": compute_min_dcf(self.scores, self.labels, p_target=0.05),
        }

    def eer_ci(self, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
        """95 % interval of the EER, bootstrapping test speakers (speaker.evaluation.metrics)."""
        if self.speakers is None:
            raise ValueError("the trials' speakers are unknown: score_trials(..., manifest)")
        return speaker_bootstrap_eer(self.scores, self.labels, *self.speakers,
                                     n_boot=n_boot, seed=seed)

    def det(self) -> tuple[np.ndarray, np.ndarray]:
        return det_points(self.scores, self.labels)


def score_trials(embeddings: Mapping[str, np.ndarray], trials: list[Trial],
                 manifest: Manifest | Mapping[str, str] | None = None, *,
                 cohort: np.ndarray | None = None, mean: np.ndarray | None = None,
                 top_n: int = 300) -> VerificationResult:
    """Cosine-score ``trials`` (AS-norm against ``cohort`` and ``mean`` subtracted when
    given: :func:`speaker.evaluation.scoring.cosine_score`); with ``manifest`` (or an
    ``{utterance id: speaker}`` mapping), also record each side's speaker."""
    scores = np.asarray(cosine_score(embeddings, trials, mean, cohort=cohort, top_n=top_n),
                        dtype=np.float64)
    labels = np.array([t.target for t in trials], dtype=bool)
    speakers = None
    if manifest is not None:
        spk = manifest if isinstance(manifest, Mapping) else {u.id: u.speaker for u in manifest}
        speakers = (np.array([spk[t.enroll] for t in trials]),
                    np.array([spk[t.test] for t in trials]))
    return VerificationResult(scores=scores, labels=labels, speakers=speakers)


def evaluate_models(
    models: Mapping[str, nn.Module],
    manifest: Manifest,
    trials: list[Trial],
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    batch_size: int = BATCH_SIZE,
    max_trim: float = MAX_TRIM,
) -> dict[str, VerificationResult]:
    """name -> verification result of each model, from one pass over the test audio."""
    emb = embed_utterances(models, manifest, reader, device, min_seconds, batch_size, max_trim)
    return {name: score_trials(emb.vectors[name], trials, manifest) for name in models}


def evaluate_model(
    model: nn.Module,
    manifest: Manifest,
    trials: list[Trial],
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    batch_size: int = BATCH_SIZE,
    max_trim: float = MAX_TRIM,
) -> VerificationResult:
    """The verification result of one model (:func:`evaluate_models` with one entry)."""
    return evaluate_models({"model": model}, manifest, trials, reader, device, min_seconds,
                           batch_size, max_trim)["model"]
