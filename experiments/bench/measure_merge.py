"""How far merging top-k caches (stage1_teacher.merge) is from merging full logits.

Synthetic teachers that partly agree: C speakers with centres on the unit sphere in 64
dimensions; teacher m sees centres ``W + 0.5 * noise_m`` and each row's embedding as the
target centre plus its own noise; logits ``32 * cos`` (the AAM teachers' scale). Each
teacher's logits are reduced to a cache row as the dump does (summarize_logits, fp16 top-k),
the rows are merged with ``merge_rows``, and compared with the same ensemble computed from
the full logits (mean of probabilities at T=1, reduced to the same k):

- ``|dp_target|``: target probability at T (the TCKD part), mean and max over rows;
- ``top-k kept``: share of the full merge's top-k classes that the merged cache keeps;
- ``TV(nckd)``: total variation between the two non-target distributions stage 2 sees
  (kept classes by index, plus one tail bucket; a class kept by one and not the other
  counts in the other's tail bucket), mean and max over rows;
- ``TV(def)``: for reference, how far the ensemble tempered (what one logit vector can
  serve at T) is from ``mean_m softmax(z_m / T)`` (the full C classes), mean over rows.

Usage::

    python scripts/measure_merge.py              # writes docs/merge_approximation.md
    python scripts/measure_merge.py --rows 500   # quicker
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from experiments.machine import cpu_name
from experiments.markdown import write_atomic
from experiments.paths import DOCS
from stage1_teacher.merge import merge_rows
from stage1_teacher.soft_labels import rows_of_logits
from store import RowBlock

TEMPS = (1.0, 2.0, 4.0)
SCALE = 32.0


def teachers(num_teachers: int, classes: int, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, 64))
    labels = rng.integers(0, classes, rows)
    out = []
    for _ in range(num_teachers):
        w = centres + 0.5 * rng.standard_normal(centres.shape)
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        e = centres[labels] + 1.2 * rng.standard_normal((rows, 64))
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        out.append(torch.from_numpy((SCALE * e @ w.T).astype(np.float32)))
    return out, torch.from_numpy(labels)


def full_merge(logits: list[torch.Tensor]) -> torch.Tensor:
    """The ensemble's logits from the full logits: log mean_m softmax(z_m) + mean_m Z_m."""
    z = torch.stack([x.double() for x in logits])
    lse = torch.logsumexp(z, dim=2, keepdim=True)
    return torch.logsumexp(z - lse, dim=0) - np.log(len(logits)) + lse.mean(dim=0)


def stage2_view(block: RowBlock, j: int, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_target, non-target probs of the kept classes, non-target tail mass) at T."""
    target = block.target_logit.astype(np.float64) / t
    topk = block.topk_logit.astype(np.float64) / t
    tail = block.tail_lse[:, j].astype(np.float64)
    z = np.logaddexp.reduce(np.concatenate([target[:, None], topk, tail[:, None]], 1), axis=1)
    nontarget = np.logaddexp.reduce(np.concatenate([topk, tail[:, None]], 1), axis=1)
    return (np.exp(target - z), np.exp(topk - nontarget[:, None]),
            np.exp(tail - nontarget))


def nckd_tv(a: RowBlock, b: RowBlock, j: int, t: float) -> np.ndarray:
    _, pa, _ = stage2_view(a, j, t)
    _, pb, _ = stage2_view(b, j, t)
    tv = np.empty(len(a))
    for r in range(len(a)):
        da = dict(zip(a.topk_index[r].tolist(), pa[r], strict=True))
        db = dict(zip(b.topk_index[r].tolist(), pb[r], strict=True))
        kept = sum(abs(da.get(c, 0.0) - db.get(c, 0.0)) for c in set(da) | set(db))
        tail_a, tail_b = 1 - sum(da.values()), 1 - sum(db.values())
        tv[r] = 0.5 * (kept + abs(tail_a - tail_b))
    return tv


def definitional_gap(logits: list[torch.Tensor], t: float) -> float:
    z = torch.stack([x.double() for x in logits])
    mean_t = torch.softmax(z / t, dim=2).mean(0)
    tempered = torch.softmax(full_merge(logits) / t, dim=1)
    return float(0.5 * (mean_t - tempered).abs().sum(1).mean())


def measure(num_teachers: int, classes: int, rows: int, k: int, seed: int) -> list[dict]:
    logits, labels = teachers(num_teachers, classes, rows, seed)
    merged = merge_rows([rows_of_logits(x, labels, k, TEMPS) for x in logits], classes, TEMPS, k)
    full = rows_of_logits(full_merge(logits).float(), labels, k, TEMPS)
    out = []
    for j, t in enumerate(TEMPS):
        pa, pb = stage2_view(merged, j, t)[0], stage2_view(full, j, t)[0]
        kept = np.mean([len(set(a) & set(b)) / k for a, b in
                        zip(merged.topk_index.tolist(), full.topk_index.tolist(), strict=True)])
        tv = nckd_tv(merged, full, j, t)
        out.append({"teachers": num_teachers, "classes": classes, "k": k, "T": t,
                    "dp_target_mean": float(np.abs(pa - pb).mean()),
                    "dp_target_max": float(np.abs(pa - pb).max()),
                    "topk_kept": float(kept), "tv_nckd_mean": float(tv.mean()),
                    "tv_nckd_max": float(tv.max()),
                    "tv_definition": definitional_gap(logits, t)})
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--rows", type=click.IntRange(min=1), default=2000, help="Rows per case.")
@click.option("--classes", type=click.IntRange(min=40), default=500, help="Teacher classes.")
@click.option("--seed", type=int, default=0)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=DOCS / "merge_approximation.md")
def main(rows: int, classes: int, seed: int, out: Path) -> None:
    """How far merging top-k caches is from merging full logits (docs/merge_approximation.md).

    \b
    Example:
      python scripts/measure_merge.py --rows 2000 --classes 500
    """
    t0 = time.perf_counter()
    results = [r for m in (2, 3) for k in (8, 32)
               for r in measure(m, classes, rows, k, seed)]
    lines = [
        "# Ensemble merge: the top-k approximation, measured",
        "",
        f"`python scripts/measure_merge.py --rows {rows} --classes {classes} "
        f"--seed {seed}` on {cpu_name()} ({time.perf_counter() - t0:.0f} s). Synthetic "
        "teachers that partly agree (see `experiments/bench/measure_merge.py`); the merged cache "
        "(`stage1_teacher.merge.merge_rows` on each teacher's top-k cache row) against the same "
        "ensemble computed from the full logits and reduced to the same k. The assumptions are "
        "stated in `stage1_teacher/merge.py`.",
        "",
        "| teachers | k | T | mean \\|dp_target\\| | max \\|dp_target\\| | top-k kept | "
        "mean TV(nckd) | max TV(nckd) | TV(def) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['teachers']} | {r['k']} | {r['T']:g} | {r['dp_target_mean']:.2e} | "
                     f"{r['dp_target_max']:.2e} | {r['topk_kept']:.4f} | "
                     f"{r['tv_nckd_mean']:.2e} | {r['tv_nckd_max']:.2e} | "
                     f"{r['tv_definition']:.2e} |")
    lines += [
        "",
        "`TV(def)` is not an error of the top-k approximation: it is how far the ensemble "
        "tempered, `softmax(zhat / T)` (what one logit vector per row can serve), is from the "
        "mean of the teachers' probabilities at T; zero at T = 1 by definition.",
        "",
    ]
    summary = {"rows": rows, "classes": classes, "results": results}
    write_atomic(out, lines, summary)
    print(json.dumps(summary))
