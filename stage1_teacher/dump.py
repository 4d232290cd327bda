"""Run the teacher once over augmented views and write the cache: ``python -m stage1_teacher.dump``.

Row ``r`` is view ``r % E`` of utterance ``r // E`` (E = ``--views-per-utt``); its
crop start and seed come from ``draw_view(run_seed, r)``, so every row is a pure
function of the run seed and can be recomputed anywhere. Rows are grouped into the
store's shards; each shard is computed in batches that never cross its boundary and
written whole by a background thread. Ranks of a ``torchrun`` job take every
``world_size``-th missing shard, so a 2-rank dump equals a 1-rank dump row for row,
and ``--resume`` recomputes only shards not marked complete.

Each row also records the ``crop_checksum`` of the raw samples its crop read (before
speed perturbation and augmentation), which stage 2 checks on every crop it replays.
``--store-features`` also writes each view's student fbank (float16, ~32 KB per 2-s row),
so stage 2 can train without replaying crops; with it the store's chunks and shards are
smaller by default (256 and 4096 rows), as a shard is assembled in memory before writing.
``--tail-samples M`` also draws, per row and temperature, M classes from the teacher's tail
(the non-targets outside the row's top-k) with their logits, for stage 2's unbiased
``--tail sampled`` losses: row ``r`` at temperature index ``t`` with
``store.tail.tail_rng(seed, r, t)``, so draws too are pure functions of the run seed and the
row (store/FORMAT.md, "The sampled tail").

The store is locked (``<out>.lock``) while a dump writes it, so a second dump of the same
``--out`` is refused naming the process that holds it. ``--out`` may be an object-store URL
(``s3://bucket/logits.zarr``, options from ``--storage-option`` or the environment); there
the lock is a lock object with a lease and ``--resume`` also finishes an interrupted create
(store/FORMAT.md, "On an object store"). A dump that fails before finishing
a single shard removes the store it created; one that fails later says how to continue
(``--resume``) or clear it.

Float results of a CPU teacher depend (in the last bits) on the number of torch threads
and on how rows are batched. Batches never cross a shard and ``--threads`` fixes the
thread count, so a resumed dump (same options) or a torchrun dump with the same
``--threads`` is bit-identical to an uninterrupted one. ``--threads 0`` (auto) gives the
teacher the cores the ``--workers`` do not use.

Examples::

    python -m stage1_teacher.dump --teacher exp/teacher/model.pt --data toy \\
        --views-per-utt 4 --topk 32 --out exp/logits.zarr
    torchrun --nproc_per_node 2 -m stage1_teacher.dump --teacher exp/teacher/model.pt \\
        --data toy --out exp/logits.zarr --resume
    python -m stage1_teacher.dump --teacher exp/teacher.ts ...      # any TorchScript teacher
    python -m stage1_teacher.dump ... --topk 32 --tail-samples 32   # + a sampled tail
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import click
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from speaker.features.fbank import feature_info
from speaker.io.manifest import LabelMap, Manifest
from speaker.io.paths import DataPaths, data_options
from speaker.teachers.base import Teacher
from speaker.teachers.load import load_teacher
from speaker.training.trainer import (
    DistContext,
    init_distributed,
    intra_op_threads,
    shutdown_distributed,
    unwrap_worker_errors,
)
from speaker.views.augment import AugmentConfig, announce_augmentation
from speaker.views.dataset import ViewRenderer, ViewRows, check_audio
from stage1_teacher.dump_config import DEFAULT_GEOMETRY, DumpConfig, RowOptions
from stage1_teacher.row_plan import plan_rows
from stage1_teacher.soft_labels import FP16_MAX, summarize_logits
from store import RowBlock, StoreError, StoreSpec, StoreWriter, TeacherInfo
from store.cli import StoreLocation, run, setup_logging, storage_option_flag
from store.errors import UserError
from store.lock import StoreLock
from store.remote import is_remote, options_per_store, remove_command, remove_store, store_state
from store.tail import SAMPLER, draw_store_rows

log = logging.getLogger("stage1_teacher.dump")


def shard_batches(shards: Sequence[tuple[int, int, int]], batch_size: int) -> list[list[int]]:
    """Row batches that never cross a shard: ``shards`` is [(shard, start, stop), ...]."""
    return [
        list(range(b, min(b + batch_size, stop)))
        for _, start, stop in shards
        for b in range(start, stop, batch_size)
    ]


class ShardAssembler:
    """Collects batch results into whole-shard RowBlocks."""

    def __init__(self, shards: Sequence[tuple[int, int, int]]):
        self.pending = list(shards)
        self.parts: list[RowBlock] = []
        self.filled = 0

    def add(self, part: RowBlock) -> Iterator[tuple[int, RowBlock]]:
        self.parts.append(part)
        self.filled += len(part)
        shard, start, stop = self.pending[0]
        if self.filled == stop - start:
            block = RowBlock.concat(self.parts)
            self.pending.pop(0)
            self.parts, self.filled = [], 0
            yield shard, block


class BackgroundWriter:
    """Writes whole shards on a thread so the teacher never waits for compression/IO.

    The queue is short (two shards) to bound memory; an error in the thread is
    re-raised in the caller at the next put or at close.
    """

    def __init__(self, writer: StoreWriter):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.busy_s = 0.0
        self.thread = threading.Thread(target=self._loop, name="shard-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    t0 = time.perf_counter()
                    self.writer.write_shard(*item)
                    self.busy_s += time.perf_counter() - t0
                except BaseException as exc:  # surfaced in the main thread
                    self.error = exc

    def put(self, shard: int, block: RowBlock) -> None:
        self._raise()
        self.queue.put((shard, block))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def make_spec(
    config: DumpConfig, teacher: Teacher, manifest: Manifest, label_map: LabelMap,
    render: ViewRenderer, bank_hash: str, embedding_dim: int,
) -> StoreSpec:
    return StoreSpec(
        num_rows=len(manifest) * config.views_per_utt,
        k=config.topk,
        temperatures=tuple(config.temperatures),
        num_classes=label_map.num_classes,
        embedding_dim=embedding_dim,
        chunk_rows=config.chunk_rows,
        shard_rows=config.shard_rows,
        sample_rate=render.sample_rate,
        crop_samples=render.crop_samples,
        manifest_hash=manifest.content_hash(),
        manifest_ids=list(manifest.ids),
        augment=config.augment.to_dict(),
        augment_hash=config.augment.content_hash(),
        noise_bank_hash=bank_hash,
        label_map=label_map.to_dict(),
        teacher=TeacherInfo(
            arch=teacher.arch,
            checkpoint_sha256=teacher.sha256,
            num_classes=label_map.num_classes,
            scale=teacher.scale,
            margin=teacher.margin,
            margin_kind=teacher.margin_kind,
            epoch=teacher.epoch,
            epochs=teacher.epochs,
        ),
        features=feature_info(render.crop_samples, render.sample_rate)
        if config.store_features else None,
        tail_draws=config.tail_samples,
        tail_sampler=SAMPLER if config.tail_samples else "",
        extra={
            "run_seed": config.seed,
            "views_per_utt": config.views_per_utt,
            "row_order": "shuffled",  # ViewRows: views in a seeded random order
            "input_kind": teacher.input_kind,
            # tail_samples only when asked: a dump without samples records what it always did
            "dump": {k: v for k, v in asdict(config).items()
                     if k != "augment" and (k != "tail_samples" or v)},
        },
    )


def check_teacher(teacher: Teacher, label_map: LabelMap, probe: torch.Tensor) -> int:
    """Fail before anything is written if the teacher cannot serve this label map.

    Returns the embedding dimension (0 when the teacher gives no embeddings).
    """
    if teacher.label_map is not None and teacher.label_map != label_map.to_dict():
        raise UserError(
            "the teacher was trained with a different label map than this manifest gives "
            "(other speakers, order or speeds)"
        )
    logits, emb = teacher(probe)
    if logits.shape[1] != label_map.num_classes:
        raise UserError(
            f"teacher gives {logits.shape[1]} classes but the label map has "
            f"{label_map.num_classes} (speakers x speeds)"
        )
    return 0 if emb is None else int(emb.shape[1])


def settings_differences(stored: StoreSpec, spec: StoreSpec) -> list[str]:
    """Settings in which ``spec`` differs from a store's, the dump's own ones (recorded in
    ``extra``, e.g. ``run_seed``) named one by one rather than as "extra"."""
    names: list[str] = []
    for name in stored.differences(dataclasses.replace(spec, manifest_ids=stored.manifest_ids)):
        if name != "extra":
            names.append(name)
            continue
        old, new = stored.extra, spec.extra
        for key in sorted(set(old) | set(new)):
            if key == "dump":
                a, b = old.get(key, {}), new.get(key, {})
                names += [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            elif old.get(key) != new.get(key):
                names.append(key)
    return list(dict.fromkeys(names))


def _removal(out: str | Path) -> str:
    return remove_command(str(out)) if is_remote(out) else f"`rm -r {out}`"


def open_store(out: str | Path, spec: StoreSpec, resume: bool, ctx: DistContext,
               storage_options: dict | None = None) -> tuple[StoreWriter, bool]:
    """Rank 0 creates the store (or, resuming, checks it has these settings, or finishes
    a create interrupted on an object store); the other ranks then open it. -> (writer,
    whether this call created the store)."""
    state = (store_state(str(out), storage_options) if is_remote(out)
             else "store" if Path(out).exists() else "absent")
    if resume and state == "store":
        stored = StoreWriter.open(out, storage_options=storage_options).spec
        differing = settings_differences(stored, spec)
        if differing:
            raise UserError(
                f"{out} was dumped with different {', '.join(differing)} than this run; "
                f"resume only with the same settings (and teacher), choose another --out, or "
                f"remove it with {_removal(out)}"
            )
    created = False
    if ctx.is_main:
        if state in ("store", "other") and not resume:
            raise UserError(f"{out} exists; pass --resume to continue it, choose another "
                            f"--out, or remove it with {_removal(out)}")
        if state == "creating" and not resume:
            raise UserError(f"{out} is a create that was interrupted; pass --resume to "
                            f"finish it, or remove it with {_removal(out)}")
        if state in ("absent", "creating"):
            StoreWriter.create(out, spec, storage_options=storage_options,
                               finish_interrupted=resume)
            created = True
    ctx.barrier()
    return StoreWriter.open(out, spec, storage_options=storage_options), created


def leftover_note(out: str | Path, created: bool, ctx: DistContext,
                  storage_options: dict | None = None) -> str:
    """After a failed dump: remove a store this run created and never completed a shard
    of (single process; nothing to keep), else say how to continue or clear it."""
    try:
        writer = StoreWriter.open(out, storage_options=storage_options)
        done = int(writer.complete_flags().sum())
    except StoreError:
        if not is_remote(out):
            return ""
        # Unreachable (or caught mid-create): what is marked complete there stays so.
        return (f"; the shards {out} has marked complete are kept: once it is reachable, "
                f"rerun with --resume to finish it (same settings)")
    if created and done == 0 and ctx.world_size == 1:
        if is_remote(out):
            try:
                remove_store(str(out), storage_options)
            except StoreError:
                return f"; nothing was written: remove {out} with {_removal(out)}"
        else:
            shutil.rmtree(out, ignore_errors=True)
        return f"; nothing was written ({out} removed)"
    return (f"; {out} keeps {done} of {writer.num_shards} shards: once fixed, rerun with "
            f"--resume to finish it (same settings), or remove it with {_removal(out)}")


def batch_rows(teacher: Teacher, batch, config: DumpConfig, device: str,
               rows: Sequence[int] = ()) -> RowBlock:
    """Teacher forward on one batch -> the store's columns for its rows (``rows``: their
    store row numbers, which seed the sampled tail's draws)."""
    labels, utt = batch["label"], batch["utt"]
    logits, emb = teacher(batch["x"].to(device, non_blocking=True))
    bad = ~torch.isfinite(logits).all(dim=1)
    if config.embeddings and emb is not None:
        bad |= ~torch.isfinite(emb).all(dim=1) | (emb.abs() > FP16_MAX).any(dim=1)
    if bad.any():
        rows = utt[bad.cpu()].tolist()[:5]
        what = "logits or embeddings" if config.embeddings else "logits"
        raise UserError(f"teacher produced NaN/inf {what} (utterance indices {rows})")
    if logits.abs().max() > FP16_MAX:
        raise UserError(f"teacher logits exceed the float16 range ({FP16_MAX}); rescale them")
    soft = summarize_logits(logits, labels.to(device), config.topk, config.temperatures)
    tail_index = tail_logit = None
    if config.tail_samples:
        if len(rows) != len(labels):
            raise ValueError(f"batch_rows needs the {len(labels)} store rows of the batch to "
                             "draw the sampled tail")
        tail_index, tail_logit = draw_store_rows(
            logits.float().cpu().numpy(), labels.numpy(), soft.topk_index, config.temperatures,
            config.tail_samples, config.seed, np.asarray(rows), np.dtype(np.int32))
    return RowBlock(
        utt=utt.numpy().astype(np.int32),
        start=batch["start"].numpy().astype(np.int64),
        seed=batch["seed"].numpy().astype(np.uint64),
        label=labels.numpy().astype(np.int32),
        **soft.columns(),
        embedding=emb.cpu().numpy().astype(np.float16) if config.embeddings else None,
        crop_checksum=batch["crop_checksum"].numpy().astype(np.int32),
        features=batch["features"].numpy() if config.store_features else None,
        tail_index=tail_index,
        tail_logit=tail_logit,
    )


class ShardSink(Protocol):
    """What takes whole shards from the dump loop (:class:`BackgroundWriter`; a benchmark
    may pass one that writes nothing)."""

    busy_s: float

    def put(self, shard: int, block: RowBlock) -> None: ...

    def close(self) -> None: ...


def dump(teacher_spec: str, data: DataPaths, config: DumpConfig, out: str | Path, *,
         resume: bool, batch_size: int, workers: int, threads: int = 0,
         background_writer: Callable[[StoreWriter], ShardSink] = BackgroundWriter,
         rows: RowOptions | None = None,
         storage_options: dict | None = None) -> dict[str, float]:
    """Write (or complete) the cache at ``out``; returns timing counters of this rank.

    ``threads``: torch threads for the teacher (0: auto, see
    :func:`speaker.training.trainer.intra_op_threads`; the previous setting is restored on
    return). ``background_writer``: what takes whole shards. ``rows``: teacher label list,
    unknown-speaker policy and ``--views-from`` (:mod:`stage1_teacher.row_plan`).
    ``storage_options``: for ``out`` and ``rows.views_from`` where given as object-store
    URLs.
    """
    ctx = init_distributed()
    previous_threads = torch.get_num_threads()
    intra_op_threads(threads, workers, ctx)
    try:
        return _dump(ctx, teacher_spec, data, config, out, resume, batch_size, workers,
                     background_writer, rows or RowOptions(), storage_options)
    finally:
        torch.set_num_threads(previous_threads)


def _dump(ctx: DistContext, teacher_spec: str, data: DataPaths, config: DumpConfig,
          out: str | Path, resume: bool, batch_size: int, workers: int,
          background_writer: Callable[[StoreWriter], ShardSink],
          options: RowOptions, storage_options: dict | None) -> dict[str, float]:

    teacher = load_teacher(teacher_spec, ctx.device)
    if teacher.epoch is not None and teacher.epochs is not None and teacher.epoch < teacher.epochs:
        log.warning("teacher %s stopped after epoch %d of %d: its soft labels are those of an "
                    "unfinished model (recorded in the cache as teacher epoch/epochs); finish "
                    "it with stage1_teacher.train --resume first unless that is meant",
                    teacher_spec, teacher.epoch, teacher.epochs)
    manifest = data.train_manifest()
    # one set of --storage-option flags serves whichever of --out and --views-from is a URL
    storage_options, views_options = options_per_store(storage_options, out, options.views_from)
    plan = plan_rows(teacher, teacher_spec, manifest, config, options, views_options)
    config, teacher, label_map = plan.config, plan.teacher, plan.mapping.label_map
    sample_rate = manifest[0].sample_rate
    check_audio(manifest, sample_rate, "training manifest")
    bank = data.noise_bank(sample_rate)
    announce_augmentation(config.augment, bank)
    render = ViewRenderer(
        manifest, label_map, int(round(config.crop_seconds * sample_rate)), config.augment, bank,
        sample_rate=sample_rate, input_kind=teacher.input_kind,
    )
    rows = plan.rows(render)
    embedding_dim = check_teacher(teacher, label_map, rows[0]["x"].unsqueeze(0).to(ctx.device))
    if config.embeddings and embedding_dim == 0:
        raise UserError("--embeddings asked for, but the teacher returns no embeddings")
    if config.topk > label_map.num_classes - 1:
        log.warning("--topk %d exceeds the %d non-target classes of this %d-class teacher: "
                    "keeping all of them (k=%d), which the cache stores exactly",
                    config.topk, label_map.num_classes - 1, label_map.num_classes,
                    label_map.num_classes - 1)
        config = dataclasses.replace(config, topk=label_map.num_classes - 1)
    spec = plan.adapt_spec(make_spec(config, teacher, manifest, label_map, render,
                                     bank.content_hash(), embedding_dim if config.embeddings
                                     else 0), len(rows))
    if ctx.is_main and not is_remote(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    lock = StoreLock.acquire(out, storage_options) if ctx.is_main else None
    writer = None
    try:
        writer, created = open_store(out, spec, resume, ctx, storage_options)
        if lock is not None:
            writer.guard = lock.check  # a lock object can be lost: then mark nothing more
        return _write_rows(ctx, writer, rows, config, teacher, batch_size, workers,
                           background_writer)
    except (UserError, StoreError) as exc:
        # Only a failure while writing leaves a store to explain; open_store's own
        # refusals already say what to do.
        note = (leftover_note(out, created, ctx, storage_options) if writer is not None
                else "")
        if not note:
            raise
        kind = UserError if isinstance(exc, UserError) else StoreError
        raise kind(f"{exc}{note}") from None
    finally:
        if lock is not None:
            lock.release()


def _write_rows(ctx: DistContext, writer: StoreWriter, rows: ViewRows, config: DumpConfig,
                teacher: Teacher, batch_size: int, workers: int,
                background_writer: Callable[[StoreWriter], ShardSink]) -> dict[str, float]:
    """Compute and write this rank's missing shards; -> timing counters."""
    mine = [(s, *writer.shard_rows_range(s))
            for s in writer.missing_shards(ctx.rank, ctx.world_size)]
    total = sum(stop - start for _, start, stop in mine)
    log.info("rank %d: %d of %d shards to write (%d rows), teacher on %s with %d threads, "
             "%d workers", ctx.rank, len(mine), writer.num_shards, total, ctx.device,
             torch.get_num_threads(), workers)
    batches = shard_batches(mine, batch_size)
    loader = DataLoader(rows, batch_sampler=batches, num_workers=workers,
                        pin_memory=ctx.device.startswith("cuda"))
    assembler, background = ShardAssembler(mine), background_writer(writer)
    forward_s = wait_s = 0.0
    t0 = t1 = time.perf_counter()
    with tqdm(total=total, unit="row", desc=f"dump rank {ctx.rank}",
              disable=not ctx.is_main) as bar:
        try:
            # the loader returns batches in the sampler's order, so zip names their rows
            for batch, numbers in zip(unwrap_worker_errors(loader), batches, strict=True):
                t2 = time.perf_counter()
                wait_s += t2 - t1
                part = batch_rows(teacher, batch, config, ctx.device, numbers)
                t1 = time.perf_counter()
                forward_s += t1 - t2
                for shard, block in assembler.add(part):
                    background.put(shard, block)
                bar.update(len(part))
        finally:
            background.close()
    # No barrier here: each rank's shards are complete once its writer closed, and a rank
    # with one shard more than the others (minutes on a CPU) would outlast the process
    # group's timeout while the others waited for it.
    shutdown_distributed()
    return {"rows": total, "total_s": time.perf_counter() - t0, "forward_s": forward_s,
            "wait_s": wait_s, "write_s": background.busy_s}


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--teacher", "teacher_spec", required=True,
              help="model.pt from stage1_teacher.train, a TorchScript file, module:factory, "
                   "speechbrain:DIR (e.g. speechbrain:pretrained/spkrec-ecapa-voxceleb) or "
                   "wespeaker:DIR (e.g. wespeaker:exp/voxceleb_resnet34: avg_model.pt + "
                   "config.yaml).")
@click.option("--teacher-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The teacher's class names in class order (one per line, or "
              "speechbrain's label_encoder.txt) for a teacher that does not carry them, e.g. "
              "--teacher exp/t.ts --teacher-labels exp/speakers.txt.")
@click.option("--unknown-speakers", type=click.Choice(["refuse", "drop"]), default="refuse",
              help="Manifest speakers that are not among the teacher's classes: refuse the dump, "
                   "or drop their utterances, e.g. --teacher speechbrain:DIR "
                   "--unknown-speakers drop.")
@click.option("--views-from", type=StoreLocation(exists=True), default=None,
              help="Relabel the rows (utt, crop, augmentation seed) of this cache with --teacher; "
                   "the view settings (--views-per-utt, --crop-seconds, --aug-prob, --speeds, "
                   "--seed, --chunk-rows, --shard-rows) are taken from it, e.g. "
                   "--views-from exp/logits.zarr --out exp/logits-sb.zarr.")
@data_options
@click.option("--out", type=StoreLocation(), required=True,
              help="Store path (.zarr), or an object-store URL (s3://bucket/logits.zarr).")
@storage_option_flag
@click.option("--views-per-utt", type=click.IntRange(min=1), default=4,
              help="Augmented crops per utterance (E).")
@click.option("--crop-seconds", type=click.FloatRange(min=0, min_open=True), default=2.0)
@click.option("--topk", type=click.IntRange(min=1), default=32,
              help="Non-target classes kept per row (k).")
@click.option("--temperatures", default="1,2,4", help="Temperature grid for tail_lse.")
@click.option("--aug-prob", type=float, default=0.6, help="Probability of noise/reverb per view.")
@click.option("--speeds", default="1.0", help="Speed-perturbation factors, e.g. 1.0,0.9,1.1.")
@click.option("--embeddings/--no-embeddings", default=False, help="Also store teacher embeddings.")
@click.option("--store-features", is_flag=True,
              help="Also store each view's student fbank (float16, ~32 KB per 2-s row): "
                   "stage 2 then trains without replaying crops. For many students on a "
                   "corpus whose features fit on disk; not for VoxCeleb on a small disk.")
@click.option("--tail-samples", type=click.IntRange(min=0), default=0,
              help="Also draw M classes per row and temperature from the teacher's tail "
                   "(outside the top-k) for stage 2's unbiased --tail sampled losses; "
                   "nT*M*4 bytes per row (384 at 3 temperatures, M = 32), e.g. --topk 32 "
                   "--tail-samples 32.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--workers", type=click.IntRange(min=0), default=1,
              help="DataLoader workers preparing crops.")
@click.option("--threads", type=click.IntRange(min=0), default=0,
              help="Torch threads of the teacher (0: the CPU cores the workers leave free, "
                   "or OMP_NUM_THREADS when set). Bit-identical resumes need the same value.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None,
              help="Rows per chunk [default: 4096; 256 with --store-features].")
@click.option("--shard-rows", type=click.IntRange(min=1), default=None,
              help="Rows per shard, the unit of writing and resume [default: 65536; 4096 "
                   "with --store-features].")
@click.option("--seed", type=click.IntRange(min=0), default=0,
              help="Run seed: every row's view derives from it.")
@click.option("--resume", is_flag=True, help="Complete an interrupted dump at --out.")
@click.option("-v", "--verbose", is_flag=True)
def cli(teacher_spec: str, out: str, temperatures: str, aug_prob: float, speeds: str,
        batch_size: int, workers: int, threads: int, resume: bool, verbose: bool,
        chunk_rows: int | None, shard_rows: int | None, teacher_labels: Path | None,
        unknown_speakers: str, views_from: str | None, storage_options: dict | None,
        **opts) -> None:
    """Run TEACHER once over augmented training crops and write the logit cache.

    \b
    Examples:
      python -m stage1_teacher.dump --teacher exp/teacher/model.pt --data toy --out exp/logits.zarr
      python -m stage1_teacher.dump ... --out exp/logits.zarr --resume     # after a kill
      torchrun --nproc_per_node 2 -m stage1_teacher.dump --teacher exp/teacher/model.pt \\
          --data toy --out exp/logits.zarr --threads 1
      python -m stage1_teacher.dump --teacher mypkg.teachers:wavlm_ecapa --data toy --out w.zarr
      python -m stage1_teacher.dump ... --store-features --out exp/logits.zarr  # no replay
      python -m stage1_teacher.dump ... --topk 32 --tail-samples 32 --out exp/logits.zarr
      python -m stage1_teacher.dump --teacher speechbrain:pretrained/spkrec-ecapa-voxceleb \\
          --data vox --unknown-speakers drop --out exp/logits-sb.zarr
      python -m stage1_teacher.dump --teacher wespeaker:exp/voxceleb_resnet34 --data vox \\
          --views-from exp/logits-sb.zarr --out exp/logits-r34.zarr   # same rows, other teacher
    """
    setup_logging(verbose)
    data = DataPaths.from_options(opts)
    default_chunk, default_shard = DEFAULT_GEOMETRY[opts["store_features"]]
    config = DumpConfig(
        chunk_rows=default_chunk if chunk_rows is None else chunk_rows,
        shard_rows=default_shard if shard_rows is None else shard_rows,
        temperatures=_floats(temperatures, "--temperatures"),
        augment=AugmentConfig(aug_prob=aug_prob, speeds=_floats(speeds, "--speeds")),
        **opts,
    )
    stats = dump(teacher_spec, data, config, out, resume=resume, batch_size=batch_size,
                 workers=workers, threads=threads,
                 rows=RowOptions(teacher_labels, unknown_speakers, views_from),
                 storage_options=storage_options)
    click.echo(f"wrote {stats['rows']} rows to {out} in {stats['total_s']:.1f} s "
               f"(teacher {stats['forward_s']:.1f} s, waiting for crops {stats['wait_s']:.1f} s, "
               f"writer thread {stats['write_s']:.1f} s)")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{option} {text!r}: expected comma-separated numbers") from None


def main() -> None:
    """``python -m stage1_teacher.dump``: bad input -> one ``error:`` line, exit 2."""
    run(cli)


if __name__ == "__main__":
    main()
