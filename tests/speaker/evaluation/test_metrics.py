"""EER / minDCF / DET against a brute-force threshold sweep, and the DET plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speaker.evaluation.metrics import (
    bootstrap_eers,
    compute_eer,
    compute_min_dcf,
    det_points,
    plot_det,
    probit,
    speaker_bootstrap_eer,
)
from store.errors import UserError


def brute_force_points(scores, labels):
    """Every candidate threshold (each distinct score, then +inf), errors counted one by one."""
    points = []
    for t in sorted(set(scores)) + [math.inf]:
        misses = sum(1 for s, y in zip(scores, labels, strict=True) if y and s < t)
        false_alarms = sum(1 for s, y in zip(scores, labels, strict=True) if not y and s >= t)
        points.append((t, misses / sum(labels), false_alarms / (len(labels) - sum(labels))))
    return points


def brute_force_eer(points):
    for (t0, m0, f0), (t1, m1, f1) in zip(points, points[1:], strict=False):
        if m0 - f0 < 0 <= m1 - f1:
            # the segment between the two bracketing points crosses p_miss == p_fa
            a = (f0 - m0) / ((m1 - f1) - (m0 - f0))
            closer = t0 if abs(m0 - f0) <= abs(m1 - f1) else t1
            return m0 + a * (m1 - m0), closer
    raise AssertionError("no crossing")


trial_lists = st.integers(min_value=2, max_value=60).flatmap(
    lambda n: st.tuples(
        st.one_of(
            # few distinct values: many ties, also across classes
            st.lists(st.integers(-3, 3).map(float), min_size=n, max_size=n),
            st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n),
        ),
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
    )
)


@settings(max_examples=300, deadline=None)
@given(trial_lists)
def test_eer_matches_brute_force_sweep(trials):
    scores, labels = trials
    points = brute_force_points(scores, labels)
    eer, threshold = compute_eer(scores, labels)
    want_eer, want_threshold = brute_force_eer(points)
    assert eer == pytest.approx(want_eer, abs=1e-12)
    assert threshold == want_threshold
    # the interpolated EER lies between the best "min" and the best "max" operating point
    assert max(min(m, f) for _, m, f in points) - 1e-12 <= eer
    assert eer <= min(max(m, f) for _, m, f in points) + 1e-12


@settings(max_examples=300, deadline=None)
@given(trial_lists, st.sampled_from([0.01, 0.05, 0.5]), st.sampled_from([1.0, 10.0]))
def test_min_dcf_matches_brute_force_sweep(trials, p_target, c_miss):
    scores, labels = trials
    points = brute_force_points(scores, labels)
    cost = min(c_miss * m * p_target + f * (1 - p_target) for _, m, f in points)
    want = cost / min(c_miss * p_target, 1 - p_target)
    assert compute_min_dcf(scores, labels, p_target, c_miss=c_miss) == pytest.approx(want)
    assert 0.0 <= compute_min_dcf(scores, labels, p_target, c_miss=c_miss) <= 1.0 + 1e-12


@settings(max_examples=100, deadline=None)
@given(trial_lists)
def test_det_points_are_the_sweep(trials):
    scores, labels = trials
    points = brute_force_points(scores, labels)
    p_fa, p_miss = det_points(scores, labels)
    np.testing.assert_allclose(p_miss, [m for _, m, _ in points])
    np.testing.assert_allclose(p_fa, [f for _, _, f in points])


def test_known_values():
    assert compute_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == (0.0, 0.8)
    assert compute_eer([0.8, 0.9, 0.1, 0.2], [0, 0, 1, 1])[0] == 1.0
    # all scores tied: one operating point between "accept all" and "reject all"
    assert compute_eer([0.5] * 4, [0, 1, 0, 1]) == (0.5, 0.5)
    assert compute_min_dcf([0.5] * 4, [0, 1, 0, 1]) == 1.0
    assert compute_min_dcf([0.1, 0.2, 0.8, 0.9], np.array([False, False, True, True])) == 0.0


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1], "2 scores but 1 labels"),
        ([0.1, float("nan")], [0, 1], "NaN"),
        ([0.1, 0.2], [0, 2], "1/0"),
    ],
)
def test_bad_trial_lists_are_user_errors(scores, labels, match):
    with pytest.raises(UserError, match=match):
        compute_eer(scores, labels)
    with pytest.raises(UserError, match=match):
        compute_min_dcf(scores, labels)


def test_probit_matches_torch_ndtri():
    p = np.concatenate([np.linspace(1e-9, 1 - 1e-9, 1001), [1e-300, 0.02425, 0.97575]])
    want = torch.special.ndtri(torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(probit(p), want, rtol=1e-8, atol=1e-8)
    assert probit([0.0, 1.0]).tolist() == [-math.inf, math.inf]


def test_plot_det_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.5
    curves = {
        "good": det_points(rng.normal(size=400) + 2.0 * labels, labels),
        "poor": det_points(rng.normal(size=400) + 0.5 * labels, labels),
    }
    out = tmp_path / "plots" / "det.png"
    plot_det(curves, out, title="toy")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["det.png"]  # no temporary left behind
    with pytest.raises(UserError):
        plot_det({}, out)


@settings(max_examples=200, deadline=None)
@given(trial_lists, st.data())
def test_weighted_eer_is_the_eer_of_repeated_trials(trials, data):
    scores, labels = trials
    weights = data.draw(st.lists(st.integers(0, 3), min_size=len(scores), max_size=len(scores)))
    y = np.array(labels)
    w = np.array(weights)
    if not (w[y] > 0).any() or not (w[~y] > 0).any():
        return
    repeated_scores = [s for s, k in zip(scores, weights, strict=True) for _ in range(k)]
    repeated_labels = [t for t, k in zip(labels, weights, strict=True) for _ in range(k)]
    expect = brute_force_eer(brute_force_points(repeated_scores, repeated_labels))[0]
    assert compute_eer(scores, labels, weights)[0] == pytest.approx(expect, abs=1e-12)


def speaker_trials(n_speakers: int, seed: int):
    """Each speaker 2 target trials and 3 non-target ones against random others, with
    scores that depend on the speakers (so resampling them moves the EER)."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(n_speakers):
        for _ in range(2):
            rows.append((rng.normal(1.0 + 0.1 * a, 1.0), True, a, a))
        for _ in range(3):
            b = int(rng.choice([s for s in range(n_speakers) if s != a]))
            rows.append((rng.normal(0.0, 1.0), False, a, b))
    scores, labels, enroll, test = zip(*rows, strict=True)
    names = np.array([f"spk{i:02d}" for i in range(n_speakers)])
    return np.array(scores), np.array(labels), names[list(enroll)], names[list(test)]


def test_speaker_bootstrap_replicates_are_the_resampled_trial_lists():
    """Each replicate, rebuilt by brute force: copies of the drawn speakers, and every
    original trial once per pair of copies of its two speakers (once per copy for a target
    trial), its EER counted from the explicit list."""
    scores, labels, enroll, test = speaker_trials(6, seed=1)
    got = bootstrap_eers(scores, labels, enroll, test, n_boot=25, seed=7)
    speakers = sorted(set(enroll) | set(test))
    rng = np.random.default_rng(7)
    expect = []
    for _ in range(25):
        copies = [speakers[i] for i in rng.integers(len(speakers), size=len(speakers))]
        s_rep, y_rep = [], []
        for s, y, a, b in zip(scores, labels, enroll, test, strict=True):
            if a == b:
                n = copies.count(a)
            else:
                n = sum(1 for ca in copies for cb in copies if ca == a and cb == b)
            s_rep += [s] * n
            y_rep += [bool(y)] * n
        if any(y_rep) and not all(y_rep):
            expect.append(brute_force_eer(brute_force_points(s_rep, y_rep))[0])
    np.testing.assert_allclose(got, expect, atol=1e-12)
    assert 20 <= len(got) <= 25


def test_speaker_bootstrap_interval_brackets_the_eer_and_narrows_with_speakers():
    widths = []
    for n in (10, 80):
        scores, labels, enroll, test = speaker_trials(n, seed=2)
        lo, hi = speaker_bootstrap_eer(scores, labels, enroll, test, n_boot=300, seed=0)
        assert lo <= compute_eer(scores, labels)[0] <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0]


def test_bootstrap_needs_one_speaker_pair_per_trial():
    with pytest.raises(UserError, match="one enrolment and one test speaker"):
        bootstrap_eers([0.1, 0.2], [1, 0], ["a"], ["a", "b"])
