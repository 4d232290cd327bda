"""WavLM + ECAPA-TDNN teacher (the paper's strong teacher; Truong et al. 2023, following
the WavLM paper's speaker-verification recipe).

A :func:`torchaudio.models.wavlm_model` encoder runs on the raw waveform; the outputs of
all its transformer layers are mixed by learnable softmax weights (speaker information
peaks in the lower-middle layers, so the mix is learned rather than fixed), normalised
per utterance, and fed to ECAPA-TDNN in place of fbank features.

Unlike the fbank models, :class:`WavLMECAPA` takes **waveforms** ``[B, samples]`` at
16 kHz; :func:`speaker.models.build` marks it ``input_kind = "wave"``.

Defaults are WavLM Large (24 layers, 1024 dims, ~315M parameters). ``pretrained`` loads
encoder weights that are already on disk -- ``"WAVLM_LARGE"`` (torchaudio's bundle, looked
up in the torch hub cache) or a path to a state dict of the same shapes -- and never
downloads. Tests use a tiny random configuration:

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> m = build("wavlm_ecapa", encoder_embed_dim=32, encoder_num_layers=2,
    ...           encoder_num_heads=2, encoder_ff_interm_features=64, encoder_pos_conv_kernel=16,
    ...           encoder_pos_conv_groups=4, extractor_conv_channels=32, ecapa_channels=64,
    ...           embed_dim=48)
    >>> m(torch.randn(2, 16000)).shape, m.input_kind
    (torch.Size([2, 48]), 'wave')
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models import register
from speaker.models.ecapa_tdnn import ECAPATDNN
from store.errors import UserError

# torchaudio bundles whose weights may be used when already in the torch hub cache. Only
# Large: the Base models use a group-norm front end and post-norm layers, a different graph.
BUNDLES = ("WAVLM_LARGE",)


def _layer_norm(wave: torch.Tensor) -> torch.Tensor:
    """Layer norm over samples without affine weights. The ONNX exporter cannot take a
    normalised shape that depends on the input length, so under export the same formula is
    written out (equal up to float rounding); training and evaluation keep ``F.layer_norm``."""
    if torch.onnx.is_in_onnx_export():
        mean = wave.mean(dim=-1, keepdim=True)
        var = wave.var(dim=-1, keepdim=True, unbiased=False)
        return (wave - mean) / torch.sqrt(var + 1e-5)
    return F.layer_norm(wave, wave.shape[-1:])


class WavLMECAPA(nn.Module):
    """WavLM encoder -> softmax-weighted layer sum -> per-utterance norm -> ECAPA-TDNN."""

    sample_rate = 16000

    def __init__(self, wavlm: nn.Module, ecapa: ECAPATDNN, normalize_waveform: bool) -> None:
        super().__init__()
        self.wavlm = wavlm
        self.ecapa = ecapa
        self.normalize_waveform = normalize_waveform
        num_layers = len(wavlm.encoder.transformer.layers)
        # Zeros -> uniform mix at the start, as in the WavLM/UniSpeech SV recipe.
        self.layer_weights = nn.Parameter(torch.zeros(num_layers))
        self.embed_dim = ecapa.embed_dim

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.normalize_waveform:
            # WavLM Large was pre-trained on layer-normalised waveforms.
            wave = _layer_norm(wave)
        hidden, _ = self.wavlm.extract_features(wave)
        weights = torch.softmax(self.layer_weights, dim=0)
        feats = torch.einsum("l,lbtd->btd", weights, torch.stack(hidden))
        # Instance norm over time (like CMVN on fbank): deep layers differ in scale, and
        # ECAPA's first BatchNorm should not have to absorb that per utterance.
        mean = feats.mean(dim=1, keepdim=True)
        std = torch.sqrt(feats.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
        return self.ecapa((feats - mean) / std)


def _load_pretrained(model: nn.Module, pretrained: str) -> None:
    if pretrained in BUNDLES:
        import torchaudio

        bundle = getattr(torchaudio.pipelines, pretrained)
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(bundle._path).name
        hint = f"; place https://download.pytorch.org/torchaudio/models/{bundle._path} there"
    else:
        path = Path(pretrained)
        hint = f" (a path, or one of {', '.join(BUNDLES)} in the torch hub cache)"
    if not path.is_file():
        raise UserError(f"pretrained WavLM weights {path} not found{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(
            f"pretrained WavLM weights {path} do not fit this WavLM configuration: {exc}"
        ) from None


@register("wavlm_ecapa", input_kind="wave")
def wavlm_ecapa(
    embed_dim: int = 192,
    ecapa_channels: int = 512,
    pretrained: str | None = None,
    normalize_waveform: bool = True,
    encoder_embed_dim: int = 1024,
    encoder_num_layers: int = 24,
    encoder_num_heads: int = 16,
    encoder_ff_interm_features: int = 4096,
    encoder_pos_conv_kernel: int = 128,
    encoder_pos_conv_groups: int = 16,
    encoder_num_buckets: int = 320,
    encoder_max_distance: int = 800,
    extractor_conv_channels: int = 512,
    dropout: float = 0.1,
    layer_drop: float = 0.05,
) -> WavLMECAPA:
    """WavLM (+ optional local pretrained weights) + ECAPA; defaults are WavLM Large.

    ``pretrained`` only initialises weights; the architecture comes from the other
    arguments, so a checkpoint rebuilds without it (see :mod:`speaker.models.checkpoint`).
    """
    from torchaudio.models import wavlm_model

    # WavLM's conv front end: 20 ms frames at 16 kHz (total stride 320); only the width
    # is configurable so tiny test models keep the real frame rate.
    conv = [(extractor_conv_channels, 10, 5)]
    conv += [(extractor_conv_channels, 3, 2)] * 4 + [(extractor_conv_channels, 2, 2)] * 2
    wavlm = wavlm_model(
        extractor_mode="layer_norm",
        extractor_conv_layer_config=conv,
        extractor_conv_bias=False,
        encoder_embed_dim=encoder_embed_dim,
        encoder_projection_dropout=dropout,
        encoder_pos_conv_kernel=encoder_pos_conv_kernel,
        encoder_pos_conv_groups=encoder_pos_conv_groups,
        encoder_num_layers=encoder_num_layers,
        encoder_num_heads=encoder_num_heads,
        encoder_num_buckets=encoder_num_buckets,
        encoder_max_distance=encoder_max_distance,
        encoder_attention_dropout=dropout,
        encoder_ff_interm_features=encoder_ff_interm_features,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=dropout,
        encoder_layer_norm_first=True,
        encoder_layer_drop=layer_drop,
        aux_num_out=None,
    )
    if pretrained is not None:
        _load_pretrained(wavlm, pretrained)
    ecapa = ECAPATDNN(ecapa_channels, encoder_embed_dim, embed_dim, emb_bn=True)
    return WavLMECAPA(wavlm, ecapa, normalize_waveform)
