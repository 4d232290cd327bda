"""``stage2_student.train --tail sampled``: the loader's sampled-tail inputs, a training run, the
refusals (no samples in the cache, a loss without a sampled version, k' < k), and online mode
drawing a live teacher's tail as the dump did (online == cached for the same draws)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.teachers.load import load_teacher
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from stage1_teacher import dump
from stage2_student import train
from stage2_student.data import CachedViews, CacheRequest
from stage2_student.kernels import sampled_tail_probs, teacher_probs
from stage2_student.losses import DistillConfig
from store import StoreReader
from tests.conftest import STUDENT_TRAIN, student_dump_argv

M = 4


@pytest.fixture(scope="module")
def tail_cache(student_cache, tmp_path_factory) -> Path:
    """``student_cache``'s dump with ``--tail-samples 4`` (k = 4 of 24 classes)."""
    out = tmp_path_factory.mktemp("tail_cache") / "logits.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dump.cli.main([*student_dump_argv(student_cache.teacher, student_cache.corpus, out),
                       "--tail-samples", str(M)], standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    return out


def views(cache: Path, corpus: Path, rows: bool = False, **request) -> CachedViews:
    """Epoch-0 batches of 16 at T = 2 (``request``: more ``CacheRequest`` fields)."""
    spec = StoreReader.open(cache).spec
    data = DataPaths(data=corpus)
    render = ViewRenderer(data.train_manifest(), LabelMap.from_dict(spec.label_map),
                          spec.crop_samples, AugmentConfig.from_dict(spec.augment),
                          data.noise_bank(spec.sample_rate), sample_rate=spec.sample_rate)
    return CachedViews(CacheRequest(cache, None, 2.0, **request), render, 16, rows=rows)


def test_the_loader_gives_the_kernels_sampled_tail(tail_cache: Path, student_cache):
    cached = views(tail_cache, student_cache.corpus, sampled_tail=True)
    batch = next(iter(cached))
    reader = StoreReader.open(tail_cache)
    rows = reader.read(0, len(reader))
    index = {int(s): i for i, s in enumerate(rows.seed)}
    at = np.array([index[int(s) & (2**64 - 1)] for s in batch.seed.numpy().astype(np.uint64)])
    block = rows.take(at)
    expected = teacher_probs(block.target_logit, block.topk_logit, block.tail_lse[:, 1], 4, 2.0)
    tail = sampled_tail_probs(expected, block.tail_lse[:, 1], block.tail_logit[:, 1],
                              block.tail_index[:, 1], 2.0)
    assert np.array_equal(batch.tail_index.numpy(), block.tail_index[:, 1])
    for name in ("nt_weight", "nt_logq", "full_weight", "full_logp"):
        assert np.array_equal(getattr(batch.sampled, name), getattr(tail, name)), name
    # exact-bucket batches carry no draws
    assert next(iter(views(tail_cache, student_cache.corpus))).tail_index is None


def test_train_tail_sampled_runs(tail_cache: Path, student_cache, tmp_path: Path):
    out = tmp_path / "sampled"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.cli.main(["--cache", str(tail_cache), "--data", str(student_cache.corpus),
                        *STUDENT_TRAIN, "--epochs", "1", "--loss", "dkd", "--beta", "8",
                        "--temperature", "4", "--tail", "sampled", "--out", str(out)],
                       standalone_mode=False)
    finally:
        torch.set_num_threads(threads)
    config = json.loads((out / "config.json").read_text())
    assert config["distill"]["tail"] == "sampled"
    (epoch,) = json.loads((out / "results.json").read_text())["history"]
    assert epoch["kd"] > 0 and np.isfinite(epoch["loss"])


@pytest.mark.parametrize("cache, extra, needles", [
    ("plain", [], ["--tail sampled needs a cache with a sampled tail", "--tail-samples"]),
    ("tail", ["--loss", "trkd"], ["no sampled-tail version", "dkd", "kd"]),
    ("tail", ["--topk", "2"], ["--tail sampled needs every kept speaker", "--topk 4"]),
])
def test_tail_sampled_refusals(tail_cache: Path, student_cache, tmp_path: Path, run_cli,
                               cache, extra, needles):
    path = tail_cache if cache == "tail" else student_cache.cache
    result = run_cli(train.cli, ["--cache", path, "--data", student_cache.corpus, *STUDENT_TRAIN,
                                 "--epochs", "1", "--tail", "sampled", *extra,
                                 "--out", tmp_path / "refused"])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.error_lines[0], result.error_lines[0]
    assert not (tmp_path / "refused" / "model.pt").exists()


class FixedLogits(torch.nn.Module):
    """A stand-in student: the same logits for any input (the step's loss is then a
    function of the teacher side alone)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, feats, labels):
        return None, self.logits, self.logits


def test_online_sampled_equals_cached_sampled(tail_cache: Path, student_cache):
    """A live teacher (the dump's) drawn with the cache's generators gives the cache's draws
    and, up to the cache's float16 rounding, its loss."""
    spec = StoreReader.open(tail_cache).spec
    config = DistillConfig(loss="dkd", beta=8.0, temperature=2.0, tail="sampled")
    live = load_teacher(str(student_cache.teacher))
    margin = train.kd_teacher_margin("margin", live)  # the cache's teacher's, in both modes
    cached = next(iter(views(tail_cache, student_cache.corpus, sampled_tail=True,
                             teacher_margin=margin)))
    online = next(iter(views(tail_cache, student_cache.corpus, sampled_tail=True, rows=True)))
    assert torch.equal(cached.seed, online.seed) and online.row is not None
    logits = torch.randn(16, spec.num_classes, generator=torch.Generator().manual_seed(0))
    student = FixedLogits(8 * logits)
    cached_loss, _ = train.distill_step(config, None, None, "cpu")(student, cached, 1.0)
    step = train.distill_step(config, live, margin, "cpu", train.OnlineDraws.of(spec, 2.0))
    online_loss, stats = step(student, online, 1.0)
    # float16 top-k and drawn logits in the cache (2^-11 relative) bound the difference
    assert abs(float(online_loss) - float(cached_loss)) <= 5e-4 * abs(float(cached_loss))
    # the draws themselves: the live logits differ from the dump's in their last bits at
    # most, which may move a draw on a CDF boundary (rare)
    from stage2_student.losses import sampled_from_logits
    from store.tail import tail_rng

    logits, _ = live(online.feats)
    rngs = [tail_rng(spec.extra["run_seed"], r, 1) for r in online.row.tolist()]
    _, _, draws, _ = sampled_from_logits(logits, online.labels, 4, 2.0, M, rngs, margin=margin)
    assert (draws.index == cached.tail_index.numpy()).mean() >= 0.95
