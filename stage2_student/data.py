"""Stream cache rows as student training batches, replaying each row's exact crop.

Every rank streams its disjoint share of the store's chunks (``StoreReader.iter_blocks``
splits by rank, shuffles chunk order per epoch with a bounded buffer) and cuts it into
batches; DataLoader worker ``w`` of ``W`` renders batches ``w, w + W, ...`` of that one
sequence, so the loader returns the same batches in the same order for any number of
workers (a run resumed with another ``--workers`` gives the same weights). Rendering a
batch rebuilds every row's augmented crop from ``(utt, start, seed)``, computes its fbank
(dither from the same seed), and turns the cached teacher columns into bucket
probabilities with the Numba kernel — on the loader side, so the trainer only sees ready
tensors.

Every replayed crop's raw samples are checked against the ``crop_checksum`` the dump
recorded (format version 2), so audio that changed under the same ids is refused, naming
the utterance, instead of trained on with another crop's soft labels. A cache dumped with
``--store-features`` is read instead of replayed (the same rows and batches; inputs
rounded to float16); it reads no training audio at all, so its inputs are the ones the
teacher saw whatever happened to the corpus since, and each row's features are checked
against the row's ``features_checksum`` (format version 3), so features that are not the
row's own (a shard copied from another dump) are refused. Every chunk the run will read is
checked when the views are built (:meth:`~store.reader.StoreReader.check_data`), before the
first step.

A request for the sampled tail (``CacheRequest.sampled_tail``, ``--tail sampled``) also turns
each row's draws at the request's temperature into their weights and teacher
log-probabilities (``kernels.sampled_tail_probs``, beside ``teacher_probs`` at k' = k); a
cache without draws, or k' < k, is refused when the views are built. ``rows=True`` adds each
row's store row number to its batch (found from its view seed), which online mode needs to
draw a live teacher's tail with the cache's generators.

Example::

    views = CachedViews(CacheRequest("logits.zarr", topk=16, temperature=1.0), render, 64)
    for batch in DataLoader(views, batch_size=None, num_workers=1):
        batch.feats.shape   # [64, frames, 80]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from speaker.features.fbank import feature_info
from speaker.io.manifest import Manifest
from speaker.models.margin import LogitMargin
from speaker.views.dataset import ViewRenderer
from stage2_student.kernels import SampledTail, TeacherBuckets, sampled_tail_probs, teacher_probs
from store import RowBlock, StoreReader
from store.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheRequest:
    """Which part of a cache a student trains on."""

    path: str | Path  # a local path or an object-store URL (s3://bucket/logits.zarr)
    topk: int | None = None  # k' (None: the store's k)
    temperature: float = 1.0
    # The teacher head's margin, put on the cached target logit by the kernel (the
    # --kd-logits margin convention); None: the cached ``scale * cos`` as it is.
    teacher_margin: LogitMargin | None = None
    # Also the sampled tail's weights and log-probabilities (--tail sampled; needs k' = k).
    sampled_tail: bool = False
    storage_options: dict | None = None  # fsspec options of a URL path (not saved in runs)


@dataclass
class StudentBatch:
    feats: torch.Tensor  # [B, frames, 80]
    labels: torch.Tensor  # [B] int64
    topk_index: torch.Tensor  # [B, k'] int64
    teacher: TeacherBuckets | None  # binary [B,2], nontarget [B,k'+1], full [B,k'+2] (numpy);
    # None when the views were built with buckets=False
    teacher_emb: torch.Tensor | None  # [B, D] when the cache has embeddings
    waves: torch.Tensor | None  # [B, samples] for a live waveform teacher
    utt: torch.Tensor | None = None  # [B] int64 manifest index of each row
    seed: torch.Tensor | None = None  # [B] int64 view seed of each row (identifies it)
    tail_index: torch.Tensor | None = None  # [B, M] int64 drawn classes (sampled_tail)
    sampled: SampledTail | None = None  # their weights and log-probabilities (numpy)
    row: torch.Tensor | None = None  # [B] int64 store row of each row (rows=True)


def open_cache(request: CacheRequest, manifest: Manifest) -> tuple[StoreReader, int, int]:
    """Open and check a cache for ``request``; -> (reader, k', temperature column).

    Raises StoreError for a cache from another manifest, k' > k or an off-grid T.
    """
    reader = StoreReader.open(request.path, manifest_hash=manifest.content_hash(),
                              storage_options=request.storage_options)
    k_prime = reader.spec.k if request.topk is None else request.topk
    reader.check_topk(k_prime)
    if request.sampled_tail and not reader.spec.has_tail_samples:
        raise UserError(f"--tail sampled needs a cache with a sampled tail, and "
                        f"{request.path} has none: dump it with --tail-samples M (e.g. 32)")
    if request.sampled_tail and k_prime != reader.spec.k:
        raise UserError(f"--tail sampled needs every kept speaker in the exact head (--topk "
                        f"{reader.spec.k}, the cache's k), not k' = {k_prime}: the draws come "
                        "from outside the cache's top-k")
    return reader, k_prime, reader.temperature_index(request.temperature)


class CachedViews(IterableDataset):
    """Batches of replayed crops (or stored features) + teacher buckets for one epoch (call
    ``set_epoch``).

    ``features``: None (default) reads the cache's stored features when it has them, in
    the students' fbank settings, and no waveforms are wanted (``keep_waves``); False
    always replays; True refuses a cache without usable stored features.
    """

    def __init__(
        self,
        request: CacheRequest,
        render: ViewRenderer,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        keep_waves: bool = False,
        buckets: bool = True,
        features: bool | None = None,
        rows: bool = False,
    ):
        self.request = request
        self.render = render
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.keep_waves = keep_waves
        self.buckets = buckets  # False: skip the kernel (CE, embedding KD, online KD)
        self.epoch = 0
        # The reader travels to DataLoader workers as its path and reopens there.
        self.reader, self.k_prime, self.t_index = open_cache(request, render.manifest)
        self.spec = self.reader.spec
        self.use_features = self._choose_features(features)
        # Every array this run reads, checked before its first step (not found mid-epoch).
        started = time.perf_counter()
        rows = self.reader.check_data(features=self.use_features)
        log.info("%s: %d rows pass their checksums and invariants%s (%.1f s)", request.path,
                 rows, ", stored features included" if self.use_features else "",
                 time.perf_counter() - started)
        if not self.use_features and not self.spec.has_crop_checksum:
            log.warning("%s is a version-1 cache: it records no crop checksums, so replayed "
                        "audio cannot be checked against the audio it was dumped from",
                        request.path)
        if self.use_features and not self.spec.has_features_checksum:
            log.warning("%s is a version-2 cache: it records no features checksums, so its "
                        "stored features cannot be checked to be their rows' own", request.path)
        self._row_of = _RowLookup(self.reader) if rows else None
        if buckets:
            # Compile (or load from Numba's disk cache) the kernel here, once: DataLoader
            # workers are forked anew every epoch and would each pay ~0.2 s for it.
            self._buckets(np.zeros(1, np.float32), np.zeros((1, self.spec.k), np.float16),
                          np.zeros(1, np.float32))

    def _choose_features(self, wanted: bool | None) -> bool:
        stored = self.spec.features
        if wanted is False or (stored is None and wanted is None):
            return False
        if stored is None:
            raise UserError(f"{self.request.path} holds no stored features (dump it with "
                            "--store-features), so its crops must be replayed")
        ours = feature_info(self.render.crop_samples, self.render.sample_rate)
        differing = stored.differences(ours)
        why = ("the stored features differ from the students' fbank "
               f"({'; '.join(differing)})" if differing
               else "the live teacher needs the waveforms" if self.keep_waves else "")
        if why and wanted:
            raise UserError(f"{self.request.path}: cannot train from stored features: {why}")
        if why:
            log.info("%s: replaying crops: %s", self.request.path, why)
        return not why

    def batches_per_epoch(self, num_workers: int = 1) -> int:
        """Full batches every rank yields in any epoch (the minimum over ranks, so DDP
        ranks stay in lock-step); the same for any ``num_workers``. A rank drops its last
        partial batch; which chunks a rank gets changes per epoch but not how many, so
        each rank's rows are counted as if it held the store's one short last chunk."""
        spec = self.spec
        short = spec.num_chunks * spec.chunk_rows - spec.num_rows
        counts = [len(self.reader.chunks_for(0, self.seed, rank, self.world_size))
                  for rank in range(self.world_size)]
        return min(max(count * spec.chunk_rows - short, 0) // self.batch_size
                   for count in counts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # Every worker reads the rank's whole row sequence (reading and decompressing a
        # row costs microseconds, rendering it milliseconds) and renders its share.
        blocks = self.reader.iter_blocks(self.epoch, self.seed, rank=self.rank,
                                         world_size=self.world_size,
                                         block_rows=self.batch_size,
                                         features=self.use_features)
        for index, rows in enumerate(blocks):
            if len(rows) < self.batch_size:
                return  # only the last block is short
            if index % workers == worker:
                yield self._batch(rows)

    def _replay(self, rows: RowBlock) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Re-render every row's crop, checking its label and raw-crop checksum; ->
        (fbank [B, frames, 80], waves)."""
        checksums = rows.crop_checksum if rows.crop_checksum is not None \
            else np.full(len(rows), -1)
        waves, feats = [], []
        for utt, start, seed, cached, checksum in zip(rows.utt, rows.start, rows.seed,
                                                      rows.label, checksums, strict=True):
            wave, label, got = self.render.render_checked(int(utt), int(start), int(seed))
            if checksum >= 0 and got != checksum:
                u = self.render.manifest[int(utt)]
                raise UserError(
                    f"{self.request.path}: the audio of utterance {u.id!r} ({u.path}) is not "
                    f"the audio the cache was dumped from (crop at sample {start}: checksum "
                    f"{got}, cache says {checksum}); restore the corpus or re-dump the cache"
                )
            if label != cached:
                raise UserError(
                    f"{self.request.path}: replayed row (utt {utt}, seed {seed}) has label "
                    f"{label}, cache says {cached}: the manifest or speeds differ from the dump's"
                )
            waves.append(wave)
            feats.append(self.render.features(wave, int(seed)))
        return torch.stack(feats), waves

    def _batch(self, rows: RowBlock) -> StudentBatch:
        if self.use_features:
            feats, waves = torch.from_numpy(rows.features.astype(np.float32)), []
        else:
            feats, waves = self._replay(rows)
        tail_lse = np.ascontiguousarray(rows.tail_lse[:, self.t_index])
        buckets = None if not self.buckets else self._buckets(
            rows.target_logit, rows.topk_logit, tail_lse)
        tail_index = sampled = None
        if self.buckets and self.request.sampled_tail:
            index = np.ascontiguousarray(rows.tail_index[:, self.t_index])
            sampled = sampled_tail_probs(buckets, tail_lse,
                                         np.ascontiguousarray(rows.tail_logit[:, self.t_index]),
                                         index, self.request.temperature, parallel=False)
            tail_index = torch.from_numpy(index.astype(np.int64))
        return StudentBatch(
            feats=feats,
            labels=torch.from_numpy(rows.label.astype(np.int64)),
            topk_index=torch.from_numpy(rows.topk_index[:, : self.k_prime].astype(np.int64)),
            teacher=buckets,
            teacher_emb=None if rows.embedding is None
            else torch.from_numpy(rows.embedding.astype(np.float32)),
            waves=torch.from_numpy(np.stack(waves)) if self.keep_waves else None,
            utt=torch.from_numpy(rows.utt.astype(np.int64)),
            seed=torch.from_numpy(rows.seed.astype(np.int64)),
            tail_index=tail_index,
            sampled=sampled,
            row=None if self._row_of is None else torch.from_numpy(self._row_of(rows.seed)),
        )

    def _buckets(self, target_logit: np.ndarray, topk_logit: np.ndarray,
                 tail_lse: np.ndarray) -> TeacherBuckets:
        return teacher_probs(
            target_logit,
            topk_logit,
            np.ascontiguousarray(tail_lse),
            self.k_prime,
            self.request.temperature,
            margin=self.request.teacher_margin,
            # One batch is one parallel task anyway (the kernel splits 512-row chunks), and
            # a parallel call starts Numba's OpenMP team, whose threads then keep competing
            # with torch: measured 2 ms -> 114 ms per fbank for the rest of the process.
            parallel=False,
        )


class _RowLookup:
    """view seeds -> their store rows (int64), from the cache's ``seed`` column (each row's
    view seed is its own: ``draw_view(run_seed, row)``)."""

    def __init__(self, reader: StoreReader):
        spec, complete = reader.spec, reader.complete_flags()
        chunks = [c for c in range(spec.num_chunks) if complete[spec.shard_of_chunk(c)]]
        seeds = np.concatenate([reader.read_chunk(c).seed for c in chunks])
        rows = np.concatenate([np.arange(*spec.chunk_range(c)) for c in chunks])
        order = np.argsort(seeds, kind="stable")
        self.seeds, self.rows = seeds[order], rows[order].astype(np.int64)
        if (self.seeds[1:] == self.seeds[:-1]).any():
            raise UserError(f"{reader.path}: two rows share a view seed, so rows cannot be "
                            "found from their seeds")

    def __call__(self, seeds: np.ndarray) -> np.ndarray:
        return self.rows[np.searchsorted(self.seeds, np.asarray(seeds, np.uint64))]
