"""The KD logit convention (--kd-logits) end to end, and what the fp16 cache costs.

1. Each convention through the trainer's step (``distill_step``: CE + weighted KD/DKD), from
   the cache (teacher margin applied by the kernel) and online (``LogitMargin.apply``),
   equals a full-logit reference at k = C - 1 in value and gradient; the reference's margin
   logits are written here from the definitions (acos form), not with speaker.models.margin.
2. A real float16 cache (store.StoreWriter -> StoreReader) at k = C - 1 against the online
   full-logit loss, within a tolerance derived from float16 rounding (see ``fp16_bounds``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from speaker.models.heads import AAMSoftmax
from speaker.teachers.base import Teacher
from speaker.training.trainer import SpeakerNet
from stage2_student.data import StudentBatch
from stage2_student.kernels import teacher_probs
from stage2_student.losses import (
    DistillBatch,
    DistillConfig,
    distill_loss,
    full_logit_dkd_loss,
    full_logit_kd_loss,
)
from stage2_student.train import distill_step, kd_teacher_margin
from store import RowBlock, StoreReader, StoreWriter, TeacherInfo
from store.synthetic import synthetic_spec

SCALE = 32.0


def margin_cos(c: torch.Tensor, kind: str, m: float) -> torch.Tensor:
    """Target cosine with the margin, from the definitions (wespeaker's AAM fallback)."""
    if kind == "am":
        return c - m
    theta = torch.acos(c.clamp(-1.0, 1.0))
    return torch.where(theta + m < math.pi, torch.cos(theta + m),
                       c - (1.0 + math.cos(math.pi - m)))


def with_margin(cos: torch.Tensor, labels: torch.Tensor, kind: str, m: float) -> torch.Tensor:
    """``SCALE * cos`` with the margin on each row's label (the reference's margin logits)."""
    index = labels.view(-1, 1)
    return SCALE * cos.scatter(1, index, margin_cos(cos.gather(1, index), kind, m))


def cache_rows(z: torch.Tensor, labels: torch.Tensor, dtype=np.float32) -> dict[str, np.ndarray]:
    """What the dump stores at k = C - 1: target, every non-target sorted, empty tail."""
    order = z.scatter(1, labels.view(-1, 1), -torch.inf).argsort(dim=1, descending=True)
    index = order[:, : z.shape[1] - 1]
    return dict(target_logit=z.gather(1, labels.view(-1, 1))[:, 0].numpy().astype(np.float32),
                topk_logit=z.gather(1, index).numpy().astype(dtype),
                topk_index=index.numpy().astype(np.int16),
                tail_lse=np.full(z.shape[0], -np.inf, np.float32))


class FixedLogits(nn.Module):
    """A live teacher whose logits for the batch are given."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def case(seed: int, batch: int = 6, classes: int = 12, dim: int = 8):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, dim, generator=gen)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    teacher_cos = F.normalize(torch.randn(batch, dim, generator=gen), dim=1) @ F.normalize(
        torch.randn(classes, dim, generator=gen), dim=1).T
    teacher_cos.scatter_(1, labels.view(-1, 1), 0.7)  # a teacher that knows the speaker
    return emb, labels, teacher_cos


@pytest.mark.parametrize("loss", ["kd", "dkd"])
@pytest.mark.parametrize("kd_logits", ["margin", "cosine"])
@pytest.mark.parametrize("teacher_kind,teacher_m", [("aam", 0.2), ("am", 0.2), ("aam", 0.5)])
@pytest.mark.parametrize("mode", ["cached", "online"])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_step_equals_the_full_logit_reference(loss, kd_logits, teacher_kind, teacher_m, mode,
                                              t):
    emb, labels, teacher_cos = case(seed=7)
    student_m = 0.13  # mid-ramp: the student's current margin, not its final one
    config = DistillConfig(loss=loss, alpha=0.7, beta=2.0, temperature=t, warmup_epochs=2.0,
                           kd_logits=kd_logits)
    head = AAMSoftmax(emb.shape[1], teacher_cos.shape[1], scale=SCALE, margin=student_m)
    net = SpeakerNet(nn.Identity(), head)
    z = SCALE * teacher_cos
    info = TeacherInfo("t", "0" * 64, z.shape[1], SCALE, teacher_m, margin_kind=teacher_kind)
    rows = cache_rows(z, labels)
    live, live_margin, buckets = None, None, None
    if mode == "online":
        live = Teacher(FixedLogits(z), "fbank", SCALE, teacher_m, "t", "",
                       margin_kind=teacher_kind)
        live_margin = kd_teacher_margin(kd_logits, live)
    else:
        buckets = teacher_probs(rows["target_logit"], rows["topk_logit"], rows["tail_lse"],
                                z.shape[1] - 1, t, margin=kd_teacher_margin(kd_logits, info))
    batch = StudentBatch(feats=emb.clone().requires_grad_(), labels=labels,
                         topk_index=torch.from_numpy(rows["topk_index"].astype(np.int64)),
                         teacher=buckets, teacher_emb=None, waves=None)
    got, logs = distill_step(config, live, live_margin, "cpu")(net, batch, 1.0)  # weight 0.5
    got.backward()

    # The reference, from the definitions: CE on the student's margin logits plus the
    # full-logit loss between the convention's logits of both sides.
    ref_emb = emb.clone().requires_grad_()
    cos = F.normalize(ref_emb) @ F.normalize(head.weight.detach()).T
    student_margin = with_margin(cos, labels, "aam", student_m)
    if kd_logits == "margin":
        zs, zt = student_margin, with_margin(teacher_cos.double(), labels, teacher_kind,
                                             teacher_m)
    else:
        zs, zt = SCALE * cos, z
    kd = (full_logit_kd_loss(zs, zt, t) if loss == "kd"
          else full_logit_dkd_loss(zs, zt, labels, 0.7, 2.0, t))
    want = F.cross_entropy(student_margin, labels) + 0.5 * kd
    want.backward()
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.feats.grad, ref_emb.grad, rtol=1e-4, atol=1e-6)
    assert logs["kd"] == pytest.approx(0.5 * float(kd.detach()), rel=1e-5, abs=1e-6)


def test_the_conventions_differ_in_tckd_not_in_nckd():
    """NCKD never sees the target; TCKD does (the margin moves it by several nats)."""
    emb, labels, teacher_cos = case(seed=3)
    head = AAMSoftmax(emb.shape[1], teacher_cos.shape[1], scale=SCALE, margin=0.2)
    info = TeacherInfo("t", "0" * 64, teacher_cos.shape[1], SCALE, 0.2)
    rows = cache_rows(SCALE * teacher_cos, labels)
    index = torch.from_numpy(rows["topk_index"].astype(np.int64))
    losses = {}
    for kd_logits, student in (("margin", head(emb, labels)),
                               ("cosine", head.cosine_logits(emb))):
        b = teacher_probs(rows["target_logit"], rows["topk_logit"], rows["tail_lse"],
                          teacher_cos.shape[1] - 1, 1.0,
                          margin=kd_teacher_margin(kd_logits, info))
        batch = DistillBatch(student, labels, index, b)
        losses[kd_logits] = [
            float(distill_loss(DistillConfig(loss="dkd", alpha=a, beta=b_, kd_logits=kd_logits),
                               batch, epoch=1.0).detach()) for a, b_ in ((1.0, 0.0), (0.0, 1.0))]
    (tckd_m, nckd_m), (tckd_c, nckd_c) = losses["margin"], losses["cosine"]
    assert nckd_m == pytest.approx(nckd_c, rel=1e-6)
    assert abs(tckd_m - tckd_c) > 1e-3 * max(tckd_m, tckd_c)


# ---- the float16 cache ----------------------------------------------------------------------

FP16_UNIT_ROUNDOFF = 2.0**-11  # round to nearest: |fl(z) - z| <= 2^-11 |z| (normal range)
FP16_SUBNORMAL_STEP = 2.0**-25  # half the spacing of float16 subnormals


def fp16_bounds(q_parts: list[torch.Tensor], s_parts: list[torch.Tensor], weights: list[float],
                z_max: float, t: float) -> tuple[float, float]:
    """(loss bound, per-entry gradient bound) for a cached loss whose teacher logits were
    rounded to float16, against the same loss on the exact logits.

    Every teacher logit moves by at most d = 2^-11 max|z| (+2^-25), so every log-probability
    of every teacher distribution here (full, binary, non-target) moves by at most e = 2d/T
    (its own logit and its normaliser, each by d/T); q' = q exp(eps), |eps| <= e. Then
    KL(q'||s) - KL(q||s) = sum (q' - q) log(q/s) + sum q' eps, so per row
    |dKL| <= (e^e - 1) sum_j q_j |log q_j - log s_j| + e, times T^2 and the term's weight.
    The gradient of T^2 KL with respect to a student logit is T (s - q) / B for KD; for
    TCKD it is T/B (s_t - q_t) at the target and T/B (s_j / s_nt)(q_nt - s_nt) elsewhere
    (s_j / s_nt <= 1); for NCKD T/B (s_j/s_nt - q_j/q_nt) at the non-targets. Only q moves,
    each q by at most q (e^e - 1) <= e^e - 1, so each entry moves by at most
    T (e^e - 1) (sum of the weights) / B.
    """
    d = FP16_UNIT_ROUNDOFF * z_max + FP16_SUBNORMAL_STEP
    e = 2.0 * d / t
    growth = math.expm1(e)
    loss = 0.0
    for q, s, w in zip(q_parts, s_parts, weights, strict=True):
        spread = (q * (q.log() - s.log()).abs()).nan_to_num(0.0).sum(dim=1)
        loss += w * t**2 * float((growth * spread + e).mean())
    batch = q_parts[0].shape[0]
    return loss, t * growth * sum(weights) / batch


def write_fp16_cache(path: Path, z: torch.Tensor, labels: torch.Tensor) -> StoreReader:
    """A real cache of these rows at k = C - 1 (float16 top-k), read back."""
    rows, classes = z.shape
    spec = synthetic_spec(rows, num_classes=classes, k=classes - 1, temperatures=(1.0, 2.0, 4.0),
                          chunk_rows=rows, shard_rows=rows)
    cached = cache_rows(z, labels, np.float16)
    block = RowBlock(utt=np.zeros(rows, np.int32), start=np.zeros(rows, np.int64),
                     seed=np.arange(rows, dtype=np.uint64), label=labels.numpy().astype(np.int32),
                     target_logit=cached["target_logit"], topk_index=cached["topk_index"],
                     topk_logit=cached["topk_logit"],
                     tail_lse=np.full((rows, 3), -np.inf, np.float32),
                     crop_checksum=np.zeros(rows, np.int32))
    writer = StoreWriter.create(path, spec)
    writer.write_shard(0, block)
    return StoreReader.open(path, manifest_hash=spec.manifest_hash)


@pytest.fixture(scope="module")
def fp16_case(tmp_path_factory: pytest.TempPathFactory):
    gen = torch.Generator().manual_seed(11)
    rows, classes = 64, 40
    labels = torch.randint(0, classes, (rows,), generator=gen)
    # a trained-looking AAM teacher: target cos ~0.6, non-targets ~N(0, 0.15)
    cos = (0.15 * torch.randn(rows, classes, generator=gen)).clamp(-1, 1)
    cos.scatter_(1, labels.view(-1, 1), 0.6 + 0.1 * torch.randn(rows, 1, generator=gen))
    z = SCALE * cos
    reader = write_fp16_cache(tmp_path_factory.mktemp("fp16") / "logits.zarr", z, labels)
    student = (SCALE * (0.2 * torch.randn(rows, classes, generator=gen)).clamp(-1, 1))
    return z, labels, reader, student


@pytest.mark.parametrize("loss", ["kd", "dkd"])
@pytest.mark.parametrize("kd_logits", ["margin", "cosine"])
@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_fp16_cache_is_within_the_derived_bound_of_the_full_logit_loss(fp16_case, loss,
                                                                        kd_logits, t):
    z, labels, reader, student_logits = fp16_case
    block = reader.read(0, reader.spec.num_rows)
    assert block.topk_logit.dtype == np.float16
    info = reader.spec.teacher  # scale 32, AAM margin 0.2
    margin = kd_teacher_margin(kd_logits, info)
    k = reader.spec.k
    b = teacher_probs(block.target_logit, block.topk_logit,
                      block.tail_lse[:, reader.temperature_index(t)], k, t, margin=margin)
    alpha, beta = 1.0, 2.0
    config = DistillConfig(loss=loss, alpha=alpha, beta=beta, temperature=t, kd_logits=kd_logits)
    cached_s = student_logits.clone().requires_grad_()
    cached = distill_loss(config, DistillBatch(cached_s, labels, block.topk_index, b), epoch=1.0)
    cached.backward()

    zt = z.double() if margin is None else margin.apply(z.double(), labels)
    online_s = student_logits.clone().requires_grad_()
    online = distill_loss(config, DistillBatch(online_s, labels, teacher_logits=zt), epoch=1.0)
    online.backward()

    q = F.softmax(zt / t, dim=1)
    s = F.softmax(student_logits.double() / t, dim=1)
    if loss == "kd":
        parts = ([q], [s], [1.0])
    else:
        def split(p):
            target = p.gather(1, labels.view(-1, 1))
            non = p.scatter(1, labels.view(-1, 1), 0.0)
            return torch.cat([target, 1 - target], dim=1), non / non.sum(dim=1, keepdim=True)

        (qb, qn), (sb, sn) = split(q), split(s)
        parts = ([qb, qn], [sb, sn], [alpha, beta])
    loss_bound, grad_bound = fp16_bounds(*parts, z_max=float(z.abs().max()), t=t)
    # (measured when written: gaps of 2e-6 to 3.4e-5 of the loss, bounds of ~1.5-3 %; the
    # bound is the worst case, rounding errors of many logits mostly cancel)
    slack = 1e-5  # float32 arithmetic of the two paths
    cached, online = float(cached.detach()), float(online.detach())
    gap = abs(cached - online)
    assert gap <= loss_bound + slack * abs(online), (gap, loss_bound)
    grad_gap = float((cached_s.grad - online_s.grad).abs().max())
    assert grad_gap <= grad_bound + 1e-6, (grad_gap, grad_bound)
