"""The one margin formula: the AAM head's forward, LogitMargin.apply (a live teacher's logits)
and the Numba kernel against the definitions, over the whole range of cos (fallback too)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speaker.models.heads import AAMSoftmax
from speaker.models.margin import LogitMargin
from stage2_student.kernels import teacher_probs


def definition(c: float, kind: str, m: float) -> float:
    """Target cosine with the margin, from the papers' definitions (acos form for AAM), and
    wespeaker's easy_margin=False fallback ``cos(theta) - (1 + cos(pi - m))`` once
    theta + m passes pi."""
    if kind == "none":
        return c
    if kind == "am":
        return c - m
    theta = math.acos(c)
    if theta + m < math.pi:
        return math.cos(theta + m)
    return c - (1.0 + math.cos(math.pi - m))


def head_at_angles(theta: np.ndarray, margin: float, scale: float = 32.0):
    """An AAM head with class 0 along x, fed unit embeddings at the given angles to it."""
    head = AAMSoftmax(2, 2, scale=scale, margin=margin)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor(np.stack([np.cos(theta), np.sin(theta)], axis=1), dtype=torch.float32)
    return head, emb


@pytest.mark.parametrize("m", [0.1, 0.2, 0.5])
def test_head_forward_is_the_definition_over_the_whole_range(m: float):
    theta = np.linspace(0.0, math.pi, 721)  # cos from 1 to -1; the fallback is theta > pi - m
    head, emb = head_at_angles(theta, m)
    labels = torch.zeros(len(theta), dtype=torch.long)
    logits = head(emb, labels)
    cos = head.cosine(emb)[:, 0].detach().double().numpy()  # the float32 cosines the head saw
    want = 32.0 * np.array([definition(float(np.clip(c, -1, 1)), "aam", m) for c in cos])
    # float32 arithmetic; at |cos| = 1 the sine floor moves the result by <= 32 * 1e-6
    np.testing.assert_allclose(logits[:, 0].detach().double().numpy(), want, rtol=0, atol=5e-5)
    np.testing.assert_allclose(logits[:, 1].detach().numpy(), 32.0 * np.sin(theta), atol=5e-5)
    assert (theta > math.pi - m).sum() >= 10  # the fallback branch was exercised
    # continuous at the switch and monotone in theta across it
    assert np.all(np.diff(logits[:, 0].detach().numpy()) <= 1e-5)


def test_head_gradient_is_finite_at_cos_one():
    head, emb = head_at_angles(np.array([0.0, math.pi]), 0.2)
    emb.requires_grad_()
    head(emb, torch.zeros(2, dtype=torch.long)).sum().backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("kind,m", [("aam", 0.2), ("aam", 0.5), ("am", 0.2), ("none", 0.0)])
def test_apply_puts_the_margin_on_the_target_only(kind: str, m: float):
    gen = torch.Generator().manual_seed(0)
    cos = torch.rand(64, 5, generator=gen, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 5, (64,), generator=gen)
    got = LogitMargin(kind, m, 30.0).apply(30.0 * cos, labels)
    want = 30.0 * cos.clone()
    for i, label in enumerate(labels.tolist()):
        want[i, label] = 30.0 * definition(float(cos[i, label]), kind, m)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("m", [0.2, 0.5])
def test_kernel_and_head_give_the_same_target_logit(m: float):
    """The teacher kernel's margin (on a cached target logit) is the head's forward."""
    theta = np.linspace(1e-3, math.pi - 1e-3, 401)
    head, emb = head_at_angles(theta, m)
    with torch.no_grad():
        cos_logit = head.cosine_logits(emb)[:, 0].numpy()
        head_logit = head(emb, torch.zeros(len(theta), dtype=torch.long))[:, 0].double()
    t = 16.0  # keeps the probability sensitive to the target logit
    got = teacher_probs(cos_logit, np.zeros((len(theta), 1), np.float32),
                        np.full(len(theta), -np.inf, np.float32), 1, t,
                        margin=LogitMargin("aam", m, 32.0),
                        parallel=False)  # no OpenMP team in this process (see test_dataset)
    want = torch.sigmoid(head_logit / t).numpy()  # one non-target logit of 0, empty tail
    np.testing.assert_allclose(got.full[:, 0], want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="arc", margin=0.2, scale=32.0), "margin kind 'arc'"),
    (dict(kind="aam", margin=1.6, scale=32.0), "aam margin must be in"),
    (dict(kind="am", margin=-0.1, scale=32.0), "am margin must be in"),
    (dict(kind="aam", margin=0.2, scale=0.0), "scale must be > 0"),
])
def test_bad_margins_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LogitMargin(**kwargs)
