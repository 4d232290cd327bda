"""Stream cache rows as student training batches, replaying each row's exact crop.

Each DataLoader worker streams its own disjoint share of the store's chunks
(``StoreReader.iter_blocks`` splits by rank and worker, shuffles chunk order per
epoch with a bounded buffer), rebuilds every row's augmented crop from
``(utt, start, seed)``, computes its fbank (dither from the same seed), and turns
the cached teacher columns into bucket probabilities with the Numba kernel — on the
loader side, so the trainer only sees ready tensors.

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
from speaker.features import fbank
from stage2_student.kernels import TeacherBuckets, teacher_probs
from store import RowBlock, StoreReader


@dataclass(frozen=True)
class CacheRequest:
    """Which part of a cache a student trains on."""

    path: Path
    topk: int | None = None  # k' (None: the store's k)
    temperature: float = 1.0
    teacher_margin: bool = False  # apply the AAM margin to the cached target logit


@dataclass
class StudentBatch:
    feats: torch.Tensor  # [B, frames, 80]
    labels: torch.Tensor  # [B] int64
    topk_index: torch.Tensor  # [B, k'] int64
    teacher: TeacherBuckets  # binary [B, 2], nontarget [B, k'+1], full [B, k'+2] (numpy)
    teacher_emb: torch.Tensor | None  # [B, D] when the cache has embeddings
    waves: torch.Tensor | None  # [B, samples] for a live waveform teacher


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
    ):
        self.request = request
        self.render = render
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.keep_waves = keep_waves
        self.epoch = 0
        # The reader travels to DataLoader workers as its path and reopens there.
        self.reader, self.k_prime, self.t_index = open_cache(request, render.manifest)
        self.spec = self.reader.spec

    def batches_per_epoch(self, num_workers: int) -> int:
        """Full batches every rank yields in any epoch (the minimum over ranks, so DDP
        ranks stay in lock-step). Each worker drops its own last partial batch; which
        chunks a worker gets changes per epoch but not how many, so count each worker's
        rows as if it held the store's one short last chunk."""
        spec = self.spec
        short = spec.num_chunks * spec.chunk_rows - spec.num_rows
        def batches(rank: int, worker: int) -> int:
            count = len(self.reader.chunks_for(0, self.seed, rank, self.world_size, worker,
                                               num_workers))
            return max(count * spec.chunk_rows - short, 0) // self.batch_size
        return min(sum(batches(r, w) for w in range(num_workers))
                   for r in range(self.world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        pending: list[RowBlock] = []
        size = 0
        for block in self.reader.iter_blocks(
            self.epoch, self.seed, rank=self.rank, world_size=self.world_size,
            worker=worker, num_workers=workers,
        ):
            pending.append(block)
            size += len(block)
            while size >= self.batch_size:
                rows = RowBlock.concat(pending)
                yield self._batch(rows.slice(0, self.batch_size))
                rest = rows.slice(self.batch_size, len(rows))
                pending, size = [rest], len(rest)

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
            feats.append(fbank(wave, seed=int(seed), sample_rate=self.render.sample_rate))
            labels.append(label)
        teacher = self.spec.teacher
        buckets = teacher_probs(
            rows.target_logit,
            rows.topk_logit,
            np.ascontiguousarray(rows.tail_lse[:, self.t_index]),
            self.k_prime,
            self.request.temperature,
            scale=teacher.scale if self.request.teacher_margin else None,
            margin=teacher.margin if self.request.teacher_margin else 0.0,
        )
        return StudentBatch(
            feats=torch.stack(feats),
            labels=torch.as_tensor(np.asarray(labels), dtype=torch.int64),
            topk_index=torch.from_numpy(rows.topk_index[:, : self.k_prime].astype(np.int64)),
            teacher=buckets,
            teacher_emb=None if rows.embedding is None
            else torch.from_numpy(rows.embedding.astype(np.float32)),
            waves=torch.from_numpy(np.stack(waves)) if self.keep_waves else None,
        )
