"""speechbrain's side of test_speechbrain.py, run in a subprocess: importing speechbrain
into the pytest process leaves lazy modules in ``sys.modules`` whose attribute access fails
(e.g. ``speechbrain.integrations.k2_fsa`` without k2), which breaks hypothesis's scan of
``sys.modules`` in later tests.

Usage::

    python speechbrain_ref.py make DIR SPEAKERS.json SEED   # speechbrain's modules, saved,
                                                            # + DIR.labels.json: the classes
                                                            # as its CategoricalEncoder reads
    python speechbrain_ref.py logits DIR WAVES.npy OUT.npy  # EncoderClassifier.classify_batch
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.inference.classifiers import EncoderClassifier
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.processing.features import InputNormalization

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
    ecapa = ECAPA_TDNN(80, channels=[32, 32, 32, 32, 96], attention_channels=16,
                                se_channels=16, lin_neurons=24).eval()
    classifier = Classifier(24, out_neurons=len(speakers)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in ecapa.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    torch.save(ecapa.state_dict(), directory / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), directory / "classifier.ckpt")
    InputNormalization(norm_type="global", std_norm=False)._save(directory /
                                                                 "mean_var_norm_emb.ckpt")
    encoder = CategoricalEncoder()
    for speaker in speakers:
        encoder.add_label(speaker)
    encoder.save(directory / "label_encoder.txt")
    (directory / "hyperparams.yaml").write_text(
        HYPERPARAMS.format(path=directory, classes=len(speakers)))
    return directory


def speechbrain_logits(directory: Path, waves: torch.Tensor, tmp: Path) -> torch.Tensor:
    """speechbrain's own pipeline: EncoderClassifier built from the hyperparams file."""
    classifier = EncoderClassifier.from_hparams(source=str(directory),
                                                savedir=str(tmp / "sb_savedir"))
    out_prob, _, _, _ = classifier.classify_batch(waves)
    return SCALE * out_prob



def main() -> None:
    torch.set_num_threads(1)
    command, directory = sys.argv[1], Path(sys.argv[2])
    if command == "make":
        make_speechbrain_dir(directory, json.loads(Path(sys.argv[3]).read_text()),
                             int(sys.argv[4]))
        encoder = CategoricalEncoder()
        encoder.load(directory / "label_encoder.txt")
        directory.with_name(directory.name + ".labels.json").write_text(
            json.dumps([encoder.ind2lab[i] for i in range(len(encoder))]))
    elif command == "logits":
        waves = torch.from_numpy(np.load(sys.argv[3]))
        with tempfile.TemporaryDirectory() as tmp:
            np.save(sys.argv[4], speechbrain_logits(directory, waves, Path(tmp)).numpy())
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
