"""Load a teacher (for the dump, its replay check, or online KD) behind one interface.

A teacher maps a batch of inputs (fbank features ``[B, T, 80]`` or waveforms
``[B, samples]``, as its ``input_kind`` says) to logits over the training classes,
without margin, and optionally to embeddings. Accepted specs:

- a checkpoint written by ``stage1_teacher.train`` (``model.pt``): logits are the
  AAM head's ``scale * cos``; scale and margin come from the checkpoint;
- a TorchScript file (``*.ts``/``*.jit``/any file ``torch.jit.load`` accepts) whose
  forward returns logits or ``(logits, embeddings)``;
- ``package.module:factory``: a zero-argument callable returning such an
  ``nn.Module`` (an external teacher wrapped in a few lines of Python);
- ``speechbrain:DIR`` / ``wespeaker:DIR``: a pretrained model in its own file layout
  (:mod:`speaker.pretrained`), with its own scale, margin, speaker list and front-end.

A WavLM+ECAPA teacher trained here is an ordinary checkpoint (arch
``wavlm_ecapa``) and is fed waveforms because its model says ``input_kind="wave"``.

A non-checkpoint teacher must declare its logit head as attributes of the module:
``scale`` (s in ``s * cos``), ``margin_kind`` (``"aam"``, ``"am"`` or ``"none"``) and
``margin`` (m; not needed for ``"none"``); it is refused otherwise, since KD at another scale
is KD at another temperature and the margin convention needs the teacher's margin.
``input_kind`` (``"fbank"`` or ``"wave"``) defaults to ``"fbank"``.

Example::

    teacher = load_teacher("exp/teacher/model.pt")
    logits, emb = teacher(feats)
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speaker.errors import UserError
from speaker.margin import MARGIN_KINDS, LogitMargin
from speaker.models.checkpoint import load_checkpoint
from speaker.pretrained import is_pretrained_spec, load_pretrained
from speaker.pretrained.frontend import Frontend


class _CheckpointTeacher(nn.Module):
    """Embedding model + AAM head -> (cosine logits without margin, embedding)."""

    def __init__(self, model: nn.Module, head: nn.Module):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model(x)
        return self.head.cosine_logits(emb), emb


@dataclass
class Teacher:
    module: nn.Module
    input_kind: str
    scale: float
    margin: float
    arch: str
    sha256: str
    label_map: dict | None = None
    margin_kind: str = "aam"  # "aam" | "am" | "none": the head the logits come from
    epoch: int | None = None  # epochs trained / planned, when the source records them
    epochs: int | None = None
    frontend: Frontend | None = None  # pretrained teachers: input they were trained on

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (float32 logits [B, C], float32 embeddings [B, D] or None)."""
        use_amp = x.device.type == "cuda"
        with torch.autocast(x.device.type, enabled=use_amp):
            out = self.module(x)
        logits, emb = out if isinstance(out, tuple) else (out, None)
        return logits.float(), None if emb is None else emb.float()

    def to(self, device: str) -> Teacher:
        self.module.to(device)
        return self


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_sha256(module: nn.Module) -> str:
    """Identity of a factory-built teacher: a hash of its weights, in key order."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):  # bytes, so bfloat16 etc. hash too
            digest.update(str(value.dtype).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                          .numpy().tobytes())
        else:  # extra state
            digest.update(repr(value).encode())
    return digest.hexdigest()


def load_teacher(spec: str, device: str = "cpu") -> Teacher:
    """Resolve ``spec`` (checkpoint, TorchScript file, ``module:factory``,
    ``speechbrain:DIR`` or ``wespeaker:DIR``) to a Teacher."""
    path = Path(spec)
    if is_pretrained_spec(spec):
        teacher = load_pretrained(spec)
    elif path.is_file():
        try:
            loaded = load_checkpoint(path)
            checkpoint_error = None
        except UserError as exc:
            loaded, checkpoint_error = None, exc
        if loaded is not None and loaded.head is None:
            raise UserError(
                f"teacher {path}: the checkpoint has no classification head, so it gives "
                "embeddings but no logits; use the checkpoint written by stage1_teacher.train"
            )
        if loaded is not None:
            teacher = Teacher(
                module=_CheckpointTeacher(loaded.model, loaded.head),
                input_kind=getattr(loaded.model, "input_kind", "fbank"),
                scale=float(loaded.head.scale),
                margin=float(loaded.config.get("schedule", {}).get("margin", loaded.head.margin)),
                margin_kind=loaded.head.margin_kind,
                arch=loaded.arch,
                sha256=loaded.sha256,
                label_map=loaded.label_map,
                epoch=_recorded_int((loaded.state or {}).get("epoch")),
                epochs=_recorded_int(loaded.config.get("epochs")),
            )
        else:
            try:
                module = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:  # torch raises RuntimeError/ValueError variants
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UserError(
                    f"teacher {path}: neither an entkd checkpoint ({checkpoint_error}) nor "
                    f"TorchScript ({first_line})"
                ) from None
            teacher = _from_module(module, arch=f"torchscript:{path.name}", sha256=_sha256(path))
    elif ":" in spec and not path.exists():
        module_name, _, factory_name = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), factory_name)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"teacher {spec!r}: cannot import factory ({exc})") from None
        module = factory()
        if not isinstance(module, nn.Module):
            raise UserError(f"teacher {spec!r}: the factory returned a "
                            f"{type(module).__name__}, not a torch.nn.Module")
        teacher = _from_module(module, arch=spec, sha256="")
        teacher.sha256 = _state_sha256(teacher.module)
    else:
        raise UserError(f"teacher {spec!r}: no such file, and not of the form module:factory")
    teacher.module.eval()
    return teacher.to(device)


DECLARE_HEAD = ("give the module attributes scale (s of s*cos), margin_kind ('aam', 'am' "
                "or 'none') and margin (m)")


def _recorded_int(value: object) -> int | None:
    """An epoch count a checkpoint records, or None when it records none."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _from_module(module: nn.Module, arch: str, sha256: str) -> Teacher:
    """A Teacher for a TorchScript or factory module, from the head it declares."""
    kind = getattr(module, "margin_kind", None)
    scale = getattr(module, "scale", None)
    margin = getattr(module, "margin", 0.0 if kind == "none" else None)
    if kind not in MARGIN_KINDS or scale is None or margin is None:
        raise UserError(f"teacher {arch}: its logit scale and margin are unknown; {DECLARE_HEAD}")
    try:
        LogitMargin(kind, float(margin), float(scale))
    except (TypeError, ValueError) as exc:
        raise UserError(f"teacher {arch}: {exc}; {DECLARE_HEAD}") from None
    return Teacher(
        module=module,
        input_kind=str(getattr(module, "input_kind", "fbank")),
        scale=float(scale),
        margin=float(margin),
        margin_kind=kind,
        arch=arch,
        sha256=sha256,
    )
