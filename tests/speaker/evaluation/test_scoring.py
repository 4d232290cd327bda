"""Cosine scoring and AS-norm against the formulas written out per trial."""

from __future__ import annotations

import numpy as np
import pytest

from speaker.evaluation.scoring import as_norm, cohort_stats, cosine_score, normalize
from speaker.io.manifest import Trial
from store.errors import UserError


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    ids = [f"spk{i // 3}/v/{i:05d}.wav" for i in range(12)]
    emb = {u: rng.normal(size=16) + 3.0 for u in ids}  # offset: mean subtraction matters
    train_mean = rng.normal(size=16) + 3.0
    cohort = rng.normal(size=(40, 16)) + 3.0
    trials = [Trial(bool(rng.random() < 0.5), ids[rng.integers(12)], ids[rng.integers(12)])
              for _ in range(50)]
    return emb, train_mean, cohort, trials


def test_cosine_score_is_the_formula(setup):
    emb, mean, _, trials = setup
    got = cosine_score(emb, trials)
    np.testing.assert_allclose(got, [_cos(emb[t.enroll], emb[t.test]) for t in trials])
    got = cosine_score(emb, trials, mean=mean)
    want = [_cos(emb[t.enroll] - mean, emb[t.test] - mean) for t in trials]
    np.testing.assert_allclose(got, want)
    # (ids, matrix) input and (enroll, test) pairs give the same scores
    ids = list(emb)
    pairs = [(t.enroll, t.test) for t in trials]
    np.testing.assert_allclose(cosine_score((ids, np.stack([emb[u] for u in ids])), pairs,
                                            mean=mean), want)


def _direct_as_norm(emb, mean, cohort, trial, top_n):
    c = [v - mean for v in cohort]

    def stats(u):
        top = sorted((_cos(emb[u] - mean, v) for v in c), reverse=True)[:top_n]
        return np.mean(top), np.std(top)

    s = _cos(emb[trial.enroll] - mean, emb[trial.test] - mean)
    (mu_e, sd_e), (mu_t, sd_t) = stats(trial.enroll), stats(trial.test)
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


@pytest.mark.parametrize("top_n", [5, 40, 1000])
def test_as_norm_is_the_formula(setup, top_n):
    emb, mean, cohort, trials = setup
    want = [_direct_as_norm(emb, mean, cohort, t, top_n) for t in trials]
    got = cosine_score(emb, trials, mean=mean, cohort=cohort, top_n=top_n)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # the per-trial matrix form agrees
    c = normalize(cohort, mean)
    e = normalize(np.stack([emb[t.enroll] for t in trials]), mean) @ c.T
    t = normalize(np.stack([emb[t.test] for t in trials]), mean) @ c.T
    np.testing.assert_allclose(as_norm(cosine_score(emb, trials, mean=mean), e, t, top_n),
                               want, rtol=1e-10)


def test_cohort_stats_top_n():
    mu, sd = cohort_stats([[0.1, 0.9, 0.5, 0.7], [1.0, 2.0, 3.0, 4.0]], top_n=3)
    np.testing.assert_allclose(mu, [0.7, 3.0])
    np.testing.assert_allclose(sd, [np.std([0.9, 0.5, 0.7]), np.std([2.0, 3.0, 4.0])])
    with pytest.raises(UserError, match="top_n"):
        cohort_stats([[0.1]], top_n=0)


def test_bad_input_is_a_user_error(setup):
    emb, mean, cohort, _ = setup
    with pytest.raises(UserError, match="nope.wav"):
        cosine_score(emb, [("nope.wav", next(iter(emb)))])
    with pytest.raises(UserError, match="dimensions"):
        cosine_score(emb, [(next(iter(emb)),) * 2], mean=mean[:3])
    with pytest.raises(UserError, match="dimensions"):
        cosine_score(emb, [(next(iter(emb)),) * 2], cohort=cohort[:, :3])
    with pytest.raises(UserError, match="no trials"):
        cosine_score(emb, [])
    with pytest.raises(UserError, match="scores but"):
        as_norm([0.1, 0.2], [[0.1, 0.2]], [[0.1, 0.2]], top_n=2)
