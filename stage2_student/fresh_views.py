"""Online KD on fresh views (``stage2_student.train --online-teacher T --fresh-views``): the
baseline a user without entkd would run.

Instead of replaying the cache's crops every epoch, each epoch draws new augmented crops the
way a teacher's training does (:class:`speaker.views.dataset.EpochViews`: row ``r`` of epoch
``e`` is utterance ``r // E`` with :func:`speaker.views.view.draw_view` under a run seed drawn
from ``(seed, e)``, in an order drawn from the same pair), renders them with the cache's crop
length, augmentation config and noise bank, and feeds them to the live teacher. ``E``, the
views per utterance per epoch, is the cache's, so an epoch has as many steps as a cached one
and the learning-rate and KD schedules are the same. The cache gives nothing else: no crop,
no soft label.

The views' seeds are kept apart from the teacher's own training views (the student's seed
goes through :func:`fresh_seed`), and every view is a pure function of ``(seed, epoch,
row)``, so a resumed run sees the views it would have seen.

Example::

    views = FreshViews(cached_views, keep_waves=False)   # wraps a run's CachedViews
    views.set_epoch(3)
    batch = next(iter(views))                            # StudentBatch, no teacher buckets
"""

from __future__ import annotations

import click
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from speaker.views.dataset import EpochViews, check_audio
from speaker.views.view import draw_view
from stage2_student.data import CachedViews, StudentBatch
from store.errors import UserError

FRESH_KEY = 0xF5E5  # mixed into the student's seed: fresh views never repeat teacher views


def fresh_seed(seed: int) -> int:
    """The :class:`EpochViews` seed of a student run with ``seed``.

    >>> fresh_seed(0) == fresh_seed(0) != fresh_seed(1)
    True
    """
    return int(np.random.SeedSequence([int(seed), FRESH_KEY]).generate_state(1)[0])


class FreshViews(IterableDataset):
    """Batches of freshly drawn, rendered views for one epoch (call ``set_epoch``), in the
    shape of :class:`stage2_student.data.CachedViews`' batches without the teacher's side.

    Built from the run's ``CachedViews`` (its renderer, batch size, seed, rank and cache
    spec); ``E`` views per utterance per epoch, ``E`` the cache's. DataLoader worker ``w``
    of ``W`` renders batches ``w, w + W, ...``: the same batches for any number of workers.
    """

    def __init__(self, cached: CachedViews, keep_waves: bool = False) -> None:
        self.spec, self.request, self.k_prime = cached.spec, cached.request, cached.k_prime
        self.render, self.batch_size = cached.render, cached.batch_size
        self.keep_waves = keep_waves
        utts = len(cached.render.manifest)
        per_utt = int(self.spec.extra.get("views_per_utt") or self.spec.num_rows // max(utts, 1))
        if per_utt < 1 or per_utt * utts != self.spec.num_rows:
            raise UserError(f"--fresh-views: {self.request.path} holds {self.spec.num_rows} rows, "
                            f"not E views of each of the manifest's {utts} utterances; fresh "
                            "views need a cache of the whole training manifest")
        self.views_per_utt = per_utt
        check_audio(cached.render.manifest, cached.render.sample_rate, "training manifest")
        self.views = EpochViews(cached.render, per_utt, fresh_seed(cached.seed), cached.rank,
                                cached.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.views.set_epoch(epoch)

    def batches_per_epoch(self, num_workers: int = 1) -> int:
        """Full batches per epoch (the last partial one is dropped)."""
        return len(self.views) // self.batch_size

    def view(self, i: int) -> tuple[int, int, int]:
        """``(utt, start, seed)`` of the epoch's ``i``-th view: what a replay needs."""
        row = int(self.views.rows[i])
        utt = int(self.views.utt_of_row[row])
        start, seed = draw_view(self.views.run_seed, row, self.render.manifest[utt].num_samples,
                                self.render.crop_samples)
        return utt, start, seed

    def batch(self, index: int) -> StudentBatch:
        """The epoch's ``index``-th batch, rendered."""
        drawn = [self.view(i) for i in range(index * self.batch_size,
                                             (index + 1) * self.batch_size)]
        waves, feats, labels = [], [], []
        for utt, start, seed in drawn:
            wave, label = self.render.render(utt, start, seed)
            waves.append(wave)
            feats.append(self.render.features(wave, seed))
            labels.append(label)
        utt, _, seed = (torch.tensor(c, dtype=torch.int64) for c in zip(*drawn, strict=True))
        return StudentBatch(
            feats=torch.stack(feats), labels=torch.tensor(labels, dtype=torch.int64),
            topk_index=None, teacher=None, teacher_emb=None,
            waves=torch.from_numpy(np.stack(waves)) if self.keep_waves else None,
            utt=utt, seed=seed)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(worker, self.batches_per_epoch(), workers):
            yield self.batch(index)


def with_fresh_views(fresh: bool, online_teacher: str | None, loss: str, topk: int | None,
                     cached: CachedViews) -> CachedViews | FreshViews:
    """The views a student run trains on: ``cached`` as it is, or (``fresh``) fresh views of
    the same cache's shape for the live teacher; refuses what cannot be served."""
    if not fresh:
        return cached
    if online_teacher is None:
        raise UserError("--fresh-views needs --online-teacher: fresh crops have no cached "
                        "soft labels")
    if loss == "dualgroup" and topk is None:
        raise UserError("--fresh-views with --loss dualgroup needs --topk (the primary "
                        "group's size; fresh views carry no cached top-k)")
    return FreshViews(cached, keep_waves=cached.keep_waves)


fresh_views_option = click.option(
    "--fresh-views", is_flag=True, default=False,
    help="With --online-teacher: draw new augmented crops every epoch (the cache's E per "
         "utterance, augmentation and noise bank) instead of the cache's crops.")
