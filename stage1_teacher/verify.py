"""Replay cached rows and check the teacher reproduces them: ``python -m stage1_teacher.verify``.

For a random sample of rows, the crop is rebuilt from ``(utt, start, seed)`` with the
store's augmentation config, the teacher is run again, and each cached array is
compared with the fresh values *at the cached top-k indices*, so ties that fp16
rounding may reorder do not count as differences; ``topk_order`` is how far the best
fresh non-target logit *outside* the cached top-k rises above the smallest one inside
(0 when the cached classes are the teacher's top k). Stored student features are
compared with the replayed fbank, and each crop's raw samples with the row's
``crop_checksum``. A sampled tail (``--tail-samples``) is replayed too: the drawn classes'
logits are compared at the cached classes, and the draws are made again with the row's
generator: a fresh logit that differs in its last bits may move a draw sitting on a CDF
boundary to a neighbouring class, so up to ``TAIL_MISMATCH`` of the draws may differ (the
report says how many did). Exit status 1 when any value is off by more than fp16 tolerance
(``|d| <= atol + rtol * |x|``), more draws differ, or any crop read other audio than the
dump did.

Example::

    python -m stage1_teacher.verify exp/logits.zarr --teacher exp/teacher/model.pt --data toy
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import torch

from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths, data_options
from speaker.teachers.load import load_teacher
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from store import StoreReader
from store.cli import StoreLocation, run, setup_logging, storage_option_flag
from store.errors import UserError
from store.rows import logsumexp_rows
from store.tail import draw_store_rows

log = logging.getLogger("stage1_teacher.verify")

RTOL = 2e-3  # two fp16 half-ulps: values are rounded once on write, once more if replayed on GPU
ATOL = 2e-3
#: Share of replayed tail draws allowed to land on another class (CDF boundaries, above).
TAIL_MISMATCH = 0.01

#: What each compared column measures, as verify prints it.
MEASURES = {
    "target_logit": "teacher logit of the true class",
    "topk_logit": "kept non-target logits, at the cached classes",
    "topk_order": "rise of the best non-kept logit above the smallest kept one",
    "tail_lse": "log-sum-exp of the non-kept logits, per temperature",
    "tail_logit": "sampled tail's logits, at the cached classes",
    "embedding": "teacher embedding",
    "features": "stored student fbank vs the replayed one",
}


@dataclass
class Replay:
    """What replaying sampled rows found: per compared column, the largest absolute
    difference and the worst ``|d| / (atol + rtol |x|)`` (passes at <= 1); the crops whose
    raw samples differ from the dump's (by ``crop_checksum``)."""

    rows: int = 0
    max_diff: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    checksummed: int = 0  # rows with a crop checksum to compare (0 for version-1 stores)
    other_audio: list[str] = field(default_factory=list)  # utterance ids
    tail_draws: int = 0  # sampled-tail draws replayed
    tail_moved: int = 0  # ... of which the replay drew another class

    @property
    def tail_ok(self) -> bool:
        return self.tail_moved <= TAIL_MISMATCH * self.tail_draws

    @property
    def passed(self) -> bool:
        return (max(self.ratio.values(), default=0.0) <= 1.0 and not self.other_audio
                and self.tail_ok)

    def add(self, name: str, diff: np.ndarray, ratio: np.ndarray) -> None:
        self.max_diff[name] = max(self.max_diff.get(name, 0.0), float(diff.max(initial=0.0)))
        self.ratio[name] = max(self.ratio.get(name, 0.0), float(ratio.max(initial=0.0)))


def replay_differences(store: Path | str, teacher_spec: str, data: DataPaths, rows: int,
                       seed: int, batch_size: int = 32,
                       storage_options: dict | None = None) -> Replay:
    """Replay ``rows`` sampled rows of ``store`` (a path or an object-store URL opened with
    ``storage_options``) through the teacher (see the module doc)."""
    manifest = data.train_manifest()
    reader = StoreReader.open(store, manifest_hash=manifest.content_hash(),
                              storage_options=storage_options)
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
    stored_features = spec.features is not None
    found = Replay()
    for begin in range(0, len(sample), batch_size):
        block = reader.take(sample[begin:begin + batch_size], features=stored_features)
        crops = [render.render_checked(u, s, d) for u, s, d in
                 zip(block.utt, block.start, block.seed, strict=True)]
        labels = np.array([label for _, label, _ in crops])
        if not np.array_equal(labels, block.label):
            raise UserError(f"{store}: replayed labels differ from the cached ones")
        if block.crop_checksum is not None:
            found.checksummed += len(block)
            found.other_audio += [manifest[int(u)].id for u, (_, _, got), want in
                                  zip(block.utt, crops, block.crop_checksum, strict=True)
                                  if got != want]
        fbanks = [render.features(wave, int(d)) for (wave, _, _), d in
                  zip(crops, block.seed, strict=True)] \
            if stored_features or render.input_kind == "fbank" else []
        inputs = fbanks if render.input_kind == "fbank" else \
            [torch.from_numpy(wave) for wave, _, _ in crops]
        logits, emb = teacher(torch.stack(inputs))
        if logits.shape[1] != spec.num_classes:
            raise UserError(f"teacher {teacher_spec} gives {logits.shape[1]} classes but "
                            f"{store} holds logits over {spec.num_classes}")
        fresh = _fresh_columns(logits.numpy(), block, spec.temperatures)
        if block.tail_index is not None:
            fresh["tail_logit"] = _fresh_tail(logits.numpy(), block, spec, found,
                                              sample[begin:begin + batch_size])
        if block.embedding is not None and emb is not None:
            fresh["embedding"] = (emb.numpy(), block.embedding.astype(np.float32))
        if stored_features:
            fresh["features"] = (torch.stack(fbanks).numpy(), block.features.astype(np.float32))
        for name, (new, old) in fresh.items():
            with np.errstate(invalid="ignore"):  # inf - inf where both tails are empty
                diff = np.abs(new - old)
            finite = np.isfinite(old)
            diff = np.where(finite, diff, np.where(new == old, 0.0, np.inf))
            found.add(name, diff, diff / (ATOL + RTOL * np.abs(np.where(finite, old, 0.0))))
        found.rows += len(block)
    return found


def _fresh_columns(logits: np.ndarray, block, temperatures) -> dict[str, tuple]:
    """Recompute target, top-k (at the cached indices) and tail LSE from full logits."""
    rows = np.arange(len(logits))
    rest = logits.astype(np.float64).copy()
    rest[rows, block.label] = -np.inf
    topk = np.take_along_axis(logits, block.topk_index.astype(np.int64), axis=1)
    np.put_along_axis(rest, block.topk_index.astype(np.int64), -np.inf, axis=1)
    tail = np.stack([logsumexp_rows(rest / t) for t in temperatures], axis=1)
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


def _fresh_tail(logits: np.ndarray, block, spec, found: Replay,
                rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fresh logits at the cached draws, cached ones); counts the draws a replay moves."""
    index = block.tail_index.astype(np.int64)
    at = np.take_along_axis(logits[:, None, :], np.maximum(index, 0), axis=2)
    again, _ = draw_store_rows(logits, block.label, block.topk_index.astype(np.int64),
                               spec.temperatures, spec.tail_draws,
                               int(spec.extra.get("run_seed", 0)), rows, np.dtype(np.int64))
    found.tail_draws += int((index >= 0).sum())
    found.tail_moved += int((again != index).sum())
    return np.where(index >= 0, at, -np.inf), block.tail_logit.astype(np.float32)


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.argument("store", type=StoreLocation(exists=True))
@storage_option_flag
@click.option("--teacher", "teacher_spec", required=True, help="The teacher the cache claims.")
@data_options
@click.option("--rows", type=click.IntRange(min=1), default=256, help="Rows to replay.")
@click.option("--seed", type=click.IntRange(min=0), default=0, help="Which rows are sampled.")
@click.option("-v", "--verbose", is_flag=True)
def cli(store: str, teacher_spec: str, rows: int, seed: int, verbose: bool,
        storage_options: dict | None, **opts) -> None:
    """Replay sampled rows of STORE through the teacher; fail beyond fp16 tolerance.

    Exit status 0: every compared value is within tolerance; 1: some are not (another
    teacher, other weights, damaged values); 2: the store cannot be replayed here.

    \b
    Example:
      python -m stage1_teacher.verify exp/logits.zarr --teacher exp/teacher/model.pt \\
          --data toy --rows 256
      python -m stage1_teacher.verify s3://bucket/logits.zarr --teacher exp/teacher/model.pt \\
          --data toy --storage-option endpoint_url=http://127.0.0.1:9000
    """
    setup_logging(verbose)
    found = replay_differences(store, teacher_spec, DataPaths.from_options(opts), rows, seed,
                               storage_options=storage_options)
    for line in report_lines(found):
        click.echo(line)
    if found.other_audio:
        shown = ", ".join(repr(u) for u in dict.fromkeys(found.other_audio[:3]))
        click.echo(f"error: {store}: {len(found.other_audio)} replayed crop(s) read other "
                   f"audio than the dump did (utterances {shown}): the corpus changed since "
                   f"the dump; restore it or re-dump the cache", err=True)
        sys.exit(1)
    if not found.tail_ok:
        click.echo(f"error: {store}: {found.tail_moved} of {found.tail_draws} replayed tail "
                   f"draws landed on other classes (more than {100 * TAIL_MISMATCH:g} %): "
                   "another teacher or run seed than the dump's", err=True)
        sys.exit(1)
    if not found.passed:
        worst = max(found.ratio, key=found.ratio.get)
        click.echo(f"error: {store}: cached values differ from the teacher's beyond fp16 "
                   f"tolerance (worst: {worst}, {found.ratio[worst]:.3g}x the tolerance)",
                   err=True)
        sys.exit(1)
    click.echo(f"ok: {found.rows} rows replay within fp16 tolerance")


def report_lines(found: Replay) -> list[str]:
    """What was measured, the value, and whether it passes, one line per check."""
    lines = [f"replayed {found.rows} sampled rows through the teacher; each cached value is "
             f"compared with the fresh one and passes when |cached - fresh| <= {ATOL:g} + "
             f"{RTOL:g} |cached| (fp16 tolerance)"]
    for name, measure in MEASURES.items():
        if name in found.ratio:
            ratio = found.ratio[name]
            lines.append(f"  {name:<13s} max |diff| {found.max_diff[name]:<9.3g} "
                         f"= {ratio:.3g}x tolerance  {'pass' if ratio <= 1 else 'FAIL'}  "
                         f"({measure})")
    if found.tail_draws:
        same = found.tail_draws - found.tail_moved
        lines.append(f"  {'tail_index':<13s} {same} of {found.tail_draws} draws replayed to the "
                     f"same class (up to {100 * TAIL_MISMATCH:g} % may move at CDF boundaries)  "
                     f"{'pass' if found.tail_ok else 'FAIL'}")
    if found.checksummed:
        same = found.checksummed - len(found.other_audio)
        lines.append(f"  {'crop_checksum':<13s} {same} of {found.checksummed} crops read the "
                     f"audio the cache was dumped from  {'pass' if same == found.checksummed else 'FAIL'}")
    else:
        lines.append(f"  {'crop_checksum':<13s} not recorded (version-1 store): the audio "
                     "cannot be checked")
    return lines


def main() -> None:
    """``python -m stage1_teacher.verify``: bad input -> one ``error:`` line, exit 2."""
    run(cli)


if __name__ == "__main__":
    main()
