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

Example::

    views = CachedViews(CacheRequest("logits.zarr", topk=16, temperature=1.0), render, 64)
    for batch in DataLoader(views, batch_size=None, num_workers=1):
        batch.feats.shape   # [64, frames, 80]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from speaker.data import Manifest
from speaker.dataset import ViewRenderer
from speaker.errors import UserError
from speaker.margin import LogitMargin
from stage2_student.kernels import TeacherBuckets, teacher_probs
from store import RowBlock, StoreReader


@dataclass(frozen=True)
class CacheRequest:
    """Which part of a cache a student trains on."""

    path: Path
    topk: int | None = None  # k' (None: the store's k)
    temperature: float = 1.0
    # The teacher head's margin, put on the cached target logit by the kernel (the
    # --kd-logits margin convention); None: the cached ``scale * cos`` as it is.
    teacher_margin: LogitMargin | None = None


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


def open_cache(request: CacheRequest, manifest: Manifest) -> tuple[StoreReader, int, int]:
    """Open and check a cache for ``request``; -> (reader, k', temperature column).

    Raises StoreError for a cache from another manifest, k' > k or an off-grid T.
    """
    reader = StoreReader.open(request.path, manifest_hash=manifest.content_hash())
    k_prime = reader.spec.k if request.topk is None else request.topk
    reader.check_topk(k_prime)
    return reader, k_prime, reader.temperature_index(request.temperature)


class CachedViews(IterableDataset):
    """Batches of replayed crops + teacher buckets for one epoch (call ``set_epoch``)."""

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
        if buckets:
            # Compile (or load from Numba's disk cache) the kernel here, once: DataLoader
            # workers are forked anew every epoch and would each pay ~0.2 s for it.
            self._buckets(np.zeros(1, np.float32), np.zeros((1, self.spec.k), np.float16),
                          np.zeros(1, np.float32))

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
                                         block_rows=self.batch_size)
        for index, rows in enumerate(blocks):
            if len(rows) < self.batch_size:
                return  # only the last block is short
            if index % workers == worker:
                yield self._batch(rows)

    def _batch(self, rows: RowBlock) -> StudentBatch:
        waves, feats, labels = [], [], []
        for utt, start, seed, cached in zip(rows.utt, rows.start, rows.seed, rows.label,
                                            strict=True):
            wave, label = self.render.render(int(utt), int(start), int(seed))
            if label != cached:
                raise UserError(
                    f"{self.request.path}: replayed row (utt {utt}, seed {seed}) has label "
                    f"{label}, cache says {cached}: the manifest or speeds differ from the dump's"
                )
            waves.append(wave)
            feats.append(self.render.features(wave, int(seed)))
            labels.append(label)
        buckets = None if not self.buckets else self._buckets(
            rows.target_logit, rows.topk_logit, rows.tail_lse[:, self.t_index])
        return StudentBatch(
            feats=torch.stack(feats),
            labels=torch.as_tensor(np.asarray(labels), dtype=torch.int64),
            topk_index=torch.from_numpy(rows.topk_index[:, : self.k_prime].astype(np.int64)),
            teacher=buckets,
            teacher_emb=None if rows.embedding is None
            else torch.from_numpy(rows.embedding.astype(np.float32)),
            waves=torch.from_numpy(np.stack(waves)) if self.keep_waves else None,
            utt=torch.from_numpy(rows.utt.astype(np.int64)),
            seed=torch.from_numpy(rows.seed.astype(np.int64)),
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
