"""Trial scoring: cosine similarity with optional mean subtraction, and adaptive s-norm.

As in wespeaker: embeddings have the mean of the *training* embeddings subtracted (when one
is given) and are L2-normalised; a trial's score is the dot product of its two vectors.
AS-norm (adaptive symmetric score normalisation, wespeaker ``score_norm.py``) scores each
enrolment and test embedding against a cohort (e.g. per-speaker mean embeddings of the
training set, mean-subtracted like everything else), keeps the ``top_n`` highest cohort
scores of that embedding, and normalises::

    s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2

with ``mu``/``sigma`` the mean and (population) standard deviation of those top-n scores.
``top_n >= cohort size`` is plain s-norm.

Example::

    >>> emb = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 1.0])}
    >>> cosine_score(emb, [("a", "b")]).round(4)
    array([0.7071])
    >>> train_mean = np.array([0.5, 0.0])
    >>> cohort = np.random.default_rng(0).normal(size=(50, 2))
    >>> cosine_score(emb, [("a", "b")], mean=train_mean, cohort=cohort, top_n=10).shape
    (1,)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from store.errors import UserError

__all__ = ["as_norm", "cohort_stats", "cosine_score", "normalize"]

Embeddings = Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray]

_EPS = 1e-12  # an all-zero vector scores 0 against everything instead of NaN
_CHUNK = 2048  # cohort-score rows computed at once: bounds memory to _CHUNK x cohort size


def normalize(matrix: ArrayLike, mean: ArrayLike | None = None) -> np.ndarray:
    """Rows minus ``mean`` (if given), scaled to unit L2 norm; float64.

    Example::

        >>> normalize([[3.0, 4.0]])
        array([[0.6, 0.8]])
    """
    x = np.array(matrix, dtype=np.float64, ndmin=2)
    if x.ndim != 2:
        raise UserError(f"embeddings must be a 2-D matrix, got shape {x.shape}")
    if mean is not None:
        m = np.asarray(mean, dtype=np.float64).reshape(-1)
        if m.size != x.shape[1]:
            raise UserError(
                f"mean vector has {m.size} dimensions but the embeddings have {x.shape[1]}"
            )
        x = x - m
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _as_matrix(embeddings: Embeddings) -> tuple[dict[str, int], np.ndarray]:
    if isinstance(embeddings, Mapping):
        ids = list(embeddings)
        if not ids:
            raise UserError("no embeddings to score")
        rows = [np.asarray(embeddings[i], dtype=np.float64).reshape(-1) for i in ids]
        dims = {r.size for r in rows}
        if len(dims) != 1:
            raise UserError(f"embeddings have different dimensions {sorted(dims)}")
        matrix = np.stack(rows)
    else:
        ids, matrix = list(embeddings[0]), np.asarray(embeddings[1], dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise UserError(
                f"{len(ids)} ids but an embedding matrix of shape {matrix.shape}"
            )
    index = {u: i for i, u in enumerate(ids)}
    if len(index) != len(ids):
        raise UserError("duplicate utterance id among the embeddings")
    return index, matrix


def _trial_pairs(trials: Iterable[Any]) -> list[tuple[str, str]]:
    pairs = []
    for t in trials:
        if hasattr(t, "enroll"):
            pairs.append((t.enroll, t.test))
        else:
            enroll, test = t
            pairs.append((enroll, test))
    if not pairs:
        raise UserError("no trials to score")
    return pairs


def _lookup(index: dict[str, int], ids: Iterable[str]) -> np.ndarray:
    try:
        return np.array([index[u] for u in ids], dtype=np.int64)
    except KeyError as exc:
        raise UserError(f"trial names utterance {exc.args[0]!r}, which has no embedding") from None


def cohort_stats(cohort_scores: ArrayLike, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof=0) of each row's ``top_n`` highest scores.

    ``top_n`` above the row length uses the whole row (s-norm).

    Example::

        >>> cohort_stats([[0.1, 0.9, 0.5, 0.7]], top_n=2)
        (array([0.8]), array([0.1]))
    """
    s = np.array(cohort_scores, dtype=np.float64, ndmin=2)
    if s.ndim != 2 or s.shape[1] == 0:
        raise UserError(f"cohort scores must be a non-empty 2-D matrix, got shape {s.shape}")
    if top_n < 1:
        raise UserError(f"AS-norm top_n must be >= 1, got {top_n}")
    n = min(int(top_n), s.shape[1])
    # mean/std do not depend on order: partition (O(C)) instead of a full sort
    top = np.partition(s, s.shape[1] - n, axis=1)[:, s.shape[1] - n:]
    return top.mean(axis=1), top.std(axis=1)


def as_norm(
    scores: ArrayLike,
    enroll_cohort_scores: ArrayLike,
    test_cohort_scores: ArrayLike,
    top_n: int,
) -> np.ndarray:
    """Adaptive s-norm of trial ``scores`` given each trial's cohort scores.

    ``enroll_cohort_scores`` and ``test_cohort_scores`` are ``[n_trials, cohort]``, row
    ``i`` holding the scores of trial ``i``'s enrolment (test) embedding against the cohort.
    :func:`cosine_score` with ``cohort=`` computes the same thing per utterance instead of
    per trial, which is what to use for long trial lists.

    Example::

        >>> as_norm([0.5], [[0.1, 0.3]], [[0.0, 0.2]], top_n=2)
        array([3.5])
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.array(enroll_cohort_scores, dtype=np.float64, ndmin=2)
    t = np.array(test_cohort_scores, dtype=np.float64, ndmin=2)
    if e.shape[0] != s.size or t.shape[0] != s.size:
        raise UserError(
            f"{s.size} scores but {e.shape[0]} enrolment and {t.shape[0]} test cohort rows"
        )
    mu_e, sd_e = cohort_stats(e, top_n)
    mu_t, sd_t = cohort_stats(t, top_n)
    return _normalise(s, mu_e, sd_e, mu_t, sd_t)


def _normalise(
    s: np.ndarray, mu_e: np.ndarray, sd_e: np.ndarray, mu_t: np.ndarray, sd_t: np.ndarray
) -> np.ndarray:
    # a cohort whose top-n scores are all equal has sd 0: keep the result finite
    return 0.5 * ((s - mu_e) / np.maximum(sd_e, _EPS) + (s - mu_t) / np.maximum(sd_t, _EPS))


def cosine_score(
    embeddings: Embeddings,
    trials: Iterable[Any],
    mean: ArrayLike | None = None,
    *,
    cohort: ArrayLike | None = None,
    top_n: int = 300,
) -> np.ndarray:
    """Cosine score of every trial, in trial order; AS-norm on top when ``cohort`` is given.

    ``embeddings`` is ``{utterance id: vector}`` or ``(ids, matrix)``; ``trials`` holds
    :class:`speaker.io.manifest.Trial` objects or ``(enroll, test)`` pairs; ``mean`` (the mean
    training embedding) is subtracted from every embedding, the cohort's included, before
    L2 normalisation. An id without an embedding is a :class:`UserError`.

    Example::

        >>> cosine_score((["a", "b"], np.eye(2)), [("a", "b"), ("a", "a")])
        array([0., 1.])
    """
    index, matrix = _as_matrix(embeddings)
    pairs = _trial_pairs(trials)
    enroll = _lookup(index, (p[0] for p in pairs))
    test = _lookup(index, (p[1] for p in pairs))
    x = normalize(matrix, mean)
    scores = np.einsum("ij,ij->i", x[enroll], x[test])
    if cohort is None:
        return scores
    c = normalize(cohort, mean)
    if c.shape[1] != x.shape[1]:
        raise UserError(
            f"cohort embeddings have {c.shape[1]} dimensions but the trial embeddings "
            f"have {x.shape[1]}"
        )
    # stats once per utterance that occurs in a trial, not once per trial
    used = np.unique(np.concatenate([enroll, test]))
    mu = np.zeros(len(x))
    sd = np.zeros(len(x))
    for start in range(0, used.size, _CHUNK):
        rows = used[start:start + _CHUNK]
        mu[rows], sd[rows] = cohort_stats(x[rows] @ c.T, top_n)
    return _normalise(scores, mu[enroll], sd[enroll], mu[test], sd[test])
