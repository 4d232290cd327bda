"""WavLM + ECAPA teacher on a tiny random configuration (CPU, no downloads)."""

from __future__ import annotations

import pytest
import torch

import speaker.models.wavlm_ecapa as wavlm_ecapa_module
from speaker.models import build
from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from store.errors import UserError

TINY = {
    "encoder_embed_dim": 32,
    "encoder_num_layers": 2,
    "encoder_num_heads": 2,
    "encoder_ff_interm_features": 64,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_buckets": 32,
    "encoder_max_distance": 100,
    "extractor_conv_channels": 32,
    "ecapa_channels": 64,
    "embed_dim": 48,
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build("wavlm_ecapa", **TINY)


def test_forward_takes_waveforms(tiny):
    assert tiny.input_kind == "wave" and tiny.embed_dim == 48
    tiny.train()
    out = tiny(torch.randn(2, 16000))  # 1 s -> 49 WavLM frames
    assert out.shape == (2, 48) and torch.isfinite(out).all()
    out.sum().backward()
    # The layer mix is learned: one weight per transformer layer, and it gets a gradient.
    assert tiny.layer_weights.shape == (2,)
    assert tiny.layer_weights.grad is not None and tiny.layer_weights.grad.abs().sum() > 0
    tiny.zero_grad()


def test_eval_is_deterministic_and_batch_independent(tiny):
    tiny.eval()
    wave = torch.randn(3, 12000)
    with torch.no_grad():
        torch.testing.assert_close(tiny(wave)[1:2], tiny(wave[1:2]), rtol=1e-4, atol=1e-5)


def test_pretrained_bundle_missing_from_cache_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match="wavlm_large.pth"):
        build("wavlm_ecapa", pretrained="WAVLM_LARGE", **TINY)


def test_pretrained_from_a_local_state_dict(tmp_path, tiny):
    path = tmp_path / "wavlm.pt"
    torch.save(tiny.wavlm.state_dict(), path)
    torch.manual_seed(123)
    model = build("wavlm_ecapa", pretrained=str(path), **TINY)
    for name, tensor in tiny.wavlm.state_dict().items():
        assert torch.equal(model.wavlm.state_dict()[name], tensor), name
    with pytest.raises(UserError, match="do not fit"):
        build("wavlm_ecapa", pretrained=str(path), **{**TINY, "encoder_embed_dim": 64})


def test_checkpoint_round_trip_does_not_need_the_pretrained_file(tmp_path, tiny, monkeypatch):
    weights = tmp_path / "wavlm.pt"
    torch.save(tiny.wavlm.state_dict(), weights)
    kwargs = {**TINY, "pretrained": str(weights)}
    model = build("wavlm_ecapa", **kwargs).eval()
    save_checkpoint(
        tmp_path / "teacher.pt",
        arch="wavlm_ecapa",
        arch_kwargs=kwargs,
        model=model,
        head=None,
        label_map={},
        config={},
    )
    weights.unlink()
    loaded = load_checkpoint(tmp_path / "teacher.pt")
    assert loaded.arch_kwargs["pretrained"] == str(weights)
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.equal(loaded.model(wave), model(wave))


def test_only_wavlm_large_is_offered_as_a_bundle():
    assert wavlm_ecapa_module.BUNDLES == ("WAVLM_LARGE",)
