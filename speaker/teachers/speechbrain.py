"""speechbrain speaker models as teachers: ``--teacher speechbrain:DIR``.

``DIR`` is laid out as speechbrain's ``spkrec-ecapa-voxceleb`` ships it:
``hyperparams.yaml`` (``compute_features: !new:speechbrain.lobes.features.Fbank``,
``mean_var_norm: InputNormalization`` at sentence level, ``embedding_model: ECAPA_TDNN``,
``classifier: Classifier``), ``embedding_model.ckpt`` and ``classifier.ckpt`` (state dicts)
and ``label_encoder.txt`` (the training speakers, :mod:`speaker.teachers.labels`).
``mean_var_norm_emb`` is not used: speechbrain's ``classify_batch`` does not apply it.

speechbrain itself is not needed: this module re-implements, key for key, the parts those
files describe -- speechbrain's Fbank (centred STFT, its own triangular mel filters, dB with an
80 dB floor) with sentence mean normalisation, ``ECAPA_TDNN`` (``TDNNBlock`` = conv with
"same" reflect padding -> ReLU -> BN; its Res2Net, SE and attentive pooling) and
``Classifier`` (cosine to each class's weight). The teacher takes waveforms
(``input_kind="wave"``) and computes its own features, so no fbank conversion is needed;
it declares the sample rate of its Fbank. Configurations outside what the pretrained model
uses (linear blocks in the classifier, grouped convolutions, another activation, deltas,
another normalisation) are refused with one line.

Logits are ``scale * cos``. The classifier returns the cosine only: the scale and margin of
its training loss live in the training recipe, not in the inference ``hyperparams.yaml``.
They are read from an ``AdditiveAngularMargin`` (AAM) or ``AngularMargin`` (AM) entry if
the file has one, else speechbrain's VoxCeleb recipe values (``train_ecapa_tdnn.yaml``:
``LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))``) are used.

Example::

    teacher = load_speechbrain(Path("pretrained/spkrec-ecapa-voxceleb"))
    logits, emb = teacher(waves)   # waves [B, samples] at 16 kHz, logits [B, 7205]
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speaker.models.heads import AAMSoftmax
from speaker.teachers.base import CheckpointTeacher, Teacher
from speaker.teachers.files import files_sha256, load_into, load_state, read_yaml
from speaker.teachers.frontend import Frontend
from speaker.teachers.labels import label_map_for, read_label_list
from store.errors import UserError

log = logging.getLogger(__name__)

RECIPE_SCALE, RECIPE_MARGIN = 30.0, 0.2  # speechbrain recipes/VoxCeleb/SpeakerRec
FILES = ("hyperparams.yaml", "embedding_model.ckpt", "classifier.ckpt", "label_encoder.txt")


# ---- speechbrain's front-end ------------------------------------------------------------


class SpeechBrainFbank(nn.Module):
    """speechbrain ``Fbank`` (no deltas/context) + sentence-level mean normalisation.

    ``wave [B, n]`` in [-1, 1] -> ``[B, frames, n_mels]`` with ``frames = n // hop + 1``.
    """

    def __init__(self, n_mels: int = 40, sample_rate: int = 16000, f_min: float = 0.0,
                 f_max: float | None = None, n_fft: int = 400, win_length: float = 25,
                 hop_length: float = 10, top_db: float = 80.0, amin: float = 1e-10):
        super().__init__()
        self.n_fft, self.top_db, self.amin = n_fft, top_db, amin
        self.win = int(round(sample_rate / 1000.0 * win_length))
        self.hop = int(round(sample_rate / 1000.0 * hop_length))
        self.register_buffer("window", torch.hamming_window(self.win), persistent=False)
        f_max = sample_rate // 2 if f_max is None else f_max
        # speechbrain's Filterbank: centres equally spaced on the mel scale (float32, as
        # there), triangles of half-width `band` over the STFT bin frequencies.
        mel = torch.linspace(_to_mel(f_min), _to_mel(f_max), n_mels + 2)
        hz = 700 * (10 ** (mel / 2595) - 1)
        band, centre = (hz[1:] - hz[:-1])[:-1], hz[1:-1]
        freqs = torch.linspace(0, sample_rate // 2, n_fft // 2 + 1)
        slope = (freqs.unsqueeze(0) - centre.unsqueeze(1)) / band.unsqueeze(1)
        matrix = torch.clamp(torch.minimum(slope + 1.0, 1.0 - slope), min=0.0).transpose(0, 1)
        self.register_buffer("mel_matrix", matrix.contiguous(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # float32 as speechbrain's fwd_default_precision: under CUDA autocast the mel matmul
        # would run in float16, whose range ends above the 1e-10 floor (log10(0) = -inf).
        with torch.autocast(wave.device.type, enabled=False):
            return self._features(wave.float())

    def _features(self, wave: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(wave, self.n_fft, self.hop, self.win, self.window, center=True,
                          pad_mode="constant", normalized=False, onesided=True,
                          return_complex=True)
        power = torch.view_as_real(stft).pow(2).sum(-1).transpose(1, 2)  # [B, frames, bins]
        db = 10.0 * torch.log10(torch.clamp(power @ self.mel_matrix, min=self.amin))
        floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
        db = torch.maximum(db, floor)
        return db - db.mean(dim=1, keepdim=True)


def _to_mel(hz: float) -> float:
    return 2595 * math.log10(1 + hz / 700)


# ---- speechbrain's ECAPA_TDNN (parameter names as in its state dicts) ----------------------


class _Conv(nn.Module):
    """speechbrain ``Conv1d`` with ``padding="same"``: reflect-pad dilation*(k-1)/2 per side."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.pad = dilation * (kernel_size - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, self.pad), mode="reflect") if self.pad else x)


class _BatchNorm(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class _TDNN(nn.Module):
    """conv -> ReLU -> BN (speechbrain's order)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.conv = _Conv(in_channels, out_channels, kernel_size, dilation)
        self.norm = _BatchNorm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class _Res2Net(nn.Module):
    """speechbrain's Res2Net: chunk 0 passes, chunk 1 is convolved alone, chunk i > 1 with
    the previous output added (wespeaker's adds from chunk 1 on: the two differ)."""

    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int):
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(
            _TDNN(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for i, chunk in enumerate(torch.chunk(x, self.scale, dim=1)):
            out.append(chunk if i == 0 else self.blocks[i - 1](chunk if i == 1 else chunk + out[-1]))
        return torch.cat(out, dim=1)


class _SE(nn.Module):
    def __init__(self, channels: int, se_channels: int):
        super().__init__()
        self.conv1 = _Conv(channels, se_channels, 1)
        self.conv2 = _Conv(se_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)
        return torch.sigmoid(self.conv2(F.relu(self.conv1(s)))) * x


class _SERes2NetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, scale: int, se_channels: int,
                 kernel_size: int, dilation: int):
        super().__init__()
        self.tdnn1 = _TDNN(in_channels, out_channels, 1, 1)
        self.res2net_block = _Res2Net(out_channels, scale, kernel_size, dilation)
        self.tdnn2 = _TDNN(out_channels, out_channels, 1, 1)
        self.se_block = _SE(out_channels, se_channels)
        self.shortcut = _Conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual


def _weighted_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = (w * x).sum(dim=2)
    std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp(1e-12))
    return mean, std


class _AttentiveStatsPool(nn.Module):
    def __init__(self, channels: int, attention_channels: int, global_context: bool):
        super().__init__()
        self.global_context = global_context
        self.tdnn = _TDNN(channels * 3 if global_context else channels, attention_channels, 1, 1)
        self.conv = _Conv(attention_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        attn = x
        if self.global_context:
            mean, std = _weighted_stats(x, torch.full_like(x[:, :1], 1.0 / frames))
            attn = torch.cat([x, mean.unsqueeze(2).expand_as(x), std.unsqueeze(2).expand_as(x)], 1)
        weights = torch.softmax(self.conv(torch.tanh(self.tdnn(attn))), dim=2)
        return torch.cat(_weighted_stats(x, weights), dim=1).unsqueeze(2)


class SpeechBrainECAPA(nn.Module):
    """speechbrain ``ECAPA_TDNN``: features ``[B, T, input_size]`` -> ``[B, lin_neurons]``."""

    def __init__(self, input_size: int, lin_neurons: int = 192,
                 channels: tuple[int, ...] = (512, 512, 512, 512, 1536),
                 kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1),
                 dilations: tuple[int, ...] = (1, 2, 3, 4, 1), attention_channels: int = 128,
                 res2net_scale: int = 8, se_channels: int = 128, global_context: bool = True):
        super().__init__()
        if not len(channels) == len(kernel_sizes) == len(dilations) >= 3:
            raise UserError("ECAPA_TDNN: channels, kernel_sizes and dilations need one entry "
                            "per layer (at least 3)")
        self.blocks = nn.ModuleList([_TDNN(input_size, channels[0], kernel_sizes[0],
                                           dilations[0])])
        for i in range(1, len(channels) - 1):
            self.blocks.append(_SERes2NetBlock(channels[i - 1], channels[i], res2net_scale,
                                               se_channels, kernel_sizes[i], dilations[i]))
        self.mfa = _TDNN(channels[-2] * (len(channels) - 2), channels[-1], kernel_sizes[-1],
                         dilations[-1])
        self.asp = _AttentiveStatsPool(channels[-1], attention_channels, global_context)
        self.asp_bn = _BatchNorm(channels[-1] * 2)
        self.fc = _Conv(channels[-1] * 2, lin_neurons, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)
        outs = []
        for layer in self.blocks:
            x = layer(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        return self.fc(self.asp_bn(self.asp(x))).squeeze(2)


class _WaveModel(nn.Module):
    """Waveform -> speechbrain features -> embedding (the teacher's own front-end)."""

    input_kind = "wave"

    def __init__(self, features: SpeechBrainFbank, embedding: SpeechBrainECAPA):
        super().__init__()
        self.features = features
        self.embedding_model = embedding

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.embedding_model(self.features(wave))


# ---- hyperparams.yaml --------------------------------------------------------------------


def _hyperpyyaml_loader() -> type:
    """A safe YAML loader that keeps speechbrain's ``!new:``/``!name:``/``!ref`` tags as data
    (``{"__tag__": "new:speechbrain...", ...kwargs}``) instead of building objects."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return {"__tag__": suffix, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.SequenceNode):
            return {"__tag__": suffix, "args": loader.construct_sequence(node, deep=True)}
        return {"__tag__": suffix, "value": loader.construct_scalar(node)}

    Loader.add_multi_constructor("!", construct)
    return Loader


def _resolve(value: Any, top: dict, depth: int = 0) -> Any:
    """Follow ``!ref <key>`` (the only reference form the needed fields use)."""
    if isinstance(value, dict) and value.get("__tag__") == "ref" and depth < 20:
        text = str(value.get("value", "")).strip()
        if text.startswith("<") and text.endswith(">") and text[1:-1] in top:
            return _resolve(top[text[1:-1]], top, depth + 1)
    return value


def _kwargs(node: Any, top: dict, tag: str, name: str, path: Path) -> dict:
    if not isinstance(node, dict) or not str(node.get("__tag__", "")).endswith(tag):
        found = node.get("__tag__") if isinstance(node, dict) else type(node).__name__
        raise UserError(f"{path}: {name} is {found!r}, not {tag}; only speechbrain's ECAPA "
                        "speaker models are supported")
    return {k: _resolve(v, top) for k, v in node.items() if k != "__tag__"}


def _find_margin(node: Any) -> tuple[str, dict] | None:
    """The first ``AdditiveAngularMargin``/``AngularMargin`` node anywhere in the file."""
    if isinstance(node, dict):
        tag = str(node.get("__tag__", ""))
        if tag.endswith("AdditiveAngularMargin"):
            return "aam", node
        if tag.endswith(".AngularMargin"):
            return "am", node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        if (found := _find_margin(child)) is not None:
            return found
    return None


def _refuse(path: Path, name: str, given: dict, allowed: dict) -> None:
    for key, value in allowed.items():
        if key in given and given[key] != value:
            raise UserError(f"{path}: {name} {key}={given[key]!r} is not supported "
                            f"(only {value!r}, as in spkrec-ecapa-voxceleb)")


def load_speechbrain(directory: Path) -> Teacher:
    """Teacher from a speechbrain ``spkrec-ecapa-voxceleb``-style directory."""
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise UserError(f"speechbrain teacher {directory}: missing {', '.join(missing)}")
    hparams_path = directory / "hyperparams.yaml"
    top = read_yaml(hparams_path, _hyperpyyaml_loader())
    fb = _kwargs(top.get("compute_features"), top, "lobes.features.Fbank", "compute_features",
                 hparams_path)
    _refuse(hparams_path, "Fbank", fb, {"deltas": False, "context": False,
                                        "filter_shape": "triangular", "requires_grad": False,
                                        "param_change_factor": 1.0, "param_rand_factor": 0.0})
    norm = _kwargs(top.get("mean_var_norm"), top, "InputNormalization", "mean_var_norm",
                   hparams_path)
    if norm.get("norm_type") != "sentence" or norm.get("std_norm", True) is not False:
        raise UserError(f"{hparams_path}: mean_var_norm must be sentence-level mean "
                        "normalisation (norm_type: sentence, std_norm: False)")
    emb = _kwargs(top.get("embedding_model"), top, "ECAPA_TDNN.ECAPA_TDNN", "embedding_model",
                  hparams_path)
    _refuse(hparams_path, "ECAPA_TDNN", emb, {"dropout": 0.0})
    if "activation" in emb or any(g != 1 for g in emb.get("groups", [1])):
        raise UserError(f"{hparams_path}: ECAPA_TDNN with another activation or grouped "
                        "convolutions is not supported")
    cls = _kwargs(top.get("classifier"), top, "ECAPA_TDNN.Classifier", "classifier",
                  hparams_path)
    _refuse(hparams_path, "Classifier", cls, {"lin_blocks": 0})

    sample_rate = int(fb.get("sample_rate", 16000))
    features = SpeechBrainFbank(
        n_mels=int(fb.get("n_mels", 40)), sample_rate=sample_rate,
        f_min=float(fb.get("f_min", 0)), f_max=fb.get("f_max"), n_fft=int(fb.get("n_fft", 400)),
        win_length=float(fb.get("win_length", 25)), hop_length=float(fb.get("hop_length", 10)))
    keys = ("input_size", "lin_neurons", "channels", "kernel_sizes", "dilations",
            "attention_channels", "res2net_scale", "se_channels", "global_context")
    embedding = SpeechBrainECAPA(**{k: (tuple(emb[k]) if isinstance(emb[k], list) else emb[k])
                                    for k in keys if k in emb})
    load_into(embedding, load_state(directory / "embedding_model.ckpt"),
              directory / "embedding_model.ckpt")
    weight = load_state(directory / "classifier.ckpt").get("weight")
    if weight is None or weight.ndim != 2:
        raise UserError(f"{directory / 'classifier.ckpt'}: no classifier weight [classes, dim]")

    margin = _find_margin(top)
    if margin is None:
        kind, scale, margin_value = "aam", RECIPE_SCALE, RECIPE_MARGIN
        log.info("%s names no training loss; using speechbrain's VoxCeleb recipe AAM "
                 "(scale %g, margin %g)", hparams_path, scale, margin_value)
    else:
        kind, node = margin
        scale = float(_resolve(node.get("scale", RECIPE_SCALE), top))
        margin_value = float(_resolve(node.get("margin", RECIPE_MARGIN), top))
    head = AAMSoftmax(int(weight.shape[1]), int(weight.shape[0]), scale=scale,
                      margin=margin_value)
    load_into(head, {"weight": weight}, directory / "classifier.ckpt")
    speakers = read_label_list(directory / "label_encoder.txt")
    if len(speakers) != head.num_classes:
        raise UserError(f"{directory / 'label_encoder.txt'} names {len(speakers)} speakers but "
                        f"the classifier has {head.num_classes} classes")
    frontend = Frontend("own", sample_rate, f"speechbrain Fbank {features.mel_matrix.shape[1]} "
                        "mels + sentence mean norm, computed by the teacher from the waveform")
    return Teacher(
        module=CheckpointTeacher(_WaveModel(features, embedding), head), input_kind="wave",
        scale=scale, margin=margin_value, arch="speechbrain:ECAPA_TDNN",
        sha256=files_sha256([directory / name for name in FILES]),
        label_map=label_map_for(speakers, (1.0,)), margin_kind=kind, frontend=frontend)
