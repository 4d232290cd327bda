"""Verification metrics: EER, normalised minDCF, DET points and DET plots.

Convention: a trial is *accepted* when ``score >= threshold``. Sweeping the threshold over
every distinct score (plus ``+inf``, which rejects everything) gives the finite set of
operating points; tied scores move together, so no operating point splits a tie.

- :func:`det_points` returns those operating points as ``(p_fa, p_miss)`` in order of
  increasing threshold (``p_fa`` falls from 1 to 0, ``p_miss`` rises from 0 to 1).
- :func:`compute_eer` is exact for that curve: the point where the straight line between the
  two operating points that bracket ``p_miss == p_fa`` crosses the diagonal (the same
  interpolation as NIST's ``compute_eer`` used by wespeaker, without its score binning).
- :func:`compute_min_dcf` is the NIST SRE normalised minimum detection cost
  ``min_t (c_miss p_miss(t) p_target + c_fa p_fa(t) (1 - p_target)) /
  min(c_miss p_target, c_fa (1 - p_target))``, so accepting or rejecting everything costs 1.

Example::

    >>> scores = [0.9, 0.8, 0.3, 0.1]; labels = [1, 0, 1, 0]
    >>> compute_eer(scores, labels)
    (0.5, 0.8)
    >>> compute_min_dcf(scores, labels, p_target=0.05)
    0.5
    >>> plot_det({"model": det_points(scores, labels)}, "det.png")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from store.atomic import atomic_path
from store.errors import UserError

__all__ = ["bootstrap_eers", "compute_eer", "compute_min_dcf", "det_points", "plot_det",
           "probit", "speaker_bootstrap_eer"]


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise UserError(f"{s.size} scores but {y.size} labels: one label per trial is needed")
    if not np.all(np.isfinite(s)):
        raise UserError(f"{int(np.sum(~np.isfinite(s)))} trial score(s) are NaN or infinite")
    if y.dtype != bool:
        if not np.all((y == 0) | (y == 1)):
            raise UserError("labels must be 1/0 or True/False (target/non-target)")
        y = y.astype(bool)
    n_tgt = int(y.sum())
    if n_tgt == 0 or n_tgt == y.size:
        kind = "target" if n_tgt == 0 else "non-target"
        raise UserError(
            f"the trial list has no {kind} trials ({y.size} trials): EER/minDCF need both "
            "target and non-target trials"
        )
    return s, y


def _operating_points(
    scores: ArrayLike, labels: ArrayLike, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, p_miss, p_fa) for thresholds = sorted distinct scores, then ``+inf``.

    ``weights`` (non-negative, one per trial) counts each trial that many times: integer
    weights give exactly the operating points of the trial list with repeated trials.
    """
    s, y = _check(scores, labels)
    w = np.ones(s.size) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    # the last position of each run of equal scores: a threshold just above it moves the
    # whole tie at once
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    tgt_below = np.cumsum(w * y)[last]  # target weight with score <= s[last]
    imp_below = np.cumsum(w * ~y)[last]
    n_tgt, n_imp = tgt_below[-1], imp_below[-1]
    # threshold u_j (the j-th distinct score) rejects every score < u_j: the runs before j
    tgt_rejected = np.concatenate(([0], tgt_below))
    imp_rejected = np.concatenate(([0], imp_below))
    thresholds = np.append(s[last], np.inf)
    p_miss = tgt_rejected / n_tgt
    p_fa = (n_imp - imp_rejected) / n_imp
    return thresholds, p_miss, p_fa


def det_points(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Every operating point as ``(p_fa, p_miss)``, ordered by increasing threshold.

    The first point accepts everything (``p_fa = 1, p_miss = 0``), the last rejects
    everything (``p_fa = 0, p_miss = 1``).

    Example::

        >>> det_points([0.2, 0.7], [0, 1])
        (array([1., 0., 0.]), array([0., 0., 1.]))
    """
    _, p_miss, p_fa = _operating_points(scores, labels)
    return p_fa, p_miss


def compute_eer(
    scores: ArrayLike, labels: ArrayLike, weights: ArrayLike | None = None
) -> tuple[float, float]:
    """Equal error rate in [0, 1] and a threshold (accept ``score >= threshold``) near it.

    Along the operating points ``d = p_miss - p_fa`` never decreases; with ``i`` the last
    point where ``d < 0``, the EER is where the segment from point ``i`` to ``i + 1``
    crosses ``p_miss == p_fa``. The threshold is that of whichever of the two points is
    closer to the diagonal (the lower one on a tie), so it is always a score of the list.

    ``weights`` counts each trial that many times (see :func:`speaker_bootstrap_eer`).

    Example::

        >>> compute_eer([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        (0.5, 0.4)
    """
    thresholds, p_miss, p_fa = _operating_points(scores, labels, weights)
    d = p_miss - p_fa
    i = int(np.flatnonzero(d < 0)[-1])  # d[0] = -1 < 0 and d[-1] = 1 >= 0 always
    alpha = -d[i] / (d[i + 1] - d[i])
    eer = p_miss[i] + alpha * (p_miss[i + 1] - p_miss[i])
    j = i if abs(d[i]) <= abs(d[i + 1]) else i + 1
    return float(eer), float(thresholds[j])


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost (NIST SRE / wespeaker), in [0, 1].

    Example::

        >>> compute_min_dcf([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], p_target=0.5)
        0.5
    """
    if not 0.0 < p_target < 1.0:
        raise UserError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise UserError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    _, p_miss, p_fa = _operating_points(scores, labels)
    c_det = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(np.min(c_det) / c_def)


def bootstrap_eers(
    scores: ArrayLike,
    labels: ArrayLike,
    enroll_speakers: ArrayLike,
    test_speakers: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """EERs of ``n_boot`` trial lists made by resampling the test speakers with replacement.

    Trials of one speaker are not independent (they share its utterances), so the unit of
    resampling is the speaker, not the trial. Replicate ``b`` draws
    ``idx = rng.integers(S, size=S)`` from ``rng = np.random.default_rng(seed)`` (the
    replicates in order, speakers sorted), so speaker ``s`` appears ``c_s`` times; the
    replicate's trial list has every trial of the original list between copies of its
    speakers: ``c_a`` copies of a target trial of speaker ``a``, ``c_a * c_b`` of a
    non-target trial between ``a`` and ``b``. Replicates left with no target or no
    non-target trial are dropped (they need a handful of speakers to occur).

    Example::

        >>> eers = bootstrap_eers(scores, labels, enroll_spk, test_spk, n_boot=200)
        ... # doctest: +SKIP
    """
    s, y = _check(scores, labels)
    names, codes = np.unique(np.concatenate([np.asarray(enroll_speakers).reshape(-1),
                                             np.asarray(test_speakers).reshape(-1)]),
                             return_inverse=True)
    if codes.size != 2 * s.size:
        raise UserError(f"{s.size} trials need one enrolment and one test speaker each")
    a, b = codes[: s.size], codes[s.size:]
    # sorted once here: the stable sort inside compute_eer is then linear
    order = np.argsort(s, kind="stable")
    s, y, a, b = s[order], y[order], a[order], b[order]
    same = a == b
    rng = np.random.default_rng(seed)
    eers = []
    for _ in range(n_boot):
        c = np.bincount(rng.integers(names.size, size=names.size), minlength=names.size)
        w = np.where(same, c[a], c[a] * c[b]).astype(np.float64)
        if not (w[y] > 0).any() or not (w[~y] > 0).any():
            continue
        eers.append(compute_eer(s, y, w)[0])
    return np.array(eers)


def speaker_bootstrap_eer(
    scores: ArrayLike,
    labels: ArrayLike,
    enroll_speakers: ArrayLike,
    test_speakers: ArrayLike,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval (``level``, default 95 %) of the EER over speaker-bootstrap
    replicates (:func:`bootstrap_eers`).

    Example::

        >>> lo, hi = speaker_bootstrap_eer(scores, labels, enroll_spk, test_spk)
        ... # doctest: +SKIP
    """
    eers = bootstrap_eers(scores, labels, enroll_speakers, test_speakers, n_boot, seed)
    if eers.size == 0:
        raise UserError("every bootstrap replicate lacked target or non-target trials: "
                        "the trial list needs more test speakers")
    q = (1.0 - level) / 2.0
    lo, hi = np.quantile(eers, [q, 1.0 - q])
    return float(lo), float(hi)


# Acklam's rational approximation of the inverse normal CDF (relative error < 1.2e-9),
# enough for plot axes and free of a scipy dependency.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
      3.754408661907416e00)
_P_LOW = 0.02425


def _poly(coefs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for c in coefs:
        out = out * x + c
    return out


def probit(p: ArrayLike) -> np.ndarray:
    """Inverse standard normal CDF (normal deviate) of probabilities in (0, 1).

    0 and 1 map to -inf and +inf.

    Example::

        >>> probit([0.5, 0.975]).round(4)
        array([0.  , 1.96])
    """
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("probit: probabilities must lie in [0, 1]")
    out = np.empty_like(p)
    lo = p < _P_LOW
    hi = p > 1.0 - _P_LOW
    mid = ~(lo | hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.sqrt(-2.0 * np.log(p[lo]))
        out[lo] = _poly(_C, q) / (_poly(_D, q) * q + 1.0)
        q = np.sqrt(-2.0 * np.log1p(-p[hi]))
        out[hi] = -_poly(_C, q) / (_poly(_D, q) * q + 1.0)
    q = p[mid] - 0.5
    r = q * q
    out[mid] = _poly(_A, r) * q / (_poly(_B, r) * r + 1.0)
    out[p == 0] = -np.inf
    out[p == 1] = np.inf
    return out


_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)


def plot_det(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike[str],
    title: str | None = None,
) -> None:
    """Plot DET curves ``{label: (p_fa, p_miss)}`` on normal-deviate axes into ``path``.

    Written with matplotlib's Agg canvas (no display, no global pyplot state), atomically
    (:mod:`store.atomic`); the format follows the suffix (.png, .pdf, .svg). Each curve's EER point is marked.

    Example::

        >>> plot_det({"teacher": det_points(s1, y), "student": det_points(s2, y)}, "det.png")
        ... # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise UserError("plot_det: no curves to plot")
    path = Path(path)
    lim = (0.0005, 0.5)
    clip = (1e-6, 1 - 1e-6)  # probit(0) is -inf: keep end points drawable, off the axes
    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (p_fa, p_miss) in curves.items():
        p_fa = np.asarray(p_fa, dtype=np.float64)
        p_miss = np.asarray(p_miss, dtype=np.float64)
        if p_fa.shape != p_miss.shape or p_fa.ndim != 1 or p_fa.size == 0:
            raise UserError(f"plot_det: curve {label!r} needs two 1-D arrays of equal length")
        d = p_miss - p_fa
        below = np.flatnonzero(d < 0)
        eer = None
        if below.size and below[-1] + 1 < d.size:
            i = int(below[-1])
            eer = p_miss[i] + (-d[i] / (d[i + 1] - d[i])) * (p_miss[i + 1] - p_miss[i])
        name = label if eer is None else f"{label} (EER {100 * eer:.2f}%)"
        (line,) = ax.plot(probit(np.clip(p_fa, *clip)), probit(np.clip(p_miss, *clip)),
                          label=name, linewidth=1.5)
        if eer is not None:
            e = probit(np.clip(eer, *clip))
            ax.plot([e], [e], "o", color=line.get_color(), markersize=4)
    ticks = probit(np.array(_TICKS))
    labels = [f"{100 * t:g}" for t in _TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(*probit(np.array(lim)))
    ax.set_ylim(*probit(np.array(lim)))
    ax.plot(ax.get_xlim(), ax.get_ylim(), color="0.7", linewidth=0.8, linestyle="--")
    ax.set_xlabel("false-alarm rate [%]")
    ax.set_ylabel("miss rate [%]")
    if title:
        ax.set_title(title)
    ax.grid(True, linewidth=0.5, alpha=0.6)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
