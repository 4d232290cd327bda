"""``speechbrain:DIR`` teachers against speechbrain itself (a test-only extra: skipped when
speechbrain is not installed): speechbrain's own ECAPA_TDNN and Classifier with random
weights, saved in ``spkrec-ecapa-voxceleb``'s file layout, give the same logits through
entkd's loader as through speechbrain's ``EncoderClassifier``, on random waves and on the
crops of a dump; the cache's label map is the one in ``label_encoder.txt``; manifest
speakers missing from it are refused or, with ``--unknown-speakers drop``, left out."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from speaker.augment import AugmentConfig
from speaker.data import LabelMap, Manifest
from speaker.dataset import ViewRenderer
from speaker.recipe import DataPaths
from speaker.teacher import load_teacher
from stage1_teacher import dump, verify
from store import StoreReader

sb_ecapa = pytest.importorskip("speechbrain.lobes.models.ECAPA_TDNN")
sb_encoder = pytest.importorskip("speechbrain.dataio.encoder")
sb_classifiers = pytest.importorskip("speechbrain.inference.classifiers")

SCALE = 30.0  # speechbrain's VoxCeleb recipe AAM scale (the hyperparams name no loss)

# spkrec-ecapa-voxceleb's hyperparams.yaml, with a small ECAPA (channels, attention, lin).
HYPERPARAMS = """\
# Model: ECAPA big for Speaker verification (layout of speechbrain/spkrec-ecapa-voxceleb)
n_mels: 80
pretrained_path: {path}
out_n_neurons: {classes}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 24

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 24
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def make_speechbrain_dir(directory: Path, speakers: list[str], seed: int = 0) -> Path:
    """speechbrain's own modules, random weights (and BN statistics), saved as the pretrained
    model ships them."""
    directory.mkdir(parents=True)
    torch.manual_seed(seed)
    ecapa = sb_ecapa.ECAPA_TDNN(80, channels=[32, 32, 32, 32, 96], attention_channels=16,
                                se_channels=16, lin_neurons=24).eval()
    classifier = sb_ecapa.Classifier(24, out_neurons=len(speakers)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in ecapa.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    torch.save(ecapa.state_dict(), directory / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), directory / "classifier.ckpt")
    from speechbrain.processing.features import InputNormalization

    InputNormalization(norm_type="global", std_norm=False)._save(directory /
                                                                 "mean_var_norm_emb.ckpt")
    encoder = sb_encoder.CategoricalEncoder()
    for speaker in speakers:
        encoder.add_label(speaker)
    encoder.save(directory / "label_encoder.txt")
    (directory / "hyperparams.yaml").write_text(
        HYPERPARAMS.format(path=directory, classes=len(speakers)))
    return directory


def speechbrain_logits(directory: Path, waves: torch.Tensor, tmp: Path) -> torch.Tensor:
    """speechbrain's own pipeline: EncoderClassifier built from the hyperparams file."""
    classifier = sb_classifiers.EncoderClassifier.from_hparams(
        source=str(directory), savedir=str(tmp / "sb_savedir"))
    out_prob, _, _, _ = classifier.classify_batch(waves)
    return SCALE * out_prob


def toy_speakers(corpus: Path) -> list[str]:
    return Manifest.read(corpus / "train" / "manifest.jsonl").speakers


@pytest.fixture
def teacher_dir(tmp_path: Path, toy_corpus: Path) -> Path:
    """Teacher classes: the toy corpus's speakers plus three it lacks, in shuffled order."""
    speakers = toy_speakers(toy_corpus) + ["id77001", "id77002", "id77003"]
    random.Random(0).shuffle(speakers)
    return make_speechbrain_dir(tmp_path / "spkrec", speakers)


def test_logits_equal_speechbrains_own(teacher_dir: Path, tmp_path: Path) -> None:
    teacher = load_teacher(f"speechbrain:{teacher_dir}")
    waves = 0.1 * torch.randn(3, 16000, generator=torch.Generator().manual_seed(5))
    logits, emb = teacher(waves)
    expected = speechbrain_logits(teacher_dir, waves, tmp_path)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-3)
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
    encoder = sb_encoder.CategoricalEncoder()
    encoder.load(teacher_dir / "label_encoder.txt")
    assert spec.label_map["speakers"] == [encoder.ind2lab[i] for i in range(len(encoder))]
    assert spec.teacher.arch == "speechbrain:ECAPA_TDNN" and spec.teacher.scale == SCALE
    manifest = DataPaths(data=toy_corpus).train_manifest()
    labels = [encoder.lab2ind[manifest[int(u)].speaker] for u in block.utt]
    np.testing.assert_array_equal(block.label, labels)

    render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                          AugmentConfig.from_dict(spec.augment),
                          DataPaths(data=toy_corpus).noise_bank(spec.sample_rate),
                          input_kind="wave")
    rows = np.arange(0, len(block), 4)  # every 4th row: 24 crops through speechbrain
    waves = torch.stack([render(int(block.utt[r]), int(block.start[r]), int(block.seed[r]))[0]
                         for r in rows])
    expected = speechbrain_logits(teacher_dir, waves, tmp_path).numpy()
    np.testing.assert_allclose(block.target_logit[rows], expected[np.arange(len(rows)),
                               block.label[rows]], rtol=1e-3, atol=2e-3)
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
    assert not gone & set(block.utt.tolist())
    assert sorted(set(block.utt.tolist())) == sorted(set(range(len(manifest))) - gone)
    assert reader.spec.extra["speaker_mapping"]["dropped_utterances"] == len(gone)
