"""``load_teacher`` on ``speechbrain:DIR`` / ``wespeaker:DIR`` (speaker.teachers): missing
files and unsupported models end in one line, before any weights are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from speaker.teachers.load import load_teacher
from store.errors import UserError


def test_missing_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        load_teacher(f"wespeaker:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="no config.yaml"):
        load_teacher(f"wespeaker:{tmp_path}")
    with pytest.raises(UserError, match="missing hyperparams.yaml, embedding_model.ckpt"):
        load_teacher(f"speechbrain:{tmp_path}")


def test_speechbrain_refuses_other_embedding_models(tmp_path: Path) -> None:
    """Checked from hyperparams.yaml before any weights are read (speechbrain not needed)."""
    for name in ("embedding_model.ckpt", "classifier.ckpt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "label_encoder.txt").write_text("'a' => 0\n================\n")
    (tmp_path / "hyperparams.yaml").write_text(
        "n_mels: 24\n"
        "compute_features: !new:speechbrain.lobes.features.Fbank\n    n_mels: !ref <n_mels>\n"
        "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\n"
        "    norm_type: sentence\n    std_norm: False\n"
        "embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector\n"
        "    in_channels: !ref <n_mels>\n"
        "classifier: !new:speechbrain.lobes.models.Xvector.Classifier\n    input_shape: [1, 512]\n")
    with pytest.raises(UserError, match="Xvector.Xvector', not ECAPA_TDNN.ECAPA_TDNN"):
        load_teacher(f"speechbrain:{tmp_path}")
