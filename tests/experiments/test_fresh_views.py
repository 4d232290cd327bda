"""Online KD on fresh views (stage2_student.fresh_views): every epoch draws new views, each a
pure function of (seed, epoch, row) that renders to what a replay of it renders, and a
student trains on them with a live teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from stage2_student.data import CachedViews, CacheRequest
from stage2_student.fresh_views import FreshViews, fresh_seed
from stage2_student.train import cli


def _fresh(student_cache, seed: int = 0, batch: int = 16) -> tuple[FreshViews, CachedViews]:
    data = DataPaths(data=student_cache.corpus)
    manifest = data.train_manifest()
    request = CacheRequest(student_cache.cache)
    from store import StoreReader

    spec = StoreReader.open(student_cache.cache).spec
    render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                          AugmentConfig.from_dict(spec.augment),
                          data.noise_bank(manifest[0].sample_rate),
                          sample_rate=manifest[0].sample_rate)
    cached = CachedViews(request, render, batch, seed, buckets=False)
    return FreshViews(cached), cached


def _epoch_views(views: FreshViews, epoch: int) -> list[tuple[int, int, int]]:
    views.set_epoch(epoch)
    return [views.view(i) for i in range(len(views.views))]


def test_fresh_views_are_replayable_and_new_every_epoch(student_cache, one_torch_thread):
    views, cached = _fresh(student_cache)
    again, _ = _fresh(student_cache)
    e0, e1 = _epoch_views(views, 0), _epoch_views(views, 1)
    assert e0 == _epoch_views(again, 0) and e1 == _epoch_views(again, 1)  # replayable
    # E views of every utterance per epoch, as many as the cache's rows
    assert len(e0) == views.spec.num_rows == len(views.render.manifest) * views.views_per_utt
    assert sorted(u for u, _, _ in e0) == sorted(u for u, _, _ in e1)
    assert not {s for _, _, s in e0} & {s for _, _, s in e1}  # other crops every epoch
    # ...and never the cache's crops (nor another seed's views)
    cache_seeds = {int(s) for b in cached for s in b.seed}
    assert not cache_seeds & {s for _, _, s in e0}
    other, _ = _fresh(student_cache, seed=1)
    assert not {s for _, _, s in _epoch_views(other, 0)} & {s for _, _, s in e0}
    assert fresh_seed(0) != 0

    # a batch is the rendering of its views: replaying (utt, start, seed) gives the same input
    views.set_epoch(1)
    batch = next(iter(views))
    assert batch.feats.shape[0] == views.batch_size and batch.teacher is None
    for j in (0, 5):
        utt, start, seed = views.view(j)
        feats, label = views.render(utt, start, seed)
        assert torch.equal(batch.feats[j], feats) and int(batch.labels[j]) == label
        assert (int(batch.utt[j]), int(batch.seed[j])) == (utt, seed)
    assert views.batches_per_epoch() == views.spec.num_rows // views.batch_size
    assert len(list(iter(views))) == views.batches_per_epoch()


def test_online_dkd_on_fresh_views_trains_and_needs_a_live_teacher(
        student_cache, student_run, tmp_path: Path, run_cli, one_torch_thread):
    out = tmp_path / "fresh"
    done = run_cli(cli, [*student_run.command(out), "--epochs", "2", "--loss", "dkd",
                         "--online-teacher", student_cache.teacher, "--fresh-views"])
    assert done.exit_code == 0, done.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["fresh_views"] is True and config["online_teacher"]
    history = json.loads((out / "results.json").read_text())["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) and h["kd"] > 0 for h in history)

    refused = run_cli(cli, [*student_run.command(tmp_path / "no"), "--fresh-views"])
    assert refused.exit_code == 2
    assert any("--fresh-views needs --online-teacher" in line for line in refused.error_lines)


def test_fresh_views_refuse_dualgroup_without_its_primary_group_size(student_cache, student_run,
                                                                     tmp_path: Path, run_cli):
    refused = run_cli(cli, [*student_run.command(tmp_path / "dg"), "--loss", "dualgroup",
                            "--online-teacher", student_cache.teacher, "--fresh-views"])
    assert refused.exit_code == 2 and "needs --topk" in refused.stderr
