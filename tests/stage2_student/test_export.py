"""``python -m stage2_student.export``: every architecture as ONNX and TorchScript, run by
ONNX Runtime / ``torch.jit`` within 1e-4 (max abs) of the torch model at three input
lengths other than the traced one; the settings beside the file reproduce entkd's fbank;
bad input is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from speaker.evaluation.embedders import load_embedder
from speaker.features.fbank import fbank
from speaker.models import build
from speaker.models.checkpoint import save_checkpoint
from speaker.models.export import example_input, settings_path
from stage2_student.export import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_WAVLM = {"encoder_embed_dim": 32, "encoder_num_layers": 2, "encoder_num_heads": 2,
              "encoder_ff_interm_features": 64, "encoder_pos_conv_kernel": 16,
              "encoder_pos_conv_groups": 4, "encoder_num_buckets": 32,
              "encoder_max_distance": 100, "extractor_conv_channels": 32,
              "ecapa_channels": 32, "embed_dim": 16}
ARCHS = {
    "xvector": {"channels": 32, "embed_dim": 16},
    "resnet34": {"base_width": 4, "embed_dim": 16},
    "campp": {"growth_rate": 4, "init_channels": 16, "fcm_channels": 4, "embed_dim": 16},
    "ecapa": {"channels": 32, "embed_dim": 16},
    "wavlm_ecapa": TINY_WAVLM,
}
BOUND = 1e-4  # measured: <= 2e-7 for every architecture and format (float32 reordering)
LENGTHS = (0.7, 2.9, 5.3)  # seconds; the export was traced at 2 s


def randomize_norms(model: torch.nn.Module) -> None:
    """BatchNorm statistics away from (0, 1): eval-mode BN must not be an identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def make_run(root: Path, arch: str) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build(arch, **ARCHS[arch]).eval()
    randomize_norms(model)
    run = root / arch
    run.mkdir()
    save_checkpoint(run / "model.pt", arch=arch, arch_kwargs=ARCHS[arch], model=model,
                    head=None, label_map={}, config={})
    return run, model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_export_parity(arch: str, tmp_path: Path, run_cli) -> None:
    run, model = make_run(tmp_path, arch)
    kind = model.input_kind
    # the CLI's own check (2, 4, 10 s) once; the test's lengths for both formats
    for fmt, name, check in (("onnx", "m.onnx", "--check"), ("torchscript", "m.ts", "--no-check")):
        out = tmp_path / name
        result = run_cli(cli, [run, "--format", fmt, "--out", out, check])
        assert result.exit_code == 0, result.stderr
        settings = json.loads(settings_path(out).read_text())
        assert settings["format"] == fmt and settings["arch"] == arch
        assert settings["input_kind"] == kind and settings["embed_dim"] == 16
        if check == "--check":
            assert max(settings["parity_max_abs"].values()) < BOUND
        module = load_embedder(str(out))
        assert module.input_kind == kind and module.export_settings["sample_rate"] == 16000
        for i, seconds in enumerate(LENGTHS):
            x = example_input(kind, seconds, batch=2, seed=10 + i)
            with torch.no_grad():
                diff = (model(x) - module(x)).abs().max().item()
            assert diff < BOUND, (fmt, seconds, diff)


def test_settings_reproduce_the_input(tmp_path: Path, run_cli) -> None:
    """fbank computed from the JSON alone (kaldi.fbank + its options + CMN) is entkd's."""
    run, _ = make_run(tmp_path, "xvector")
    out = tmp_path / "x.onnx"
    assert run_cli(cli, [run, "--format", "onnx", "--out", out]).exit_code == 0
    s = json.loads(settings_path(out).read_text())
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    options = {k: v for k, v in s["fbank"].items() if k != "function"}
    feats = kaldi.fbank(torch.from_numpy(wave).unsqueeze(0) * s["waveform_scale"], **options)
    feats = feats - feats.mean(dim=0, keepdim=True)
    assert not s["cmn"]["variance"] and s["input"] == "feats" and s["output"] == "embs"
    assert torch.equal(feats, fbank(wave, seed=None))
    assert "/" not in json.dumps({k: v for k, v in s.items() if k != "fbank"}).replace(
        "per utterance", "")  # no absolute paths in the settings


@pytest.mark.parametrize("what, words", [
    ("missing", ["no such file"]),
    ("empty_run", ["has no model.pt"]),
    ("not_a_model", ["checkpoint"]),
])
def test_bad_input_is_one_line(what: str, words: list[str], tmp_path: Path, run_cli) -> None:
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "not_a_model").write_bytes(b"hello")
    out = tmp_path / "m.onnx"
    result = run_cli(cli, [tmp_path / what, "--format", "onnx", "--out", out])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all(w in result.error_lines[0] for w in words), result.error_lines[0]
    assert not out.exists()


def test_help_has_examples(run_cli) -> None:
    result = run_cli(cli, ["-h"])
    assert result.exit_code == 0 and "Example" in result.stdout
