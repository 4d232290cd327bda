"""The numbers of docs/sampled_tail_bias.md for one teacher: at equal bytes per row, how far
the cached DKD loss (and its gradient) is from the full-logit one, with the exact tail bucket
and with the sampled tail, over draw seeds.

A configuration ``(k, M)`` keeps the top-k non-targets exactly and, for ``M > 0``, M draws
from the tail at the training temperature (``store.tail.draw_tail`` with
``tail_rng(seed, row, t)``, as the dump draws them); logits are rounded to float16 as the
cache stores them. Every configuration of :data:`CONFIGS` costs the same 64 entries of
4 bytes (int16 id + float16 logit) per row at one temperature.

Example::

    table = measure(teacher_cos, student, labels, margin, seeds=4)   # list of dicts
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from speaker.models.margin import LogitMargin
from stage2_student.kernels import sampled_tail_probs, teacher_probs
from stage2_student.losses import dkd_loss, full_logit_dkd_loss, sampled_dkd_loss
from stage2_student.losses.sampled import sampled_nckd_rows
from store.tail import draw_store_rows, draw_tail_rows, tail_rng

#: (k, M): top-64 exact, top-32 + 32 draws, top-16 + 48 draws (equal bytes at one T), and
#: the top-32 cache of today for reference (half the bytes).
CONFIGS = ((64, 0), (32, 32), (16, 48), (32, 0))
TEMPERATURES = (1.0, 2.0, 4.0)
ALPHA, BETA = 1.0, 8.0  # DKD as the student section trains it
BATCH = 64  # the students' batch: the noise a training step sees


def _head(z: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, k: int, t: float,
          margin: LogitMargin | None):
    """(top-k index, tail_lse float32, teacher buckets at k' = k) of float32 logits z."""
    rows = torch.arange(len(z))
    index = order[:, :k]
    rest = z.clone()
    rest[rows, labels] = -torch.inf
    rest.scatter_(1, index, -torch.inf)
    tail = torch.logsumexp(rest.double() / t, dim=1).float().numpy()
    buckets = teacher_probs(z[rows, labels].numpy(), z.gather(1, index).numpy().astype(np.float16),
                            tail, k, t, margin=margin, parallel=False)
    return index, tail, buckets


def _loss_and_grad(fn, student: torch.Tensor, *args) -> tuple[float, torch.Tensor]:
    """``fn(student, *args)`` in float64 and its gradient w.r.t. the student's logits."""
    s = student.double().requires_grad_()
    loss = fn(s, *args)
    (grad,) = torch.autograd.grad(loss, s)
    return float(loss.detach()), grad.flatten()


def measure(teacher_cos: torch.Tensor, student: torch.Tensor, labels: torch.Tensor,
            margin: LogitMargin | None, seeds: int, configs=CONFIGS,
            temperatures=TEMPERATURES) -> list[dict]:
    """One dict per (T, config): relative bias of the DKD estimate against the full-logit DKD
    (mean over ``seeds`` draw seeds) with its standard error, its std over seeds on all rows
    and on 64-row batches, and the gradient cosine to the full-logit gradient (mean over
    seeds, and of the mean gradient)."""
    z = teacher_cos.float()
    classes = z.shape[1]
    teacher = margin.apply(z.double(), labels) if margin else z.double()
    others = z.clone()
    others[torch.arange(len(z)), labels] = -torch.inf
    order = torch.argsort(others, dim=1, descending=True, stable=True)
    table = []
    for t_index, t in enumerate(temperatures):
        full, g_full = _loss_and_grad(full_logit_dkd_loss, student, teacher, labels, ALPHA,
                                      BETA, t)
        for k, m in configs:
            if k >= classes - 1:
                continue
            index, tail_lse, b = _head(z, labels, order, k, t, margin)
            binary, nontarget = torch.from_numpy(b.binary), torch.from_numpy(b.nontarget)
            if m == 0:
                loss, grad = _loss_and_grad(dkd_loss, student, labels, index, binary, nontarget,
                                            ALPHA, BETA, t)
                losses, batch_std, cosines, mean_grad = [loss], 0.0, [_cos(grad, g_full)], grad
            else:
                losses, cosines, nckd, mean_grad = [], [], [], torch.zeros_like(g_full)
                for seed in range(seeds):
                    rngs = [tail_rng(seed, r, t_index) for r in range(len(z))]
                    draws, _ = draw_tail_rows(z.numpy(), labels.numpy(), index.numpy(), t, m, rngs)
                    logit = draws.logit.astype(np.float16)
                    tail = sampled_tail_probs(b, tail_lse, logit, draws.index, t, parallel=False)
                    drawn = torch.from_numpy(draws.index)
                    w, lq = torch.from_numpy(tail.nt_weight), torch.from_numpy(tail.nt_logq)
                    loss, grad = _loss_and_grad(sampled_dkd_loss, student, labels, index, drawn,
                                                binary, nontarget, w, lq, ALPHA, BETA, t)
                    losses.append(loss)
                    cosines.append(_cos(grad, g_full))
                    mean_grad += grad / seeds
                    with torch.no_grad():
                        nckd.append(sampled_nckd_rows(student.double(), labels, index, drawn,
                                                      nontarget, w, lq, t).numpy())
                batch_std = _batch_std(np.stack(nckd)) * BETA
            mean = float(np.mean(losses))
            std = float(np.std(losses, ddof=1)) if len(losses) > 1 else 0.0
            table.append(dict(
                temperature=t, k=k, m=m, bytes_per_row_one_t=4 * (k + m),
                bias=(mean - full) / full, bias_se=std / math.sqrt(len(losses)) / full,
                std=std / full, std_batch=batch_std / full,
                grad_cos=float(np.mean(cosines)), grad_cos_of_mean=_cos(mean_grad, g_full),
                full_dkd=full, draws=len(losses) if m else 0))
    return table


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def _batch_std(rows: np.ndarray) -> float:
    """Mean over 64-row batches of the std over seeds of the batch's mean: ``rows`` [S, N]."""
    n = rows.shape[1] - rows.shape[1] % BATCH
    if n == 0:
        return float(np.std(rows.mean(axis=1), ddof=1))
    batches = rows[:, :n].reshape(rows.shape[0], -1, BATCH).mean(axis=2)
    return float(np.std(batches, axis=0, ddof=1).mean())


def draw_rate(teacher_cos: torch.Tensor, labels: torch.Tensor, k: int, m: int,
              temperatures=TEMPERATURES) -> float:
    """Rows per second of the dump's draws (every temperature of the grid, one thread)."""
    z = teacher_cos.float().numpy()
    others = z.copy()
    others[np.arange(len(z)), labels.numpy()] = -np.inf
    topk = np.argsort(-others, axis=1)[:, :k]
    start = time.perf_counter()
    draw_store_rows(z, labels.numpy(), topk, temperatures, m, 0, np.arange(len(z)),
                    np.dtype(np.int16))
    return len(z) / (time.perf_counter() - start)
