"""``speechbrain:DIR`` teachers against speechbrain itself (a test-only extra: skipped when
speechbrain is not installed): speechbrain's own ECAPA_TDNN and Classifier with random
weights, saved in ``spkrec-ecapa-voxceleb``'s file layout, give the same logits through
entkd's loader as through speechbrain's ``EncoderClassifier``, on random waves and on the
crops of a dump; the cache's label map is speechbrain's reading of ``label_encoder.txt``;
manifest speakers missing from it are refused or, with ``--unknown-speakers drop``, left out.

speechbrain runs in a subprocess (speechbrain_ref.py, which says why).
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.io.manifest import LabelMap, Manifest
from speaker.io.paths import DataPaths
from speaker.teachers.load import load_teacher
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer
from stage1_teacher import dump, verify
from store import StoreReader

if importlib.util.find_spec("speechbrain") is None:
    pytest.skip("speechbrain is not installed (pip install -e '.[dev]')",
                allow_module_level=True)

REF = Path(__file__).resolve().parent / "speechbrain_ref.py"


def speechbrain(*args: object) -> None:
    subprocess.run([sys.executable, str(REF), *map(str, args)], check=True,
                   capture_output=True, timeout=300)


def make_speechbrain_dir(directory: Path, speakers: list[str], seed: int = 0) -> Path:
    spec = directory.with_name(directory.name + ".speakers.json")
    spec.write_text(json.dumps(speakers))
    speechbrain("make", directory, spec, seed)
    return directory


def speechbrain_logits(directory: Path, waves: torch.Tensor, tmp: Path) -> np.ndarray:
    """``30 * classify_batch`` of speechbrain's EncoderClassifier built from the directory."""
    np.save(tmp / "waves.npy", waves.numpy())
    speechbrain("logits", directory, tmp / "waves.npy", tmp / "logits.npy")
    return np.load(tmp / "logits.npy")


def speechbrain_labels(directory: Path) -> list[str]:
    """The classes in the order speechbrain's CategoricalEncoder reads label_encoder.txt."""
    return json.loads(directory.with_name(directory.name + ".labels.json").read_text())


def toy_speakers(corpus: Path) -> list[str]:
    return Manifest.read(corpus / "train" / "manifest.jsonl").speakers


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory, toy_corpus: Path) -> Path:
    """Teacher classes: the toy corpus's speakers plus three it lacks, in shuffled order;
    read-only."""
    speakers = toy_speakers(toy_corpus) + ["id77001", "id77002", "id77003"]
    random.Random(0).shuffle(speakers)
    return make_speechbrain_dir(tmp_path_factory.mktemp("sb") / "spkrec", speakers)


def test_logits_equal_speechbrains_own(teacher_dir: Path, tmp_path: Path) -> None:
    teacher = load_teacher(f"speechbrain:{teacher_dir}")
    waves = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(5))
    logits, emb = teacher(waves)
    expected = speechbrain_logits(teacher_dir, waves, tmp_path)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-3)
    assert emb.shape == (3, 24)
    assert (teacher.scale, teacher.margin, teacher.margin_kind) == (30.0, 0.2, "aam")
    assert teacher.input_kind == "wave" and teacher.frontend.sample_rate == 16000


def test_dump_caches_speechbrains_logits(teacher_dir: Path, toy_corpus: Path, tmp_path: Path,
                                        dump_args: list[str], run_main) -> None:
    out = tmp_path / "sb.zarr"
    dump.cli.main(["--teacher", f"speechbrain:{teacher_dir}", "--data", str(toy_corpus),
                   "--out", str(out), *dump_args], standalone_mode=False)
    reader = StoreReader.open(out)
    spec, block = reader.spec, reader.read(0, len(reader))
    classes = speechbrain_labels(teacher_dir)
    assert spec.label_map == {"speakers": classes, "speeds": [1.0]}
    assert spec.teacher.arch == "speechbrain:ECAPA_TDNN" and spec.teacher.scale == 30.0
    manifest = DataPaths(data=toy_corpus).train_manifest()
    labels = [classes.index(manifest[int(u)].speaker) for u in block.utt]
    np.testing.assert_array_equal(block.label, labels)

    render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                          AugmentConfig.from_dict(spec.augment),
                          DataPaths(data=toy_corpus).noise_bank(spec.sample_rate),
                          input_kind="wave")
    rows = np.arange(0, len(block), 4)  # every 4th row: 24 crops through speechbrain
    waves = torch.stack([render(int(block.utt[r]), int(block.start[r]), int(block.seed[r]))[0]
                         for r in rows])
    expected = speechbrain_logits(teacher_dir, waves, tmp_path)
    np.testing.assert_allclose(block.target_logit[rows],
                               expected[np.arange(len(rows)), block.label[rows]],
                               rtol=1e-3, atol=2e-3)
    topk = np.take_along_axis(expected, block.topk_index[rows].astype(np.int64), axis=1)
    np.testing.assert_allclose(block.topk_logit[rows].astype(np.float32), topk,
                               rtol=2e-3, atol=2e-2)  # fp16 at |logit| <= 30: ulp 1/64
    checked = run_main(verify.main, [str(out), "--teacher", f"speechbrain:{teacher_dir}",
                                     "--data", str(toy_corpus), "--rows", "24"])
    assert checked.exit_code == 0, checked.stdout + checked.stderr


def test_unknown_speakers_refused_or_dropped(toy_corpus: Path, tmp_path: Path,
                                             dump_args: list[str], run_main, caplog) -> None:
    speakers = toy_speakers(toy_corpus)
    teacher_dir = make_speechbrain_dir(tmp_path / "spkrec", speakers[2:] + ["id77001"])
    args = ["--teacher", f"speechbrain:{teacher_dir}", "--data", str(toy_corpus), *dump_args]
    refused = run_main(dump.main, [*args, "--out", str(tmp_path / "refused.zarr")])
    assert refused.exit_code == 2 and len(refused.error_lines) == 1
    assert f"{speakers[0]}, {speakers[1]}" in refused.error_lines[0]
    assert "--unknown-speakers drop" in refused.error_lines[0]
    assert not (tmp_path / "refused.zarr").exists()

    out = tmp_path / "dropped.zarr"
    dropped = run_main(dump.main, [*args, "--out", str(out), "--unknown-speakers", "drop"])
    assert dropped.exit_code == 0, dropped.stderr
    manifest = DataPaths(data=toy_corpus).train_manifest()
    gone = {i for i, u in enumerate(manifest) if u.speaker in speakers[:2]}
    assert f"left out {len(gone)} of {len(manifest)} utterances" in caplog.text
    reader = StoreReader.open(out)
    block = reader.read(0, len(reader))
    assert len(reader) == (len(manifest) - len(gone)) * 3
    assert sorted(set(block.utt.tolist())) == sorted(set(range(len(manifest))) - gone)
    assert reader.spec.extra["speaker_mapping"]["dropped_utterances"] == len(gone)
