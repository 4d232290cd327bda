"""CachedViews: every row's crop, fbank and label replayed bit-exactly as stage 1 rendered
them, the split of rows across ranks and DataLoader workers, the batch count the trainer
relies on, and the teacher buckets served with each batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.models.margin import LogitMargin
from speaker.teachers.load import load_teacher
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer, ViewRows
from stage2_student.data import CachedViews, CacheRequest, StudentBatch
from stage2_student.kernels import teacher_probs
from store import RowBlock, StoreReader
from store.errors import UserError


def student_renderer(cache: Path, corpus: Path) -> ViewRenderer:
    """The renderer stage2_student.train builds: everything from the cache's attrs."""
    data = DataPaths(data=corpus)
    manifest = data.train_manifest()
    spec = StoreReader.open(cache).spec
    return ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                        AugmentConfig.from_dict(spec.augment), data.noise_bank(spec.sample_rate),
                        sample_rate=spec.sample_rate)


def stage1_rows(corpus: Path, settings: dict, aug_prob: float | None = None) -> ViewRows:
    """Row -> {x: fbank, label, utt, start, seed, crop_checksum} exactly as
    stage1_teacher.dump renders it, built from the dump's settings alone (not the cache)."""
    data = DataPaths(data=corpus)
    manifest = data.train_manifest()
    speeds = settings["speeds"]
    augment = AugmentConfig(aug_prob=settings["aug_prob"] if aug_prob is None else aug_prob,
                            speeds=speeds)
    render = ViewRenderer(manifest, LabelMap.from_manifest(manifest, speeds=speeds),
                          int(round(settings["crop_seconds"] * 16000)), augment,
                          data.noise_bank(16000))
    return ViewRows(render, settings["views_per_utt"], settings["run_seed"])


# Rendering is per crop: one thread is as fast, and far faster on a busy machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stored(student_cache) -> RowBlock:
    """Every row of the shared cache, in store order."""
    reader = StoreReader.open(student_cache.cache)
    return reader.read(0, len(reader))


def rows_of(batch: StudentBatch, stored: RowBlock) -> np.ndarray:
    """Store row of each batch entry (view seeds are unique per row)."""
    row_of_seed = {int(seed): row for row, seed in enumerate(stored.seed)}
    assert len(row_of_seed) == len(stored)
    return np.array([row_of_seed[int(seed)] for seed in batch.seed])


def test_replayed_crops_are_bit_identical_to_stage1(student_cache, stored):
    sc = student_cache
    stage1 = stage1_rows(sc.corpus, sc.settings)
    clean = stage1_rows(sc.corpus, sc.settings, aug_prob=0.0)
    teacher = load_teacher(str(sc.teacher))
    views = CachedViews(CacheRequest(sc.cache), student_renderer(sc.cache, sc.corpus), 16)
    assert views.batches_per_epoch() * 16 == len(stored) == len(stage1)  # every row once
    seen: list[int] = []
    augmented = 0
    for batch in views:
        rows = rows_of(batch, stored)
        for i, row in enumerate(rows):
            item = stage1[int(row)]
            x, label, utt, start, seed = (item[k] for k in ("x", "label", "utt", "start", "seed"))
            assert (utt, start, seed) == (stored.utt[row], stored.start[row], stored.seed[row])
            assert item["crop_checksum"] == stored.crop_checksum[row]
            assert int(batch.utt[i]) == utt
            assert torch.equal(batch.feats[i], x), f"row {row}: replayed fbank differs"
            assert int(batch.labels[i]) == label == int(stored.label[row])
            augmented += not torch.equal(clean[int(row)]["x"], x)
        # the replayed crops are the teacher's: it reproduces the cached logits from them
        logits, _ = teacher(batch.feats)
        picked = logits.gather(1, batch.labels.view(-1, 1)).squeeze(1).numpy()
        np.testing.assert_allclose(picked, stored.target_logit[rows], rtol=1e-4, atol=1e-3)
        top = logits.gather(1, torch.from_numpy(stored.topk_index[rows].astype(np.int64)))
        np.testing.assert_allclose(top.numpy(), stored.topk_logit[rows].astype(np.float32),
                                   rtol=2e-3, atol=2e-2)
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(len(stored)))
    # the cache exercises what replay has to get right: speeds (classes 8..23) and noise
    assert (stored.label >= 8).any() and (stored.label < 8).any()
    assert 0 < augmented < len(stored)


def test_replay_refuses_rows_whose_label_differs(student_cache):
    """A label map with the speakers in another order than the dump's: caught per row."""
    sc = student_cache
    render = student_renderer(sc.cache, sc.corpus)
    swapped = LabelMap(tuple(reversed(render.label_map.speakers)), render.label_map.speeds)
    other = ViewRenderer(render.manifest, swapped, render.crop_samples, render.augment,
                         render.bank)
    with pytest.raises(UserError, match=r"replayed row \(utt \d+, seed \d+\) has label"):
        next(iter(CachedViews(CacheRequest(sc.cache), other, 16)))


def loader_batches(views: CachedViews, epoch: int, workers: int) -> list[StudentBatch]:
    views.set_epoch(epoch)
    return list(DataLoader(views, batch_size=None, num_workers=workers))


def test_ranks_and_workers_split_rows_disjointly(student_cache, stored):
    """2 ranks x 2 workers: disjoint full batches that cover each rank's chunks up to one
    dropped partial batch; the batch count never exceeds what a rank yields; the batches
    are the same, in the same order, as with no worker processes."""
    sc = student_cache
    render = student_renderer(sc.cache, sc.corpus)
    reader = StoreReader.open(sc.cache)
    spec = reader.spec
    assert spec.num_rows % spec.chunk_rows != 0  # a short last chunk: the hard case
    batch_size = 8
    for epoch in (0, 1):
        taken: dict[int, set[int]] = {}
        yielded = []
        for rank in (0, 1):
            views = CachedViews(CacheRequest(sc.cache), render, batch_size, rank=rank,
                                world_size=2)
            batches = loader_batches(views, epoch, workers=2)
            assert all(len(b.labels) == batch_size for b in batches)
            rows = np.concatenate([rows_of(b, stored) for b in batches])
            assert len(set(rows.tolist())) == len(rows), "a row was served twice"
            mine = {r for c in reader.chunks_for(epoch, 0, rank, 2)
                    for r in range(*spec.chunk_range(c))}
            assert set(rows.tolist()) <= mine
            assert len(mine) - len(rows) < batch_size
            taken[rank] = set(rows.tolist())
            yielded.append(len(batches))
            assert views.batches_per_epoch() <= len(batches)
            assert views.batches_per_epoch(num_workers=2) == views.batches_per_epoch()

            serial = loader_batches(views, epoch, workers=0)
            assert len(serial) == len(batches)
            for a, b in zip(serial, batches, strict=True):
                assert torch.equal(a.seed, b.seed) and torch.equal(a.feats, b.feats)
                assert np.array_equal(a.teacher.full, b.teacher.full)
        assert not taken[0] & taken[1]
        assert len(stored) - len(taken[0] | taken[1]) < 2 * batch_size
        # 96 rows in 10-row chunks: 50 and 46 rows -> 6 and 5 batches of 8; the trainer
        # runs the smaller count on both ranks
        assert sorted(yielded) == [5, 6]
        assert views.batches_per_epoch() == min(yielded)


@pytest.mark.parametrize("batch_size", [1, 5, 16, 48, 96, 97])
def test_batches_per_epoch_is_a_lower_bound_for_every_rank(student_cache, batch_size):
    """Counted from chunk lists alone (no rendering), for 1-3 ranks and several epochs."""
    sc = student_cache
    render = student_renderer(sc.cache, sc.corpus)
    reader = StoreReader.open(sc.cache)
    short = reader.spec.num_chunks * reader.spec.chunk_rows - reader.spec.num_rows
    for world in (1, 2, 3):
        views = [CachedViews(CacheRequest(sc.cache), render, batch_size, rank=r,
                             world_size=world) for r in range(world)]
        counted = views[0].batches_per_epoch()
        for epoch in range(4):
            rows = [sum(np.diff(reader.spec.chunk_range(c))[0]
                        for c in reader.chunks_for(epoch, 0, r, world)) for r in range(world)]
            actual = [n // batch_size for n in rows]
            assert counted <= min(actual), (world, epoch, rows)
            assert counted >= (min(rows) - short) // batch_size  # only the short chunk
        assert all(v.batches_per_epoch() == counted for v in views)


def test_teacher_buckets_are_the_kernel_on_the_same_rows(student_cache, stored):
    """k' = 2 of k = 4, T = 2 (the second tail column) and the teacher's AAM margin."""
    sc = student_cache
    margin = LogitMargin("aam", 0.2, 32.0)
    request = CacheRequest(sc.cache, topk=2, temperature=2.0, teacher_margin=margin)
    views = CachedViews(request, student_renderer(sc.cache, sc.corpus), 16, seed=3)
    views.set_epoch(1)
    spec = views.spec
    assert spec.temperatures.index(2.0) == 1
    count = 0
    for batch in views:
        rows = rows_of(batch, stored)
        want = teacher_probs(stored.target_logit[rows], stored.topk_logit[rows],
                             np.ascontiguousarray(stored.tail_lse[rows, 1]), 2, 2.0,
                             margin=margin)
        for name in ("binary", "nontarget", "full"):
            got = getattr(batch.teacher, name)
            assert got.shape == getattr(want, name).shape
            assert np.array_equal(got, getattr(want, name)), name
        assert torch.equal(batch.topk_index,
                           torch.from_numpy(stored.topk_index[rows, :2].astype(np.int64)))
        assert torch.equal(batch.labels, torch.from_numpy(stored.label[rows].astype(np.int64)))
        assert batch.teacher_emb is None and batch.waves is None
        count += 1
    assert count == views.batches_per_epoch() == len(stored) // 16


# ---- stored features (dump --store-features) ------------------------------------------------


@pytest.fixture(scope="module")
def feature_cache(student_cache, tmp_path_factory) -> Path:
    """The shared cache's dump again with ``--store-features`` (same teacher and settings)."""
    from stage1_teacher import dump

    sc, c = student_cache, student_cache.settings
    out = tmp_path_factory.mktemp("feature_cache") / "logits.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the shared cache was dumped: the same teacher bits
    try:
        dump.cli.main([
            "--teacher", str(sc.teacher), "--data", str(sc.corpus), "--out", str(out),
            "--views-per-utt", str(c["views_per_utt"]), "--topk", str(c["topk"]),
            "--crop-seconds", str(c["crop_seconds"]), "--speeds", ",".join(map(str, c["speeds"])),
            "--aug-prob", str(c["aug_prob"]), "--chunk-rows", str(c["chunk_rows"]),
            "--shard-rows", str(c["shard_rows"]), "--seed", str(c["run_seed"]),
            "--workers", "0", "--batch-size", "32", "--threads", "1", "--store-features",
        ], standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_stored_features_are_the_replayed_fbank_in_float16(student_cache, stored, feature_cache):
    """Row by row: the stored features are exactly the replayed fbank rounded to float16,
    and every other array equals the cache dumped without features."""
    reader = StoreReader.open(feature_cache)
    assert reader.spec.features is not None and reader.spec.features.frames == 48
    with_features = reader.read(0, len(reader), features=True)
    for name, array in stored.arrays().items():
        assert np.array_equal(with_features.arrays()[name], array), name
    stage1 = stage1_rows(student_cache.corpus, student_cache.settings)
    for row in range(len(reader)):
        want = stage1[row]["x"].to(torch.float16).numpy()
        assert np.array_equal(with_features.features[row], want), f"row {row}"


def test_loader_from_features_gives_the_replay_batches(student_cache, feature_cache):
    """The same rows in the same batches with the same teacher buckets, and inputs equal
    to the replayed ones up to their float16 rounding, for 2 ranks and 2 workers."""
    render = student_renderer(feature_cache, student_cache.corpus)
    for rank in (0, 1):
        kwargs = {"batch_size": 8, "rank": rank, "world_size": 2}
        fast = CachedViews(CacheRequest(feature_cache), render, **kwargs)
        slow = CachedViews(CacheRequest(feature_cache), render, **kwargs, features=False)
        assert fast.use_features and not slow.use_features
        a, b = loader_batches(fast, 1, workers=2), loader_batches(slow, 1, workers=0)
        assert len(a) == len(b) >= fast.batches_per_epoch() > 0
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x.seed, y.seed) and torch.equal(x.labels, y.labels)
            assert torch.equal(x.feats, y.feats.to(torch.float16).to(torch.float32))
            assert np.array_equal(x.teacher.full, y.teacher.full)


def test_features_are_not_used_where_they_cannot_serve(student_cache, feature_cache):
    render = student_renderer(feature_cache, student_cache.corpus)
    waves = CachedViews(CacheRequest(feature_cache), render, 8, keep_waves=True)
    assert not waves.use_features  # a live waveform teacher needs the crops
    with pytest.raises(UserError, match="holds no stored features"):
        CachedViews(CacheRequest(student_cache.cache), render, 8, features=True)
    with pytest.raises(UserError, match="cannot train from stored features: the live teacher"):
        CachedViews(CacheRequest(feature_cache), render, 8, keep_waves=True, features=True)


# ---- short training runs from each kind of cache ---------------------------------------------


def as_version_1(src: Path, dst: Path) -> Path:
    """A copy of a version-2 store as the version-1 writer wrote it: no ``crop_checksum``
    array, no ``spec_sha256``, ``format_version`` 1 (everything else is unchanged in 2;
    tests/store/data/v1_store is a store the version-1 code itself wrote)."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "crop_checksum")
    meta = json.loads((dst / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 1
    del meta["attributes"]["spec_sha256"]
    (dst / "zarr.json").write_text(json.dumps(meta))
    return dst


def train_once(cache: Path, corpus: Path, out: Path) -> dict:
    """One epoch (6 steps) of a tiny x-vector with cached DKD; -> the epoch's mean logs."""
    from stage2_student import train

    train.cli.main(["--cache", str(cache), "--data", str(corpus), "--out", str(out),
                    "--arch", "xvector", "--arch-opt", "channels=16", "--arch-opt",
                    "embed_dim=16", "--epochs", "1", "--batch-size", "16", "--workers", "0",
                    "--optimizer", "adamw"], standalone_mode=False)
    return json.loads((out / "results.json").read_text())["history"][0]


def test_training_from_features_replay_and_a_version_1_cache(
    student_cache, feature_cache, tmp_path, assert_same_weights, caplog
):
    """The replayed cache and its version-1 copy train to the same weights bit for bit (the
    v1 run says its crops are unchecked); the cache with stored features trains on the same
    batches up to the float16 rounding of the inputs (the per-row test above shows they
    are exactly the rounded replay): its first step's loss agrees to ~1e-4 and six steps
    of AdamW on a random-init model amplify that to under 2 % in the epoch's mean losses."""
    corpus = student_cache.corpus
    replay = train_once(student_cache.cache, corpus, tmp_path / "replay")
    v1 = as_version_1(student_cache.cache, tmp_path / "v1.zarr")
    old = train_once(v1, corpus, tmp_path / "v1")
    assert_same_weights(tmp_path / "replay" / "model.pt", tmp_path / "v1" / "model.pt")
    assert old == replay
    assert "is a version-1 cache: it records no crop checksums" in caplog.text
    fast = train_once(feature_cache, corpus, tmp_path / "features")
    for name in ("loss", "ce", "kd"):
        assert fast[name] == pytest.approx(replay[name], rel=2e-2), name
    assert fast["loss"] != replay["loss"]  # the inputs did come from the stored features
