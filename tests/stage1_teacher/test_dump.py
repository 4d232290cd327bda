"""``python -m stage1_teacher.dump``: what a dump stores, exact resume after SIGKILL, errors that
leave no shard marked complete that is not, waveform teachers, and a 2-rank torchrun dump.

The toy corpus, the two random-init teacher checkpoints and the reference dump (``tiny_dump``:
teacher "a", ``DUMP_ARGS`` + ``--embeddings``, 96 rows in 3 shards) come from tests/conftest.py.
Factory teachers live in dump_teachers.py next to this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths
from speaker.teachers.load import load_teacher
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from speaker.views.view import draw_view, row_order
from stage1_teacher import dump, verify
from store import StoreError, StoreReader, StoreWriter

REPO = Path(__file__).resolve().parents[2]
ROWS, SHARDS, SHARD_ROWS = 96, 3, 32


@pytest.fixture
def factories():
    """The ``tests.stage1_teacher.dump_teachers:<factory>`` module (importable from the
    repository root, where the tests run)."""
    import tests.stage1_teacher.dump_teachers as dump_teachers

    return dump_teachers


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def dump_cmd(teacher: str | Path, data: Path, out: Path, args: list[str]) -> list[str]:
    return ["--teacher", str(teacher), "--data", str(data), "--out", str(out), *args]


def read_all(path: Path, allow_incomplete: bool = False) -> dict[str, np.ndarray]:
    reader = StoreReader.open(path, allow_incomplete=allow_incomplete)
    return reader.read(0, len(reader)).arrays()


def assert_same_store(a: Path, b: Path) -> None:
    """Every array bit-identical (float bits included), and the same attributes."""
    ra, rb = StoreReader.open(a), StoreReader.open(b)
    assert ra.spec == rb.spec
    assert ra.manifest_ids() == rb.manifest_ids()
    xa, xb = read_all(a), read_all(b)
    assert xa.keys() == xb.keys()
    for name in xa:
        assert xa[name].dtype == xb[name].dtype, name
        assert np.array_equal(xa[name], xb[name]), f"{name} differs"
        assert xa[name].tobytes() == xb[name].tobytes(), f"{name} differs in its bits"


def snapshot(path: Path) -> dict[str, tuple[str, int]]:
    """Every file of a store: (content hash, mtime) -- to prove a run left it untouched."""
    return {
        str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*")) if p.is_file()
    }


def copy_store(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy.zarr"
    shutil.copytree(src, out)
    return out


def renderer(data: Path, reader: StoreReader, input_kind: str) -> ViewRenderer:
    spec = reader.spec
    paths = DataPaths(data=data)
    return ViewRenderer(
        paths.train_manifest(), LabelMap.from_dict(spec.label_map), spec.crop_samples,
        AugmentConfig.from_dict(spec.augment), paths.noise_bank(spec.sample_rate),
        sample_rate=spec.sample_rate, input_kind=input_kind,
    )


# ---- what a dump stores ---------------------------------------------------------------------


def test_store_verify_accepts_the_dump(tiny_dump: Path):
    done = subprocess.run([sys.executable, "-m", "store", "verify", str(tiny_dump)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout and f"{ROWS} rows in {SHARDS} shards" in done.stdout


def test_dump_rows_and_attributes(tiny_dump: Path, toy_corpus: Path, dump_teachers):
    reader = StoreReader.open(tiny_dump)
    spec = reader.spec
    manifest = DataPaths(data=toy_corpus).train_manifest()
    label_map = LabelMap.from_manifest(manifest)
    assert (spec.num_rows, spec.num_shards, spec.k) == (ROWS, SHARDS, 4)
    assert spec.temperatures == (1.0, 2.0, 4.0)
    assert spec.crop_samples == 16000 and spec.sample_rate == 16000
    assert spec.embedding_dim == 32
    assert spec.num_classes == label_map.num_classes == 8
    assert spec.manifest_hash == manifest.content_hash()
    assert reader.manifest_ids() == tuple(manifest.ids)
    assert spec.label_map == label_map.to_dict()
    teacher = load_teacher(str(dump_teachers["a"]))
    assert spec.teacher.arch == "xvector"
    assert spec.teacher.checkpoint_sha256 == teacher.sha256
    assert (spec.teacher.scale, spec.teacher.margin) == (32.0, 0.2)
    assert spec.extra["run_seed"] == 3 and spec.extra["views_per_utt"] == 3
    assert spec.extra["input_kind"] == "fbank"

    assert spec.extra["row_order"] == "shuffled"

    rows = read_all(tiny_dump)
    row = np.arange(ROWS)
    slot = row_order(ROWS, 3)  # (utterance, view) written at each row
    assert np.array_equal(np.sort(slot), row)  # every view exactly once
    assert np.array_equal(rows["utt"], slot // 3)
    assert not np.all(np.diff(rows["utt"]) >= 0)  # not in manifest order
    views = [draw_view(3, r, manifest[u].num_samples, 16000) for r, u in zip(row, slot // 3,
                                                                              strict=True)]
    assert np.array_equal(rows["start"], [s for s, _ in views])
    assert np.array_equal(rows["seed"], np.array([d for _, d in views], dtype=np.uint64))
    speakers = [label_map.index(manifest[u].speaker) for u in rows["utt"]]
    assert np.array_equal(rows["label"], speakers)
    assert len(np.unique(rows["seed"])) == ROWS


def test_dump_holds_the_teachers_outputs(tiny_dump: Path, toy_corpus: Path, dump_teachers):
    """Replaying rows through the teacher gives the stored logits, top-k and embeddings."""
    reader = StoreReader.open(tiny_dump)
    block = reader.take(np.arange(SHARD_ROWS, SHARD_ROWS + 12))  # the first batch of shard 1
    render = renderer(toy_corpus, reader, "fbank")
    x = torch.stack([render(u, s, d)[0] for u, s, d in zip(block.utt, block.start, block.seed,
                                                            strict=True)])
    logits, emb = load_teacher(str(dump_teachers["a"]))(x)
    logits, emb = logits.numpy(), emb.numpy()
    rows = np.arange(len(block))
    np.testing.assert_allclose(block.target_logit, logits[rows, block.label], rtol=1e-5, atol=1e-5)
    masked = logits.copy()
    masked[rows, block.label] = -np.inf
    order = np.argsort(-masked, axis=1)[:, :4]
    assert np.array_equal(np.sort(block.topk_index, axis=1), np.sort(order, axis=1))
    np.testing.assert_allclose(block.topk_logit.astype(np.float32),
                               np.take_along_axis(logits, order, axis=1), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(block.embedding.astype(np.float32), emb, rtol=2e-3, atol=2e-3)


def test_workers_do_not_change_rows(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                    dump_args: list[str], tmp_path: Path, run_main):
    out = tmp_path / "workers.zarr"
    args = [*dump_args, "--embeddings"]
    args[args.index("--workers") + 1] = "2"
    result = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, out, args))
    assert result.exit_code == 0, result.stderr
    assert_same_store(out, tiny_dump)


# ---- kill -9 and --resume -------------------------------------------------------------------


def test_sigkill_then_resume_equals_uninterrupted_dump(
    tiny_dump: Path, toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path,
    sigkill_after_first_shard,
):
    out = tmp_path / "logits.zarr"
    command = [sys.executable, "-m", "stage1_teacher.dump",
               *dump_cmd(dump_teachers["a"], toy_corpus, out, [*dump_args, "--embeddings"])]
    sigkill_after_first_shard(command, out, tmp_path / "killed.log")

    killed = StoreReader.open(out, allow_incomplete=True)
    missing = killed.missing_shards()
    assert 1 <= len(missing) < SHARDS, f"kill came too late or too early: missing {missing}"
    with pytest.raises(StoreError, match="incomplete"):
        StoreReader.open(out)

    done = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # only the shards that were not complete are computed again
    assert f"wrote {len(missing) * SHARD_ROWS} rows" in done.stdout
    assert_same_store(out, tiny_dump)


def test_resume_of_a_complete_store_writes_nothing(
    tiny_dump: Path, toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path,
    run_main,
):
    out = copy_store(tiny_dump, tmp_path)
    before = snapshot(out)
    result = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, out,
                                          [*dump_args, "--embeddings", "--resume"]))
    assert result.exit_code == 0, result.stderr
    assert "wrote 0 rows" in result.stdout
    assert snapshot(out) == before


# ---- errors: one line, exit 2, nothing marked complete that is not --------------------------


def assert_one_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    for needle in needles:
        assert needle in line, line
    return line


def test_existing_out_without_resume(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                     dump_args: list[str], tmp_path: Path, run_main):
    out = copy_store(tiny_dump, tmp_path)
    before = snapshot(out)
    result = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, out,
                                          [*dump_args, "--embeddings"]))
    assert_one_error(result, str(out), "--resume")
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--topk", "3", "topk"),
        ("--seed", "4", "seed"),
        ("--views-per-utt", "2", "num_rows"),
        ("--temperatures", "1,2", "temperatures"),
        ("--no-embeddings", None, "embedding_dim"),
        ("--teacher", "b", "teacher"),
    ],
)
def test_resume_with_other_settings_is_refused(
    tiny_dump: Path, toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path,
    run_main, option: str, value: str | None, needle: str,
):
    out = copy_store(tiny_dump, tmp_path)
    StoreWriter.open(out).invalidate([1, 2])  # so that a resume would have shards to write
    before = snapshot(out)
    args, teacher = [*dump_args, "--embeddings", "--resume"], dump_teachers["a"]
    if option == "--teacher":
        teacher = dump_teachers[value]
    elif option == "--no-embeddings":
        args.remove("--embeddings")
    else:
        args[args.index(option) + 1] = value
    result = run_main(dump.main, dump_cmd(teacher, toy_corpus, out, args))
    line = assert_one_error(result, str(out), "different", "same settings")
    assert needle in line
    assert snapshot(out) == before


def test_teacher_with_other_class_count(toy_corpus: Path, dump_args: list[str], tmp_path: Path,
                                        run_main, factories):
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, dump_cmd("tests.stage1_teacher.dump_teachers:wrong_classes", toy_corpus, out,
                                          dump_args))
    assert_one_error(result, "7 classes", "8")
    assert not out.exists()


def test_checkpoint_with_other_label_map(toy_corpus: Path, dump_teachers, dump_args: list[str],
                                         tmp_path: Path, run_main):
    """Speed perturbation doubles the classes: the checkpoint's label map no longer fits."""
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, dump_cmd(dump_teachers["a"], toy_corpus, out,
                                          [*dump_args, "--speeds", "1.0,1.1"]))
    assert_one_error(result, "label map")
    assert not out.exists()


def test_embeddings_from_a_teacher_without_them(toy_corpus: Path, dump_args: list[str],
                                                tmp_path: Path, run_main, factories):
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, dump_cmd("tests.stage1_teacher.dump_teachers:fbank_teacher", toy_corpus, out,
                                          [*dump_args, "--embeddings"]))
    assert_one_error(result, "--embeddings", "no embeddings")
    assert not out.exists()


def test_nan_teacher_output(toy_corpus: Path, dump_args: list[str], tmp_path: Path, run_main,
                            factories):
    """NaN in the first batch of shard 1: shard 0 (done before) stays complete and sound,
    shards 1 and 2 are not marked complete, and the store is not reported complete."""
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, dump_cmd("tests.stage1_teacher.dump_teachers:nan_in_second_shard", toy_corpus, out,
                                          dump_args))
    assert_one_error(result, "NaN")
    reader = StoreReader.open(out, allow_incomplete=True)
    assert reader.missing_shards() == [1, 2]
    good = reader.read(0, SHARD_ROWS)
    assert np.isfinite(good.target_logit).all() and np.isfinite(good.topk_logit).all()
    with pytest.raises(StoreError, match="not written yet"):
        reader.read(SHARD_ROWS, SHARD_ROWS + 1)
    with pytest.raises(StoreError, match="incomplete"):
        StoreReader.open(out)
    strict = subprocess.run([sys.executable, "-m", "store", "verify", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert strict.returncode != 0 and "ok:" not in strict.stdout
    # what is marked complete passes checksums and every row invariant
    lenient = subprocess.run([sys.executable, "-m", "store", "verify", "--allow-incomplete",
                              str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr


def manifest_with(toy_corpus: Path, tmp_path: Path, utt: int, path: Path) -> list[str]:
    """Data options: the toy training manifest with utterance ``utt`` read from ``path``."""
    lines = []
    for i, line in enumerate((toy_corpus / "train" / "manifest.jsonl").read_text().splitlines()):
        entry = json.loads(line)
        entry["path"] = str(path if i == utt else toy_corpus / "train" / entry["path"])
        lines.append(json.dumps(entry))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return ["--train", str(manifest), "--musan", str(toy_corpus / "musan"),
            "--rirs", str(toy_corpus / "rirs")]


def test_missing_audio_is_found_before_writing(toy_corpus: Path, dump_teachers,
                                               dump_args: list[str], tmp_path: Path, run_main):
    data = manifest_with(toy_corpus, tmp_path, 20, tmp_path / "gone.wav")
    out = tmp_path / "logits.zarr"
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), *data, "--out", str(out),
                                  *dump_args])
    assert_one_error(result, "gone.wav", "does not exist")
    assert not out.exists()


def test_corrupt_audio_in_a_worker(toy_corpus: Path, dump_teachers, dump_args: list[str],
                                   tmp_path: Path, run_main):
    """An utterance first met in shard 1 cannot be decoded: the worker's error is one line,
    shard 0 stays complete, nothing after it is marked complete."""
    first_shard = np.full(ROWS // 3, SHARDS)  # shard of each utterance's first view
    for row, slot in enumerate(row_order(ROWS, 3)):
        first_shard[slot // 3] = min(first_shard[slot // 3], row // SHARD_ROWS)
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    data = manifest_with(toy_corpus, tmp_path, int(np.flatnonzero(first_shard == 1)[0]), bad)
    out = tmp_path / "logits.zarr"
    args = [*dump_args]
    args[args.index("--workers") + 1] = "1"
    result = run_main(dump.main, ["--teacher", str(dump_teachers["a"]), *data, "--out", str(out),
                                  *args])
    assert_one_error(result, "corrupt.wav")
    assert StoreReader.open(out, allow_incomplete=True).missing_shards() == [1, 2]


# ---- waveform teachers ----------------------------------------------------------------------


def test_wave_teacher_gets_waveform_crops(toy_corpus: Path, dump_args: list[str], tmp_path: Path,
                                          run_main, factories):
    """A teacher with input_kind="wave" is fed the augmented crops themselves, crop-length,
    and its cache replays; k = C - 1 leaves an empty tail (-inf)."""
    out = tmp_path / "wave.zarr"
    args = [*dump_args]
    args[args.index("--topk") + 1] = "7"
    result = run_main(dump.main, dump_cmd("tests.stage1_teacher.dump_teachers:wave", toy_corpus, out, args))
    assert result.exit_code == 0, result.stderr

    seen = factories.SEEN_WAVES
    assert [tuple(x.shape) for x in seen] == [(1, 16000)] + [(12, 16000), (12, 16000),
                                                            (8, 16000)] * SHARDS
    assert all(x.dtype == torch.float32 for x in seen)
    reader = StoreReader.open(out)
    spec = reader.spec
    assert spec.crop_samples == 16000 and spec.extra["input_kind"] == "wave"
    assert spec.teacher.arch == "tests.stage1_teacher.dump_teachers:wave"
    assert (spec.teacher.scale, spec.teacher.margin) == (30.0, 0.3)
    rows = read_all(out)
    assert (rows["tail_lse"] == -np.inf).all()
    assert "embedding" not in rows

    # the batches are the replayed views of the store's rows, in row order
    render = renderer(toy_corpus, reader, "wave")
    fed = torch.cat(seen[1:])
    for r in (0, 1, 17, 50, ROWS - 1):
        wave, label = render(rows["utt"][r], rows["start"][r], rows["seed"][r])
        assert label == rows["label"][r]
        assert torch.equal(fed[r], wave), f"row {r} was fed another waveform"

    checked = run_main(verify.main, [str(out), "--teacher", "tests.stage1_teacher.dump_teachers:wave",
                                     "--data", str(toy_corpus), "--rows", "32"])
    assert checked.exit_code == 0, checked.stdout + checked.stderr


# ---- torchrun -------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                               dump_args: list[str], tmp_path: Path):
    """2 ranks (gloo, CPU) take shards 0, 2 and 1; the store equals the 1-process dump."""
    out = tmp_path / "ranks.zarr"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "stage1_teacher.dump",
               *dump_cmd(dump_teachers["a"], toy_corpus, out, [*dump_args, "--embeddings"])]
    done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("wrote 64 rows") == 1 and done.stdout.count("wrote 32 rows") == 1
    assert_same_store(out, tiny_dump)


# ---- stored student features ----------------------------------------------------------------


@pytest.mark.parametrize("teacher", ["a", "tests.stage1_teacher.dump_teachers:wave"])
def test_store_features_holds_each_rows_student_fbank(
    teacher: str, tiny_dump: Path, toy_corpus: Path, dump_teachers, dump_args: list[str],
    tmp_path: Path, run_main, factories,
):
    """--store-features: every row's fbank (what a student replays) in float16, for an
    fbank teacher (its own input) and a waveform teacher (computed besides); the soft
    labels are those of the dump without features; both verifiers cover the new array."""
    spec_of = str(dump_teachers["a"]) if teacher == "a" else teacher
    out = tmp_path / "features.zarr"
    extra = ["--embeddings"] if teacher == "a" else ["--topk", "7"]
    result = run_main(dump.main, dump_cmd(spec_of, toy_corpus, out, [*dump_args, *extra,
                                                                     "--store-features"]))
    assert result.exit_code == 0, result.stderr
    reader = StoreReader.open(out)
    features = reader.spec.features
    assert (features.frames, features.mel_bins) == (98, 80)  # 1-s crops, 25/10 ms frames
    block = reader.read(0, ROWS, features=True)
    assert block.features.dtype == np.float16 and block.features.shape == (ROWS, 98, 80)
    if teacher == "a":
        want = StoreReader.open(tiny_dump).read(0, ROWS)
        for name, array in want.arrays().items():
            assert np.array_equal(block.arrays()[name], array), name
    render = renderer(toy_corpus, reader, "fbank")
    for r in (0, 5, 40, ROWS - 1):
        x, _ = render(block.utt[r], block.start[r], block.seed[r])
        assert np.array_equal(block.features[r], x.to(torch.float16).numpy()), f"row {r}"
    done = subprocess.run([sys.executable, "-m", "store", "verify", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "(stored features included)" in done.stdout, done.stdout
    checked = run_main(verify.main, [str(out), "--teacher", spec_of, "--data",
                                     str(toy_corpus), "--rows", "32"])
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    assert re.search(r"  features +max \|diff\| \S+ += \S+x tolerance  pass", checked.stdout)


def test_verify_fails_on_stored_features_that_are_not_the_replay(
    toy_corpus: Path, dump_teachers, dump_args: list[str], tmp_path: Path, run_main,
):
    out = tmp_path / "features.zarr"
    args = dump_cmd(dump_teachers["a"], toy_corpus, out, [*dump_args, "--store-features"])
    assert run_main(dump.main, args).exit_code == 0
    writer = StoreWriter.open(out)
    block = StoreReader.open(out).read(*writer.shard_rows_range(1), features=True)
    block.features = (block.features.astype(np.float32) + 0.05).astype(np.float16)
    block.features_checksum = None  # the writer binds the new features to their rows
    writer.write_shard(1, block)  # valid rows, other features
    checked = run_main(verify.main, [str(out), "--teacher", str(dump_teachers["a"]),
                                     "--data", str(toy_corpus), "--rows", "96"])
    assert checked.exit_code == 1
    assert re.search(r"  features +max \|diff\| \S+ += \S+x tolerance  FAIL", checked.stdout)
    assert "worst: features" in checked.error_lines[0]
