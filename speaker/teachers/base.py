"""What a teacher is: a module mapping inputs to logits (and embeddings) with its declared head.

:class:`Teacher` is the one interface the dump, its replay check and online KD use;
:class:`CheckpointTeacher` wraps an entkd embedding model and its AAM head; loaders of
other formats (:mod:`speaker.teachers.load`, :mod:`speaker.teachers.speechbrain`,
:mod:`speaker.teachers.wespeaker`) build a :class:`Teacher` from what they read.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speaker.models.margin import MARGIN_KINDS, LogitMargin
from speaker.teachers.frontend import Frontend
from store.errors import UserError


class CheckpointTeacher(nn.Module):
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module: nn.Module) -> str:
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


DECLARE_HEAD = ("give the module attributes scale (s of s*cos), margin_kind ('aam', 'am' "
                "or 'none') and margin (m)")


def recorded_int(value: object) -> int | None:
    """An epoch count a checkpoint records, or None when it records none."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def from_module(module: nn.Module, arch: str, sha256: str) -> Teacher:
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
