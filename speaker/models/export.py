"""Exported embedding networks: an entkd model as an ONNX or TorchScript file, the front-end
settings that define its input, and loading such a file back as a module.

The exported graph is the embedding network alone (no classification head), on wespeaker's
convention: input ``feats`` ``[B, T, 80]`` (Kaldi fbank, any number of frames ``T``),
output ``embs`` ``[B, D]``. A waveform model (WavLM-ECAPA) takes ``feats`` ``[B, samples]``
at its sample rate instead. The front-end that turns audio into ``feats`` (sample rate,
``torchaudio.compliance.kaldi.fbank`` options, mean normalisation) is the *settings* dict
(:func:`export_settings`): it is stored inside the file (ONNX metadata, a TorchScript extra
file) and written as JSON beside it (:func:`settings_path`) for users of other runtimes.

* ONNX: ``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``), opset
  17, dynamic ``B`` and ``T``. The dynamo exporter of torch 2.14 needs ``onnxscript``, takes
  ~4x longer and gave ~2e-5 differences where this one gives ~1e-7 on the same x-vector.
* TorchScript: ``torch.jit.trace``; the models have no length-dependent Python control flow,
  so one trace serves every ``T`` (the parity tests check three lengths).

Example::

    model = load_checkpoint("exp/xvector-dkd/model.pt").model
    export_model(model, "xvector.onnx", "onnx", export_settings("fbank", 16000))
    net = load_exported("xvector.onnx")      # an nn.Module running ONNX Runtime
    net(torch.randn(1, 300, 80)).shape       # torch.Size([1, 128])
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from speaker.features.fbank import KALDI_OPTIONS, NUM_MEL_BINS
from store.atomic import atomic_path, atomic_write_text
from store.errors import UserError, first_line

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}
INPUT_NAME, OUTPUT_NAME = "feats", "embs"  # wespeaker's export names
META_KEY = "entkd_export"  # ONNX metadata key / TorchScript extra file holding the settings
OPSET = 17


def export_settings(input_kind: str, sample_rate: int, **extra: Any) -> dict[str, Any]:
    """What an exported model's input is: enough to compute ``feats`` without entkd.

    Example::

        >>> s = export_settings("fbank", 16000)
        >>> s["sample_rate"], s["fbank"]["num_mel_bins"], s["cmn"]["variance"]
        (16000, 80, False)
    """
    settings: dict[str, Any] = {"input_kind": input_kind, "sample_rate": int(sample_rate),
                                "input": INPUT_NAME, "output": OUTPUT_NAME}
    if input_kind == "fbank":
        settings |= {
            "input_shape": ["B", "T", NUM_MEL_BINS],
            "waveform_scale": 32768.0,  # float [-1, 1] samples times 2**15 (int16 range)
            "fbank": {"function": "torchaudio.compliance.kaldi.fbank",
                      "num_mel_bins": NUM_MEL_BINS, "sample_frequency": int(sample_rate),
                      **KALDI_OPTIONS},
            "cmn": {"mean": "per utterance, over frames", "variance": False},
        }
    else:
        settings |= {"input_shape": ["B", "samples"], "waveform_scale": 1.0,
                     "note": "float samples in [-1, 1]; the model normalises them itself"}
    return settings | extra


def settings_path(path: str | Path) -> Path:
    """The JSON written beside an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def example_input(input_kind: str, seconds: float, sample_rate: int = 16000,
                  batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random input of ``seconds`` of audio: fbank-shaped ``[B, frames, 80]`` or
    ``[B, samples]`` (for tracing, parity checks and timing)."""
    from speaker.features.fbank import num_frames

    g = torch.Generator().manual_seed(seed)
    samples = int(round(seconds * sample_rate))
    if input_kind == "fbank":
        return torch.randn(batch, num_frames(samples, sample_rate), NUM_MEL_BINS, generator=g)
    return torch.randn(batch, samples, generator=g) * 0.1


def export_model(model: nn.Module, path: str | Path, fmt: str,
                 settings: dict[str, Any]) -> Path:
    """Write ``model`` (eval mode, CPU) as ``fmt`` to ``path`` with ``settings`` inside it
    and beside it (:func:`settings_path`); both atomically. -> ``path``."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval().cpu()
    x = example_input(settings["input_kind"], 2.0, settings["sample_rate"])
    settings = settings | {"format": fmt, "embed_dim": int(_embed_dim(model, x))}
    text = json.dumps(settings, indent=2, sort_keys=True)
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based ONNX exporter and tracing warn about their own deprecation
        # and about shape arithmetic they record as constants (none affects T: tested)
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            _export_onnx(model, x, tmp, text)
        else:
            traced = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(traced, str(tmp), _extra_files={META_KEY: text})
    atomic_write_text(settings_path(path), text + "\n")
    return path


def _embed_dim(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return model(x).shape[-1]


def _export_onnx(model: nn.Module, x: torch.Tensor, tmp: Path, text: str) -> None:
    import onnx

    dynamic = {INPUT_NAME: {0: "B", 1: "T"}, OUTPUT_NAME: {0: "B"}}
    torch.onnx.export(model, (x,), str(tmp), input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                      opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, text
    onnx.save(proto, str(tmp))


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime (CPU) behind ``nn.Module``'s call: ``[B, ...]`` torch
    tensor in, float32 ``[B, D]`` torch tensor out. ``threads=0``: ONNX Runtime's default."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def is_onnx(path: Path) -> bool:
    """True for a ``.onnx`` file (ONNX protobufs have no magic number to test instead)."""
    return path.suffix.lower() == ".onnx"


def load_exported(path: str | Path, threads: int = 0) -> nn.Module:
    """An exported file back as a module with ``input_kind``, ``embed_dim`` and
    ``export_settings`` (None when the file was not written by :func:`export_model`).

    ONNX files run in ONNX Runtime; TorchScript files with ``torch.jit.load``."""
    path = Path(path)
    if is_onnx(path):
        try:
            module: nn.Module = OnnxModule(path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"{path}: not a loadable ONNX model ({first_line(exc)})") from None
        meta = module.session.get_modelmeta().custom_metadata_map.get(META_KEY)
    else:
        extra = {META_KEY: ""}
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": it still works
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError/ValueError variants
            raise UserError(f"{path}: not a TorchScript file ({first_line(exc)})") from None
        meta = extra[META_KEY] or None
    settings = json.loads(meta) if meta else None
    module.export_settings = settings
    if settings is not None:
        module.input_kind = settings["input_kind"]
        module.embed_dim = settings["embed_dim"]
    return module.eval()



def max_abs_difference(reference: nn.Module, exported: nn.Module, input_kind: str,
                       seconds: tuple[float, ...], sample_rate: int = 16000) -> dict[str, float]:
    """``{"<s>s": max |reference - exported|}`` over a batch of two random inputs of each
    length: the parity of an export.

    Example::

        max_abs_difference(model, load_exported("x.onnx"), "fbank", (2.0, 4.0, 10.0))
        # {"2s": 1.5e-08, "4s": 1.5e-08, "10s": 2.2e-08}
    """
    out = {}
    with torch.no_grad():
        for i, s in enumerate(seconds):
            x = example_input(input_kind, s, sample_rate, batch=2, seed=i + 1)
            diff = (reference.eval()(x) - exported(x)).abs().max().item()
            out[f"{s:g}s"] = float(diff)
    return out
