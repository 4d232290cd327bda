"""Spec validation, attribute round trip and row invariants (store/schema.py)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from store import FeatureInfo, RowBlock, StoreError, StoreSpec, TeacherInfo, check_block
from store.rows import validate_block
from store.schema import FORMAT_VERSION, SEED_FILL, check_format, root_attrs
from store.synthetic import synthetic_rows

OFFSET = 5000


def test_spec_geometry(make_spec):
    spec = make_spec(num_rows=1000, chunk_rows=64, shard_rows=256)
    assert (spec.num_shards, spec.num_chunks, spec.chunks_per_shard) == (4, 16, 4)
    assert spec.shard_range(3) == (768, 1000)
    assert spec.chunk_range(15) == (960, 1000)
    assert spec.shard_of_chunk(5) == 1
    assert spec.topk_index_dtype == np.int16
    assert make_spec(num_classes=40_000).topk_index_dtype == np.int32
    with pytest.raises(StoreError, match="shard 4 is out of range"):
        spec.shard_range(4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"k": 50}, "k=50 exceeds the 49 non-target classes"),
        ({"temperatures": ()}, "at least one temperature"),
        ({"temperatures": (1.0, 1.0)}, "must be distinct"),
        ({"temperatures": (0.0,)}, "finite and > 0"),
        ({"temperatures": (math.inf,)}, "finite and > 0"),
        ({"shard_rows": 100}, "shard_rows=100 must be a multiple of chunk_rows=64"),
        ({"num_rows": 0}, "num_rows must be >= 1"),
        ({"chunk_rows": 2.5}, "chunk_rows must be an integer"),
        ({"manifest_hash": ""}, "manifest_hash must be a non-empty string"),
        ({"manifest_ids": ("a", "b\nc")}, "contains a newline"),
        ({"extra": {"x": math.nan}}, "extra must be JSON-serialisable"),
        ({"augment": {"f": object()}}, "augment must be JSON-serialisable"),
    ],
)
def test_spec_rejects(make_spec, overrides, message):
    spec = make_spec()
    with pytest.raises(StoreError, match=message):
        dataclasses.replace(spec, **overrides)


def test_teacher_class_count_must_match(make_spec):
    spec = make_spec()
    with pytest.raises(StoreError, match="teacher.num_classes=7 differs from num_classes=50"):
        dataclasses.replace(spec, teacher=TeacherInfo("x", "0", 7, 32.0, 0.2))


def test_attrs_round_trip(make_spec):
    spec = make_spec(embedding_dim=4, temperatures=[0.5, 3])
    spec = dataclasses.replace(
        spec, label_map={"speakers": ["a"], "speeds": [1.0]}, extra={"views": 3}
    )
    attrs = spec.to_attrs()
    assert "manifest_ids" not in attrs and attrs["num_utterances"] == 120
    back, num_utts = StoreSpec.from_attrs(attrs, spec.manifest_ids)
    assert back == spec and num_utts == 120
    assert back.temperatures == (0.5, 3.0)


def test_version_2_attrs_round_trip(make_spec):
    """Stored features, the teacher's epochs and class names survive to_attrs/from_attrs;
    the optional blocks are absent (not null) when unset; version-1 attrs read as v1."""
    labels = tuple(f"spk{i}" for i in range(50))
    teacher = TeacherInfo("x", "0", 50, 32.0, 0.2, "am", epoch=3, epochs=8,
                          teacher_labels=labels)
    spec = dataclasses.replace(make_spec(), teacher=teacher,
                               features=FeatureInfo(frames=198))
    attrs = spec.to_attrs()
    assert attrs["features"]["frames"] == 198 and attrs["teacher"]["teacher_labels"][1] == "spk1"
    back, _ = StoreSpec.from_attrs(json.loads(json.dumps(attrs)), spec.manifest_ids)
    assert back == spec and back.teacher.complete is False
    plain = make_spec().to_attrs()
    assert "features" not in plain and "teacher_labels" not in plain["teacher"]
    old, _ = StoreSpec.from_attrs(plain, format_version=1)
    assert old.format_version == 1 and [d.name for d in old.array_defs()][:4] == \
        ["utt", "start", "seed", "label"]
    names = [d.name for d in spec.array_defs()]
    assert names[3] == "crop_checksum" and names[-2:] == ["features", "features_checksum"]
    assert spec.bytes_per_row_raw() == make_spec().bytes_per_row_raw() + 2 * 198 * 80 + 4
    v2 = dataclasses.replace(spec, format_version=2)
    assert [d.name for d in v2.array_defs()][-1] == "features" and not v2.has_features_checksum
    with pytest.raises(StoreError, match="teacher_labels names 2 classes, the teacher has 50"):
        TeacherInfo("x", "0", 50, 32.0, 0.2, teacher_labels=("a", "b"))
    with pytest.raises(StoreError, match="stored features need cache format version 2"):
        dataclasses.replace(spec, format_version=1)


def test_crop_checksum_and_features_invariants(make_spec):
    spec = dataclasses.replace(make_spec(), features=FeatureInfo(frames=3, mel_bins=4))
    block = synthetic_rows(spec, 0, 20)
    assert block.features.shape == (20, 3, 4) and block.crop_checksum.dtype == np.int32
    validate_block(block, spec)
    bad = dataclasses.replace(block, crop_checksum=block.crop_checksum.copy(),
                              features=block.features.copy())
    bad.crop_checksum[4] = -7
    bad.features[9, 2, 1] = np.inf
    _, problems = check_block(bad, spec)
    assert "crop_checksum is negative (checksums are 31-bit) at row 4" in problems
    assert "features are not finite in float16 at row 9" in problems
    _, problems = check_block(dataclasses.replace(block, features=None), spec, features=False)
    assert problems == []
    with pytest.raises(StoreError, match="features missing"):
        validate_block(dataclasses.replace(block, features=None), spec)
    with pytest.raises(StoreError, match="crop_checksum given but the store has no such array"):
        validate_block(block, dataclasses.replace(make_spec(), format_version=1))


def test_temperature_index_and_topk(make_spec):
    spec = make_spec(temperatures=(1.0, 2.0, 4.0))
    assert spec.temperature_index(2) == 1
    assert spec.temperature_index(4.0000000001) == 2
    with pytest.raises(
        StoreError, match=r"temperature 3 is not in the store's grid \[1.0, 2.0, 4.0\]"
    ):
        spec.temperature_index(3.0)
    assert spec.check_topk(8) == 8 and spec.check_topk(0) == 0
    with pytest.raises(StoreError, match="k'=9 is not available: the store keeps the top k=8"):
        spec.check_topk(9)


def test_check_format(make_spec):
    assert check_format({"format": "entkd-teacher-cache", "format_version": 1}, "x") == 1
    attrs = root_attrs(make_spec(), "test", "now")
    assert check_format(attrs, "x") == FORMAT_VERSION == 3
    edited = {**attrs, "spec": {**attrs["spec"], "temperatures": [1.0, 4.0]}}
    with pytest.raises(StoreError, match="x/zarr.json: the 'spec' attribute block does not "
                       "match its checksum 'spec_sha256'"):
        check_format(edited, "x")
    with pytest.raises(StoreError, match="this entkd writes version 2"):
        check_format({"format": "entkd-teacher-cache", "format_version": 1}, "x", versions=(2,))
    with pytest.raises(
        StoreError, match="x has cache format version 4 but this entkd reads version 1, 2 or 3"
    ):
        check_format({"format": "entkd-teacher-cache", "format_version": FORMAT_VERSION + 1},
                     "x")
    with pytest.raises(StoreError, match="x is not an entkd cache store"):
        check_format({}, "x")


def test_valid_block_passes_and_casts(make_spec):
    spec = make_spec()
    block = synthetic_rows(spec, 0, 100)
    loose = dataclasses.replace(
        block,
        utt=block.utt.astype(np.int64),
        seed=block.seed.astype(np.int64),
        topk_index=block.topk_index.astype(np.int64),
        topk_logit=block.topk_logit.astype(np.float32),
        target_logit=block.target_logit.astype(np.float64),
    )
    checked, problems = check_block(loose, spec, OFFSET)
    assert problems == []
    assert checked.topk_index.dtype == np.int16 and checked.topk_logit.dtype == np.float16
    assert checked.seed.dtype == np.uint64 and checked.utt.dtype == np.int32
    for name, array in block.arrays().items():
        np.testing.assert_array_equal(checked.arrays()[name], array)


def _mutate(block: RowBlock, name: str, row: int, value) -> RowBlock:
    arrays = {n: a.copy() for n, a in block.arrays().items()}
    arrays[name][row] = value
    return RowBlock.from_arrays(arrays)


def test_each_invariant_names_field_and_row(make_spec):
    spec = make_spec()
    block = synthetic_rows(spec, 0, 100)
    n_tail = spec.num_classes - 1 - spec.k
    too_big_tail = math.log(n_tail) + float(block.topk_logit[8, -1]) + 1.0
    cases = [
        ("topk_logit", 5, block.topk_logit[5][::-1], "not sorted in descending order"),
        ("topk_index", 7, np.r_[block.label[7], block.topk_index[7, 1:]], "contains the target"),
        ("topk_index", 3, np.r_[block.topk_index[3, [1, 1]], block.topk_index[3, 2:]], "repeats"),
        ("label", 2, spec.num_classes, "label outside [0, 50)"),
        (
            "topk_index",
            4,
            np.r_[block.topk_index[4, :2], 50, block.topk_index[4, 3:]],
            "topk_index outside",
        ),
        ("target_logit", 1, np.nan, "target_logit is not finite"),
        ("topk_logit", 6, np.r_[np.float16(np.inf), block.topk_logit[6, 1:]], "not finite"),
        ("tail_lse", 8, [too_big_tail, block.tail_lse[8, 1]], "tail_lse exceeds"),
        ("tail_lse", 9, [np.nan, 0.0], "tail_lse is not finite"),
        ("utt", 0, 120, "not an index into the 120-utterance manifest"),
        ("utt", 10, -1, "utt is negative"),
        ("start", 11, -1, "start is negative"),
        ("seed", 12, SEED_FILL, "reserved fill value"),
    ]
    for name, row, value, message in cases:
        _, problems = check_block(_mutate(block, name, row, value), spec, OFFSET)
        assert len(problems) == 1, (name, problems)
        assert message in problems[0] and f"row {OFFSET + row}" in problems[0], problems


def test_structure_problems(make_spec):
    spec = make_spec()
    block = synthetic_rows(spec, 0, 10)
    with pytest.raises(StoreError, match=r"topk_logit has shape \(10, 7\), expected \(10, 8\)"):
        validate_block(dataclasses.replace(block, topk_logit=block.topk_logit[:, :7]), spec)
    with pytest.raises(StoreError, match="label must be integers"):
        validate_block(dataclasses.replace(block, label=block.label.astype(float)), spec)
    with pytest.raises(StoreError, match="embedding missing"):
        validate_block(block, make_spec(embedding_dim=3))
    with pytest.raises(StoreError, match="embedding given but the store has no such array"):
        validate_block(dataclasses.replace(block, embedding=np.zeros((10, 3))), spec)
    wide = block.utt.astype(np.int64)
    wide[4] = 2**40
    with pytest.raises(StoreError, match="utt does not fit int32 at row 4"):
        validate_block(dataclasses.replace(block, utt=wide), spec)


def test_full_topk_has_empty_tail(make_spec):
    spec = make_spec(num_classes=9, k=8)
    block = synthetic_rows(spec, 0, 50)
    assert np.isneginf(block.tail_lse).all()
    assert check_block(block, spec)[1] == []
    _, problems = check_block(_mutate(block, "tail_lse", 3, [0.0, 0.0]), spec)
    assert "tail_lse must be -inf" in problems[0]


def test_rowblock_helpers(make_spec):
    spec = make_spec(embedding_dim=2)
    block = synthetic_rows(spec, 0, 20)
    assert len(block) == 20 and set(block.arrays()) >= {"embedding", "tail_lse"}
    both = RowBlock.concat([block.slice(0, 5), block.slice(5, 20)])
    np.testing.assert_array_equal(both.seed, block.seed)
    np.testing.assert_array_equal(block.take([3, 1, 3]).embedding, block.embedding[[3, 1, 3]])
    assert "embedding" not in synthetic_rows(make_spec(), 0, 2).arrays()
    with pytest.raises(StoreError, match="at least one block"):
        RowBlock.concat([])
