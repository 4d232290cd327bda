"""Replay cached rows and check the teacher reproduces them: ``python -m stage1_teacher.verify``.

For a random sample of rows, the crop is rebuilt from ``(utt, start, seed)`` with the
store's augmentation config, the teacher is run again, and each cached array is
compared with the fresh values *at the cached top-k indices*, so ties that fp16
rounding may reorder do not count as differences; ``topk_order`` is how far the best
fresh non-target logit *outside* the cached top-k rises above the smallest one inside
(0 when the cached classes are the teacher's top k). Exit status 1 when any of these is
off by more than fp16 tolerance (``|d| <= atol + rtol * |x|``).

Example::

    python -m stage1_teacher.verify exp/logits.zarr --teacher exp/teacher/model.pt --data toy
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import numpy as np
import torch

from speaker.augment import AugmentConfig
from speaker.cli import run, setup_logging
from speaker.data import LabelMap
from speaker.dataset import ViewRenderer
from speaker.errors import UserError
from speaker.recipe import DataPaths, data_options
from speaker.teacher import load_teacher
from store import StoreError, StoreReader

log = logging.getLogger("stage1_teacher.verify")

RTOL = 2e-3  # two fp16 half-ulps: values are rounded once on write, once more if replayed on GPU
ATOL = 2e-3


def replay_differences(store: Path, teacher_spec: str, data: DataPaths, rows: int, seed: int,
                       batch_size: int = 32) -> dict[str, float]:
    """Max abs difference per cached array over ``rows`` sampled rows, and the worst
    tolerance ratio ``|d| / (atol + rtol |x|)`` under key ``"ratio"``."""
    manifest = data.train_manifest()
    reader = StoreReader.open(store, manifest_hash=manifest.content_hash())
    spec = reader.spec
    teacher = load_teacher(teacher_spec)
    render = ViewRenderer(
        manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
        AugmentConfig.from_dict(spec.augment), data.noise_bank(spec.sample_rate),
        sample_rate=spec.sample_rate, input_kind=teacher.input_kind,
    )
    if render.bank.content_hash() != spec.noise_bank_hash:
        raise UserError(f"{store}: noise bank differs from the one the cache was dumped with")
    if teacher.sha256 != spec.teacher.checkpoint_sha256:
        log.warning("teacher %s is not the one recorded in %s (sha256 %s... vs %s...); "
                    "checking whether it reproduces the cached values anyway", teacher_spec,
                    store, teacher.sha256[:12], spec.teacher.checkpoint_sha256[:12])
    sample = np.sort(np.random.default_rng(seed).choice(len(reader), min(rows, len(reader)),
                                                        replace=False))
    worst: dict[str, float] = {"ratio": 0.0}
    for begin in range(0, len(sample), batch_size):
        block = reader.take(sample[begin:begin + batch_size])
        inputs = [render(u, s, d) for u, s, d in zip(block.utt, block.start, block.seed,
                                                      strict=True)]
        labels = np.array([label for _, label in inputs])
        if not np.array_equal(labels, block.label):
            raise UserError(f"{store}: replayed labels differ from the cached ones")
        logits, emb = teacher(torch.stack([x for x, _ in inputs]))
        if logits.shape[1] != spec.num_classes:
            raise UserError(f"teacher {teacher_spec} gives {logits.shape[1]} classes but "
                            f"{store} holds logits over {spec.num_classes}")
        fresh = _fresh_columns(logits.numpy(), block, spec.temperatures)
        if block.embedding is not None and emb is not None:
            fresh["embedding"] = (emb.numpy(), block.embedding.astype(np.float32))
        for name, (new, old) in fresh.items():
            with np.errstate(invalid="ignore"):  # inf - inf where both tails are empty
                diff = np.abs(new - old)
            finite = np.isfinite(old)
            diff = np.where(finite, diff, np.where(new == old, 0.0, np.inf))
            worst[name] = max(worst.get(name, 0.0), float(diff.max(initial=0.0)))
            ratio = diff / (ATOL + RTOL * np.abs(np.where(finite, old, 0.0)))
            worst["ratio"] = max(worst["ratio"], float(ratio.max(initial=0.0)))
    return worst


def _fresh_columns(logits: np.ndarray, block, temperatures) -> dict[str, tuple]:
    """Recompute target, top-k (at the cached indices) and tail LSE from full logits."""
    rows = np.arange(len(logits))
    rest = logits.astype(np.float64).copy()
    rest[rows, block.label] = -np.inf
    topk = np.take_along_axis(logits, block.topk_index.astype(np.int64), axis=1)
    np.put_along_axis(rest, block.topk_index.astype(np.int64), -np.inf, axis=1)
    tail = np.stack([_logsumexp(rest / t) for t in temperatures], axis=1)
    # Best fresh logit left outside the cached top-k vs the smallest fresh one inside:
    # compared as (inside_min + excess, inside_min) so the tolerance applies to it.
    outside = rest.max(axis=1)
    inside = topk.min(axis=1).astype(np.float64)
    excess = np.where(np.isfinite(outside), np.maximum(outside - inside, 0.0), 0.0)
    return {
        "target_logit": (logits[rows, block.label], block.target_logit),
        "topk_logit": (topk, block.topk_logit.astype(np.float32)),
        "topk_order": (inside + excess, inside),
        "tail_lse": (tail, block.tail_lse.astype(np.float64)),
    }


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = np.max(x, axis=1, keepdims=True)
    safe = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(x - safe).sum(axis=1, keepdims=True)) + safe)[:, 0]


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.argument("store", type=click.Path(exists=True, path_type=Path))
@click.option("--teacher", "teacher_spec", required=True, help="The teacher the cache claims.")
@data_options
@click.option("--rows", type=click.IntRange(min=1), default=256, help="Rows to replay.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Which rows are sampled.")
@click.option("-v", "--verbose", is_flag=True)
def cli(store: Path, teacher_spec: str, rows: int, seed: int, verbose: bool, **opts) -> None:
    """Replay sampled rows of STORE through the teacher; fail beyond fp16 tolerance.

    Exit status 0: every compared value is within tolerance; 1: some are not (another
    teacher, other weights, damaged values); 2: the store cannot be replayed here.

    \b
    Example:
      python -m stage1_teacher.verify exp/logits.zarr --teacher exp/teacher/model.pt \\
          --data toy --rows 256
    """
    setup_logging(verbose)
    worst = replay_differences(store, teacher_spec, DataPaths.from_options(opts), rows, seed)
    for name, value in worst.items():
        click.echo(f"{name:>14s}  {value:.3g}")
    if worst["ratio"] > 1.0:
        click.echo(f"error: {store}: cached values differ from the teacher's beyond fp16 "
                   f"tolerance (worst {worst['ratio']:.3g}x)", err=True)
        sys.exit(1)
    click.echo(f"ok: {rows} rows replay within fp16 tolerance")


def main() -> None:
    """``python -m stage1_teacher.verify``: bad input -> one ``error:`` line, exit 2."""
    run(cli, user_errors=(StoreError,))


if __name__ == "__main__":
    main()
