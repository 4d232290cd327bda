"""The optional sampled tail of format 3 (``tail_index``, ``tail_logit``, ``spec.tail_draws``):
round trip, a store without it unchanged, ``python -m store verify`` naming a bad row, and the
sampler ``store.tail.draw_store_rows`` against ``draw_tail`` with its RNG layout."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import zarr

from store import StoreReader, StoreWriter
from store.__main__ import main
from store.errors import StoreError
from store.rows import check_block
from store.tail import SAMPLER, draw_store_rows, draw_tail, tail_rng


@pytest.fixture
def tail_store(tmp_path, make_spec, write_store):
    spec = make_spec(tail_draws=6)
    return write_store(tmp_path / "tail.zarr", spec), spec


def test_round_trip_of_the_sampled_tail(tail_store):
    path, spec = tail_store
    reader = StoreReader.open(path)
    assert reader.spec.differences(spec) == ["manifest_ids"] and reader.spec.tail_draws == 6
    block = reader.read(0, len(reader))
    assert block.tail_index.shape == (1000, 2, 6) and block.tail_index.dtype == np.int16
    assert block.tail_logit.shape == (1000, 2, 6) and block.tail_logit.dtype == np.float16
    assert reader.take([5, 700]).tail_index.shape == (2, 2, 6)
    # what was written comes back bit for bit
    from store.synthetic import synthetic_rows
    again = synthetic_rows(spec, 256, 512)
    assert np.array_equal(reader.read(256, 512).tail_index, again.tail_index)
    assert reader.read(256, 512).tail_logit.tobytes() == again.tail_logit.tobytes()
    assert reader.attrs["spec"]["tail_draws"] == 6
    assert reader.attrs["spec"]["tail_sampler"] == "synthetic"
    # raw bytes per row: nT * M * (2 + 2) on top of the rest
    plain = dataclasses.replace(spec, tail_draws=0, tail_sampler="")
    assert spec.bytes_per_row_raw() - plain.bytes_per_row_raw() == 2 * 6 * 4


def test_a_store_without_samples_keeps_its_spec(small_store):
    path, spec = small_store
    reader = StoreReader.open(path)
    assert "tail_draws" not in reader.attrs["spec"] and "tail_sampler" not in reader.attrs["spec"]
    assert reader.read(0, 10).tail_index is None and not spec.has_tail_samples
    assert "tail_index" not in [d.name for d in spec.array_defs()]


@pytest.mark.parametrize("bad", [dict(tail_draws=-1, tail_sampler="x"), dict(tail_draws=4),
                                 dict(tail_sampler="draw_tail/1"),
                                 dict(tail_draws=4, tail_sampler="x", format_version=2)])
def test_spec_refuses_inconsistent_tail_fields(make_spec, bad):
    with pytest.raises(StoreError):
        dataclasses.replace(make_spec(), **bad)


def test_the_writer_refuses_rows_without_the_tail(tmp_path, make_spec):
    from store.synthetic import synthetic_rows

    spec = make_spec(tail_draws=3)
    writer = StoreWriter.create(tmp_path / "s.zarr", spec)
    block = synthetic_rows(spec, 0, 256)
    block.tail_index = None
    with pytest.raises(StoreError, match="tail_index missing"):
        writer.write_shard(0, block)


def test_an_empty_tail_is_all_padding(tmp_path, make_spec, write_store):
    spec = make_spec(k=49, tail_draws=2)
    path = write_store(tmp_path / "full.zarr", spec)
    block = StoreReader.open(path).read(0, 64)
    assert (block.tail_index == -1).all() and (block.tail_logit == -np.inf).all()


def _edit(path, array, where, value):
    data = zarr.open_array(str(path / array), mode="r+")
    data[where] = value


@pytest.mark.parametrize("edit, message", [
    ("inside-topk", "tail_index contains one of the row's top-k classes at row 300"),
    ("label", "tail_index contains the target label at row 300"),
    ("order", "tail_index is not in ascending order at row 300"),
    ("count", "tail_index has fewer than 6 draws per temperature"),
    ("logit", "tail_logit exceeds tail_lse at its temperature"),
])
def test_verify_names_a_bad_row(tail_store, monkeypatch, capsys, edit, message):
    path, spec = tail_store
    row = StoreReader.open(path).read(300, 301)
    index = row.tail_index[0, 1].copy()
    if edit == "inside-topk":
        index[-1] = row.topk_index[0, 0]
        index = np.sort(index)
    elif edit == "label":
        index[0] = row.label[0]
        index = np.sort(index)
    elif edit == "order":
        index = np.sort(index)[::-1]  # synthetic draws of a row differ: now descending
    elif edit == "count":
        index[2] = -1
    if edit == "logit":
        _edit(path, "tail_logit", (300, 1, 0), 1000.0)
    else:
        _edit(path, "tail_index", (300, 1), index)
    monkeypatch.setattr(sys, "argv", ["store", "verify", str(path)])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert f"shard 1: {message}" in out, out
    assert "in shard(s) 1;" in err
    # the reader refuses the row too, before any training step could read it
    with pytest.raises(StoreError, match="rows 256..319"):
        StoreReader.open(path).read(256, 320)


def test_draw_store_rows_is_draw_tail_with_the_row_generators():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (5, 40)).astype(np.float32)
    labels = np.arange(5)
    others = logits.copy()
    others[np.arange(5), labels] = -np.inf
    topk = np.argsort(-others, axis=1)[:, :4]
    rows = np.array([17, 3, 99, 0, 5])
    index, logit = draw_store_rows(logits, labels, topk, (1.0, 4.0), 8, 11, rows,
                                   np.dtype(np.int16))
    assert index.shape == (5, 2, 8) and index.dtype == np.int16 and logit.dtype == np.float16
    for i, r in enumerate(rows):
        for t, temperature in enumerate((1.0, 4.0)):
            d = draw_tail(logits[i], labels[i], topk[i], temperature, 8, tail_rng(11, r, t))
            assert np.array_equal(index[i, t], d.index)
            assert np.array_equal(logit[i, t], d.logit.astype(np.float16))
    assert SAMPLER == "draw_tail/1"


def test_check_block_accepts_real_draws(make_spec):
    from store.synthetic import synthetic_rows

    spec = make_spec(tail_draws=4)
    block = synthetic_rows(spec, 0, 64)
    assert check_block(block, spec)[1] == []
