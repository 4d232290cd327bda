"""Realistic synthetic teacher rows, for benchmarks and tests (no teacher needed).

Rows look like an AAM-softmax teacher's: logits are ``scale * cos`` with non-target
cosines ~ N(m, sd) per row (m, sd vary by row) and the target cosine ~ N(0.6, 0.15). The
top-k non-target logits are drawn as the exact top order statistics of ``C - 1`` normals
(via uniform spacings, not by sorting C values), and ``tail_lse`` is the expected
logsumexp of the remaining normals truncated below the k-th, so compression ratios and
probability statistics are honest. Rows are a pure function of ``(seed, start)``.

Example::

    spec = synthetic_spec(num_rows=100_000)
    block = synthetic_rows(spec, 0, 4096, seed=1)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from store.rows import RowBlock, features_checksum
from store.schema import FeatureInfo, StoreSpec, TeacherInfo

_SQRT2 = math.sqrt(2.0)


@lru_cache(maxsize=1)
def _log_cdf_table() -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(-37.0, 12.0, 40_001)
    log_cdf = np.array([math.log(0.5 * math.erfc(-x / _SQRT2)) for x in grid])
    return grid, log_cdf


def _log_cdf(x: np.ndarray) -> np.ndarray:
    grid, log_cdf = _log_cdf_table()
    return np.interp(x, grid, log_cdf)


def _inverse_sf_from_log(log_sf: np.ndarray) -> np.ndarray:
    """x with log P(Z > x) = log_sf, for standard normal Z (by symmetry of the CDF table)."""
    grid, log_cdf = _log_cdf_table()
    # P(Z > x) = P(Z < -x): invert the (increasing) log CDF, then negate.
    return -np.interp(log_sf, log_cdf, grid)


def synthetic_spec(
    num_rows: int,
    *,
    num_classes: int = 5994,
    k: int = 32,
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0),
    num_utterances: int = 0,
    chunk_rows: int = 4096,
    shard_rows: int = 65536,
    embedding_dim: int = 0,
    features: FeatureInfo | None = None,
    tail_draws: int = 0,
) -> StoreSpec:
    """A spec shaped like a VoxCeleb2 cache (ids ``utt000000...`` when ``num_utterances``;
    ``tail_draws`` > 0: with a synthetic sampled tail)."""
    ids = tuple(f"utt{i:07d}" for i in range(num_utterances))
    return StoreSpec(
        num_rows=num_rows,
        k=k,
        temperatures=temperatures,
        num_classes=num_classes,
        crop_samples=32_000,
        manifest_hash="synthetic-manifest",
        manifest_ids=ids,
        teacher=TeacherInfo("synthetic", "0" * 64, num_classes, 32.0, 0.2),
        embedding_dim=embedding_dim,
        chunk_rows=chunk_rows,
        shard_rows=shard_rows,
        augment={"kind": "synthetic"},
        augment_hash="synthetic-augment",
        features=features,
        tail_draws=tail_draws,
        tail_sampler="synthetic" if tail_draws else "",
    )


def _synthetic_tail(rng: np.random.Generator, spec: StoreSpec, label: np.ndarray,
                    topk_index: np.ndarray, topk_logit: np.ndarray,
                    tail: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid sampled-tail columns: per row and temperature M ascending classes outside the
    label and top-k, logits below the k-th kept one and below ``T * tail_lse``."""
    n, n_t, m = len(label), len(spec.temperatures), spec.tail_draws
    if spec.num_classes - 1 == spec.k:
        return (np.full((n, n_t, m), -1, spec.topk_index_dtype),
                np.full((n, n_t, m), -np.inf, np.float16))
    index = np.empty((n, n_t, m), spec.topk_index_dtype)
    for i in range(n):
        free = np.setdiff1d(np.arange(spec.num_classes), [label[i], *topk_index[i]])
        index[i] = np.sort(rng.choice(free, (n_t, m)), axis=1)
    temps = np.asarray(spec.temperatures, np.float64)[None, :, None]
    ceiling = np.minimum(topk_logit.astype(np.float64).min(1)[:, None, None],
                         temps * tail[:, :, None]) - 0.05
    logit = ceiling - np.abs(rng.normal(0.0, 3.0, (n, n_t, m)))
    return index, logit.astype(np.float16)


def synthetic_rows(spec: StoreSpec, start: int, stop: int, seed: int = 0) -> RowBlock:
    """Valid rows ``start..stop-1`` of ``spec``; the same arguments give the same rows."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, start])))
    n, k, classes = stop - start, spec.k, spec.num_classes
    rows = np.arange(start, stop, dtype=np.int64)
    n_utts = len(spec.manifest_ids) or max(1, spec.num_rows // 5)
    # Dumps walk the manifest in order (E views per utterance), speakers grouped together.
    utt = (rows * n_utts) // spec.num_rows
    label = (utt * classes) // n_utts
    scale = spec.teacher.scale

    # Top-k of n iid uniforms: U_(n) = B1^(1/n), U_(n-1) = U_(n) * B2^(1/(n-1)), ...
    n_nontarget = classes - 1
    log_b = np.log(rng.random((n, k)))
    log_u = np.cumsum(log_b / (n_nontarget - np.arange(k)), axis=1)
    x = _inverse_sf_from_log(np.log(-np.expm1(log_u)))
    mean = rng.normal(0.0, 0.03, (n, 1))
    sd = rng.uniform(0.07, 0.12, (n, 1))
    cos_k = mean + sd * x
    topk_logit = (scale * cos_k).astype(np.float16)

    # Distinct non-target classes: label + increasing offsets (mod C), in random order.
    step = n_nontarget // k
    offsets = np.cumsum(rng.integers(1, step + 1, (n, k)), axis=1)
    topk_index = rng.permuted((label[:, None] + offsets) % classes, axis=1)

    n_tail = n_nontarget - k
    temps = np.asarray(spec.temperatures, dtype=np.float64)[None, :]
    if n_tail == 0:
        tail = np.full((n, len(spec.temperatures)), -np.inf)
    else:
        # E[exp(a z) | z < c] for z ~ N(m, sd): exp(a m + a^2 sd^2 / 2) Phi(b - a sd) / Phi(b).
        a = scale / temps
        b = (cos_k[:, -1:] - mean) / sd
        log_mean = a * mean + 0.5 * (a * sd) ** 2 + _log_cdf(b - a * sd) - _log_cdf(b)
        tail = math.log(n_tail) + log_mean

    target_cos = np.clip(rng.normal(0.6, 0.15, n), -1.0, 1.0)
    embedding = None
    if spec.embedding_dim:
        embedding = rng.normal(0.0, 1.0, (n, spec.embedding_dim)).astype(np.float16)
    # Drawn last, so the other columns are those a version-1 store got from the same seed.
    checksum = rng.integers(0, 2**31, n, dtype=np.int32) if spec.has_crop_checksum else None
    features = None
    if spec.features is not None:
        shape = (n, spec.features.frames, spec.features.mel_bins)
        features = rng.normal(0.0, 3.0, shape).astype(np.float16)
    start = rng.integers(0, 6 * spec.sample_rate, n, dtype=np.int64)
    seed = rng.integers(0, 2**63, n, dtype=np.uint64)
    tail_index, tail_logit = _synthetic_tail(rng, spec, label, topk_index, topk_logit, tail) \
        if spec.has_tail_samples else (None, None)
    return RowBlock(
        utt=utt.astype(np.int32),
        start=start,
        seed=seed,
        label=label.astype(np.int32),
        target_logit=(scale * target_cos).astype(np.float32),
        topk_index=topk_index.astype(spec.topk_index_dtype),
        topk_logit=topk_logit,
        tail_lse=tail.astype(np.float32),
        embedding=embedding,
        crop_checksum=checksum,
        features=features,
        features_checksum=features_checksum(utt, start, seed, features)
        if spec.has_features_checksum else None,
        tail_index=tail_index,
        tail_logit=tail_logit,
    )
