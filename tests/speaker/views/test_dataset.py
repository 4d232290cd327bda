"""ViewRenderer (labels with speed perturbation, replay) and EpochViews (rank split, epochs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.io.manifest import LabelMap, Manifest, Utterance
from speaker.views.augment import AugmentConfig, NoiseBank
from speaker.views.dataset import EpochViews, ViewRenderer, check_audio, view_rows
from speaker.views.view import render_view
from store.errors import UserError

CROP = 4000  # 0.25 s: cheap fbank


@pytest.fixture(scope="module")
def manifest(toy_corpus: Path) -> Manifest:
    return Manifest.read(toy_corpus / "train" / "manifest.jsonl")


@pytest.fixture(scope="module")
def bank(toy_corpus: Path) -> NoiseBank:
    return NoiseBank.from_dirs(toy_corpus / "musan", toy_corpus / "rirs", max_seconds=1.0)


def renderer(manifest: Manifest, bank: NoiseBank, speeds=(1.0,), **kw) -> ViewRenderer:
    augment = AugmentConfig(aug_prob=0.6, speeds=speeds)
    return ViewRenderer(manifest, LabelMap.from_manifest(manifest, speeds), CROP, augment, bank,
                        **kw)


def test_speed_perturbed_label_is_the_speaker_at_that_speed(manifest, bank):
    speeds = (1.0, 0.9, 1.1)
    render = renderer(manifest, bank, speeds)
    lm = render.label_map
    assert lm.num_classes == 3 * len(manifest.speakers)
    seen = set()
    for i in range(60):
        utt, seed = i % len(manifest), 1000 + i
        wave, label = render.render(utt, 100, seed)
        expect_wave, k = render_view(render.reader, manifest[utt], 100, seed, CROP,
                                     render.augment, bank)
        assert label == lm.index(manifest[utt].speaker, speeds[k])
        assert lm.decode(label) == (manifest[utt].speaker, speeds[k])
        np.testing.assert_array_equal(wave, expect_wave)
        seen.add(k)
    assert seen == {0, 1, 2}  # every speed occurs, so every block of classes is used


def test_renderer_outputs_and_replay(manifest, bank):
    render = renderer(manifest, bank)
    feats, label = render(3, 50, 7)
    again, label2 = render(3, 50, 7)
    assert feats.shape == (23, 80) and feats.dtype == torch.float32  # 0.25 s -> 23 frames
    assert torch.equal(feats, again) and label == label2 == render.label_map.index(
        manifest[3].speaker)
    assert not torch.equal(feats, render(3, 50, 8)[0])
    wave, _ = renderer(manifest, bank, input_kind="wave")(3, 50, 7)
    assert wave.shape == (CROP,)


def test_renderer_rejects_mismatched_settings(manifest, bank):
    with pytest.raises(UserError, match="speeds"):
        ViewRenderer(manifest, LabelMap.from_manifest(manifest, (1.0, 0.9)), CROP,
                     AugmentConfig(speeds=(1.0,)), bank)
    with pytest.raises(UserError, match="input kind"):
        renderer(manifest, bank, input_kind="mfcc")


def views(manifest, bank, world_size=1, rank=0, seed=3, per_utt=2) -> EpochViews:
    return EpochViews(renderer(manifest, bank), views_per_utt=per_utt, seed=seed, rank=rank,
                      world_size=world_size)


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_ranks_are_disjoint_equal_and_cover_all_but_a_remainder(manifest, bank, world_size):
    total = 2 * len(manifest)  # 64 rows
    for epoch in (0, 1):
        parts = []
        for rank in range(world_size):
            v = views(manifest, bank, world_size, rank)
            v.set_epoch(epoch)
            parts.append(v.rows.tolist())
        assert len({len(p) for p in parts}) == 1  # same number of steps on every rank
        assert len(parts[0]) == total // world_size
        union = [r for p in parts for r in p]
        assert len(union) == len(set(union))  # disjoint
        assert set(union) <= set(range(total))
        assert total - len(union) == total % world_size  # only the remainder is left out


def test_rows_map_to_utterances(manifest, bank):
    v = views(manifest, bank, per_utt=3)
    assert v.utt_of_row.tolist() == view_rows(manifest, 3).tolist()
    assert v.utt_of_row.tolist()[:7] == [0, 0, 0, 1, 1, 1, 2]


def test_epochs_are_replayable_and_differ(manifest, bank):
    a, b = views(manifest, bank), views(manifest, bank)
    a.set_epoch(4)
    b.set_epoch(4)
    assert a.rows.tolist() == b.rows.tolist()
    for i in range(3):
        fa, la = a[i]
        fb, lb = b[i]
        assert torch.equal(fa, fb) and la == lb
    first = [a[i][0] for i in range(3)]
    rows4 = a.rows.copy()
    a.set_epoch(5)
    assert a.rows.tolist() != rows4.tolist()  # another order
    # the same row gets another view (crop start and seed) in another epoch
    row = int(rows4[0])
    i5 = int(np.flatnonzero(a.rows == row)[0])
    assert not torch.equal(first[0], a[i5][0])
    # ... and a run with another seed differs in the same epoch
    c = views(manifest, bank, seed=4)
    c.set_epoch(4)
    assert c.rows.tolist() != rows4.tolist()


def test_each_rank_serves_its_own_rows(manifest, bank):
    """The item at position i of rank r is the view of row rows[i] (not rank 0's)."""
    v0, v1 = views(manifest, bank, 2, 0), views(manifest, bank, 2, 1)
    single = views(manifest, bank)
    # same permutation of rows; rank r takes positions r, r+2, ...
    assert v0.rows.tolist() == single.rows[0::2].tolist()
    assert v1.rows.tolist() == single.rows[1::2].tolist()
    assert torch.equal(v1[0][0], single[1][0]) and v1[0][1] == single[1][1]


def test_check_audio(manifest, tmp_path: Path):
    check_audio(manifest, 16000)
    with pytest.raises(UserError, match="listed at 16000 Hz but this run reads audio at 8000"):
        check_audio(manifest, 8000)
    gone = Utterance("g", "s", str(tmp_path / "gone.wav"), 10, 16000)
    with pytest.raises(UserError, match=r"train: audio .*gone\.wav of utterance 'g'"):
        check_audio(Manifest([*manifest, gone]), 16000, "train")
