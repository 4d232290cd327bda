"""AAM softmax against the textbook formula, and the margin ramp against wespeaker's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speaker.models.heads import AAMSoftmax, MarginScheduler, margin_at


def _cosines(head, emb):
    return F.normalize(emb) @ F.normalize(head.weight).T


def test_margin_logits_match_the_direct_formula():
    torch.manual_seed(0)
    head = AAMSoftmax(16, 10, scale=32.0, margin=0.2)
    emb, labels = torch.randn(64, 16), torch.randint(0, 10, (64,))
    logits = head(emb, labels)
    cos = _cosines(head, emb).double()
    expected = 32.0 * cos
    rows = torch.arange(64)
    target = cos[rows, labels]
    # Random embeddings in 16-D sit near 90 degrees: all on the cos(theta + m) branch.
    assert (target > math.cos(math.pi - 0.2)).all()
    expected[rows, labels] = 32.0 * torch.cos(torch.acos(target) + 0.2)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-4)


def test_fallback_beyond_pi_minus_margin_is_continuous_and_monotonic():
    head = AAMSoftmax(2, 1, scale=1.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1).float()
    target = head(emb, torch.zeros(len(theta), dtype=torch.long))[:, 0].double()
    beyond = theta > math.pi - 0.5
    c = torch.cos(theta)
    torch.testing.assert_close(
        target[beyond], c[beyond] - (1 + math.cos(math.pi - 0.5)), atol=1e-5, rtol=0
    )
    # float32 cosines near 1 lose ~1e-5 in sqrt(1 - cos^2), as in wespeaker.
    torch.testing.assert_close(target[~beyond], torch.cos(theta[~beyond] + 0.5), atol=1e-4, rtol=0)
    assert (target.diff() <= 1e-6).all()  # larger angle, never a larger target logit


def test_cosine_logits_have_no_margin():
    torch.manual_seed(1)
    head = AAMSoftmax(8, 5, scale=30.0, margin=0.3)
    emb, labels = torch.randn(7, 8), torch.randint(0, 5, (7,))
    torch.testing.assert_close(head.cosine_logits(emb), 30.0 * _cosines(head, emb))
    head.margin = 0.0
    torch.testing.assert_close(head(emb, labels), head.cosine_logits(emb), rtol=1e-5, atol=1e-5)


def test_setting_margin_updates_the_forward():
    torch.manual_seed(2)
    head = AAMSoftmax(4, 3, margin=0.2)
    head.margin = 0.35
    assert head.margin == 0.35 and head.logit_margin.margin == 0.35
    emb, labels = torch.randn(5, 4), torch.randint(0, 3, (5,))
    target = _cosines(head, emb).double()[torch.arange(5), labels]
    got = head(emb, labels)[torch.arange(5), labels].double()
    torch.testing.assert_close(got, 32.0 * torch.cos(torch.acos(target) + 0.35), atol=1e-4,
                               rtol=0)


def test_gradient_is_finite_when_embedding_equals_class_centre():
    head = AAMSoftmax(4, 3)
    emb = head.weight.detach()[:2].clone().requires_grad_(True)
    loss = F.cross_entropy(head(emb, torch.tensor([0, 1])), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def _wespeaker_margin(iteration, epoch_iter, start_epoch, fix_epoch, m0, m1, kind):
    """wespeaker's MarginScheduler.step/get_increase_margin, restated per iteration."""
    start, fix = (start_epoch - 1) * epoch_iter, (fix_epoch - 1) * epoch_iter
    if iteration >= fix:
        return m1
    if iteration < start:
        return m0
    progress = (iteration - start) / (fix - start)
    if kind == "exp":
        ratio = 1.0 - math.exp(progress * math.log(1e-3 / (1.0 + 1e-6)))
    else:
        ratio = progress
    return m0 + (m1 - m0) * ratio


@pytest.mark.parametrize("kind", ["exp", "linear"])
def test_margin_schedule_matches_wespeaker_per_iteration(kind):
    epoch_iter = 7
    for iteration in range(0, 12 * epoch_iter):
        ours = margin_at(
            iteration / epoch_iter,
            initial_margin=0.05,
            final_margin=0.3,
            increase_start_epoch=3,
            fix_start_epoch=9,
            increase_type=kind,
        )
        theirs = _wespeaker_margin(iteration, epoch_iter, 3, 9, 0.05, 0.3, kind)
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_margin_scheduler_key_epochs_and_head_update():
    head = AAMSoftmax(4, 3, margin=0.2)
    sched = MarginScheduler(head=head)  # wespeaker VoxCeleb: 0 -> 0.2 over epochs 20..39
    assert sched.step(0.0) == 0.0 and head.margin == 0.0
    assert sched.step(18.99) == 0.0
    assert sched.step(19.0) == pytest.approx(0.0)
    halfway = 0.2 * (1 - math.sqrt(1e-3 / (1 + 1e-6)))
    assert sched.step(29.0) == pytest.approx(halfway)
    assert head.margin == pytest.approx(halfway)
    assert sched.step(39.0) == 0.2 and sched.step(150.0) == 0.2 and head.margin == 0.2
    linear = MarginScheduler(increase_start_epoch=1, fix_start_epoch=11, increase_type="linear")
    assert linear.margin(5.0) == pytest.approx(0.1)


def test_margin_scheduler_rejects_bad_settings():
    with pytest.raises(ValueError, match="increase_type"):
        MarginScheduler(increase_type="cosine")
    with pytest.raises(ValueError, match="fix_start_epoch"):
        MarginScheduler(increase_start_epoch=10, fix_start_epoch=5)
