"""Verification evaluation of an embedding model: embeddings -> cosine scores -> EER/minDCF.

Shared by teacher training (stage 1), student training and ``stage2_student.evaluate``.
Whole utterances are embedded without augmentation or dither, as in wespeaker;
utterances shorter than ``min_seconds`` (0.5 s) are repeat-padded to that length first
(the documented fallback: every architecture needs a few frames of context).

Example::

    result = evaluate_model(model, test_manifest, trials, AudioReader(16000))
    print(result.summary())   # {"eer": 0.081, "min_dcf_0.01": 0.52, "min_dcf_0.05": 0.31}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from speaker.audio import AudioReader
from speaker.data import Manifest, Trial
from speaker.features import fbank
from speaker.metrics import compute_eer, compute_min_dcf, det_points
from speaker.scoring import cosine_score

MIN_SECONDS = 0.5


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    manifest: Manifest,
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    desc: str = "embedding",
) -> dict[str, np.ndarray]:
    """Embed every utterance of ``manifest`` whole; -> {utterance id: float32 vector}.

    An utterance shorter than ``min_seconds`` is repeat-padded to that length; ``desc``
    labels the progress bar (say which model when several are evaluated).
    """
    was_training = model.training
    model.eval()
    wants_wave = getattr(model, "input_kind", "fbank") == "wave"
    out: dict[str, np.ndarray] = {}
    # a bar only where embedding takes a while (seconds per hundred utterances on a CPU)
    for utt in tqdm(manifest, desc=desc, unit="utt", leave=False,
                    disable=len(manifest) < 100):
        min_samples = int(round(min_seconds * reader.sample_rate))
        wave = reader.read(utt, 0, None if utt.num_samples >= min_samples else min_samples)
        x = torch.from_numpy(wave) if wants_wave else fbank(wave, seed=None, sample_rate=utt.sample_rate)
        out[utt.id] = model(x.unsqueeze(0).to(device)).squeeze(0).float().cpu().numpy()
    model.train(was_training)
    return out


@dataclass(frozen=True)
class VerificationResult:
    scores: np.ndarray
    labels: np.ndarray

    @property
    def eer(self) -> float:
        return compute_eer(self.scores, self.labels)[0]

    def summary(self) -> dict[str, float]:
        return {
            "eer": self.eer,
            "min_dcf_0.01": compute_min_dcf(self.scores, self.labels, p_target=0.01),
            "min_dcf_0.05": compute_min_dcf(self.scores, self.labels, p_target=0.05),
        }

    def det(self) -> tuple[np.ndarray, np.ndarray]:
        return det_points(self.scores, self.labels)


def score_trials(embeddings: dict[str, np.ndarray], trials: list[Trial]) -> VerificationResult:
    scores = np.asarray(cosine_score(embeddings, trials), dtype=np.float64)
    labels = np.array([t.target for t in trials], dtype=bool)
    return VerificationResult(scores=scores, labels=labels)


def evaluate_model(
    model: nn.Module,
    manifest: Manifest,
    trials: list[Trial],
    reader: AudioReader,
    device: str = "cpu",
    min_seconds: float = MIN_SECONDS,
    desc: str = "embedding",
) -> VerificationResult:
    embeddings = extract_embeddings(model, manifest, reader, device, min_seconds, desc)
    return score_trials(embeddings, trials)
