"""Which rows a dump writes: ``--views-from`` relabels exactly the rows of an existing cache
(and they merge into an ensemble), ``--teacher-labels`` names a teacher's classes and
``--unknown-speakers`` refuses or drops manifest speakers it lacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speaker.io.paths import DataPaths
from stage1_teacher import dump, merge, verify
from store import StoreReader


@pytest.fixture
def factories():
    """Factory teachers are named ``tests.stage1_teacher.dump_teachers:...``, importable from
    the repository root, where the tests run."""


def test_views_from_relabels_the_same_rows(tiny_dump: Path, toy_corpus: Path, dump_teachers,
                                           tmp_path: Path, run_main) -> None:
    out = tmp_path / "b.zarr"
    # View settings given here differ from the old cache's and are overridden by it.
    result = run_main(dump.main, [
        "--teacher", str(dump_teachers["b"]), "--data", str(toy_corpus), "--out", str(out),
        "--views-from", str(tiny_dump), "--views-per-utt", "2", "--seed", "9",
        "--crop-seconds", "0.5", "--topk", "3", "--workers", "0", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    old, new = StoreReader.open(tiny_dump), StoreReader.open(out)
    a, b = old.read(0, len(old)), new.read(0, len(new))
    for name in ("utt", "start", "seed", "label"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.target_logit, b.target_logit)  # another teacher's labels
    assert new.spec.k == 3 and new.spec.crop_samples == old.spec.crop_samples
    assert new.spec.extra["views_from"]["path"] == str(tiny_dump)
    checked = run_main(verify.main, [str(out), "--teacher", str(dump_teachers["b"]),
                                     "--data", str(toy_corpus), "--rows", "24"])
    assert checked.exit_code == 0, checked.stdout + checked.stderr

    ensemble = tmp_path / "ens.zarr"
    merged = run_main(merge.main, [str(tiny_dump), str(out), "--out", str(ensemble)])
    assert merged.exit_code == 0, merged.stderr
    assert StoreReader.open(ensemble).spec.k == 3


def test_views_from_an_incomplete_cache_is_refused(tiny_dump: Path, toy_corpus: Path,
                                                   dump_teachers, tmp_path: Path,
                                                   run_main) -> None:
    import shutil

    from store import StoreWriter

    old = tmp_path / "old.zarr"
    shutil.copytree(tiny_dump, old)
    StoreWriter.open(old).invalidate([1])
    out = tmp_path / "new.zarr"
    result = run_main(dump.main, ["--teacher", str(dump_teachers["b"]), "--data",
                                  str(toy_corpus), "--out", str(out), "--views-from", str(old)])
    assert result.exit_code == 2 and "incomplete" in result.error_lines[0]
    assert not out.exists()


def test_teacher_labels_and_unknown_speakers(toy_corpus: Path, tmp_path: Path,
                                             dump_args: list[str], run_main, caplog,
                                             factories) -> None:
    """tests.stage1_teacher.dump_teachers:fbank_teacher has 8 classes; name them: 6 toy speakers and 2 others."""
    manifest = DataPaths(data=toy_corpus).train_manifest()
    speakers = manifest.speakers
    labels = tmp_path / "speakers.txt"
    labels.write_text("\n".join(["id88001", *speakers[2:][::-1], "id88002"]) + "\n")
    args = ["--teacher", "tests.stage1_teacher.dump_teachers:fbank_teacher", "--teacher-labels", str(labels),
            "--data", str(toy_corpus), *dump_args]
    refused = run_main(dump.main, [*args, "--out", str(tmp_path / "refused.zarr")])
    assert refused.exit_code == 2 and len(refused.error_lines) == 1
    assert "2 manifest speaker(s)" in refused.error_lines[0]
    assert speakers[0] in refused.error_lines[0] and "--unknown-speakers drop" in \
        refused.error_lines[0]
    assert not (tmp_path / "refused.zarr").exists()

    out = tmp_path / "dropped.zarr"
    dropped = run_main(dump.main, [*args, "--unknown-speakers", "drop", "--out", str(out)])
    assert dropped.exit_code == 0, dropped.stderr
    kept = [i for i, u in enumerate(manifest) if u.speaker not in speakers[:2]]
    assert f"left out {len(manifest) - len(kept)} of {len(manifest)}" in caplog.text
    reader = StoreReader.open(out)
    block = reader.read(0, len(reader))
    assert len(reader) == 3 * len(kept) and sorted(set(block.utt.tolist())) == kept
    names = labels.read_text().split()
    assert reader.spec.label_map == {"speakers": names, "speeds": [1.0]}
    np.testing.assert_array_equal(
        block.label, [names.index(manifest[int(u)].speaker) for u in block.utt])
    assert reader.spec.extra["speaker_mapping"]["dropped_speakers"] == speakers[:2]


def test_teacher_labels_speeds_must_match(toy_corpus: Path, tmp_path: Path,
                                          dump_args: list[str], run_main, factories) -> None:
    """A label list names classes at the dump's speeds: 8 classes cannot be 8 x 2."""
    labels = tmp_path / "speakers.txt"
    labels.write_text("\n".join(DataPaths(data=toy_corpus).train_manifest().speakers))
    result = run_main(dump.main, [
        "--teacher", "tests.stage1_teacher.dump_teachers:fbank_teacher", "--teacher-labels", str(labels),
        "--data", str(toy_corpus), *dump_args, "--speeds", "1.0,1.1",
        "--out", str(tmp_path / "x.zarr")])
    assert result.exit_code == 2 and "classes" in result.error_lines[0]
