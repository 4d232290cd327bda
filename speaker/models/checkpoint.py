"""Self-describing checkpoints: architecture name and arguments, weights, AAM head, label
map, training config and optional training state, in one ``torch.save`` file.

Everything stored is a plain dict/list/tuple/str/number/bool/None or a tensor, so
``torch.load(weights_only=True)`` reads it without unpickling arbitrary code. Files are
written atomically (:mod:`store.atomic`), so a killed run or a full disk leaves either
the old checkpoint or the new one, never half of one.

Example:
    >>> import tempfile, torch
    >>> from speaker.models import build
    >>> from speaker.models.heads import AAMSoftmax
    >>> model, head = build("xvector", channels=32, embed_dim=16), AAMSoftmax(16, 4)
    >>> path = tempfile.mkdtemp() + "/teacher.pt"
    >>> sha = save_checkpoint(path, arch="xvector", arch_kwargs={"channels": 32, "embed_dim": 16},
    ...                       model=model, head=head, label_map={"speakers": ["a", "b", "c", "d"]},
    ...                       config={"epochs": 1})
    >>> ckpt = load_checkpoint(path)
    >>> ckpt.arch, ckpt.head.num_classes, ckpt.sha256 == sha
    ('xvector', 4, True)
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speaker.models import build
from speaker.models.heads import AAMSoftmax
from store.atomic import atomic_path
from store.errors import UserError

FORMAT = "entkd-checkpoint"
VERSION = 1

_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


@dataclass
class LoadedCheckpoint:
    """A checkpoint rebuilt into modules (both in eval mode, on CPU)."""

    model: nn.Module
    head: AAMSoftmax | None
    arch: str
    arch_kwargs: dict[str, Any]
    label_map: dict[str, Any]
    config: dict[str, Any]
    state: dict[str, Any] | None
    sha256: str


def _check_plain(value: Any, where: str) -> None:
    # Fail at save time, naming the offending entry, rather than at load time in
    # another process where weights_only=True would reject the whole file.
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"checkpoint {where} is a {type(value).__name__}; only dict/list/tuple/str/"
            "int/float/bool/None/Tensor can be loaded with weights_only=True"
        )


def save_checkpoint(
    path: str | os.PathLike,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    model: nn.Module,
    head: AAMSoftmax | None,
    label_map: dict[str, Any],
    config: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically and return the sha256 of the written bytes.

    ``state`` holds whatever resuming needs (optimizer/scheduler state dicts, epoch,
    RNG states as tensors); it must be plain data like everything else.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "head": None
        if head is None
        else {
            "embed_dim": head.embed_dim,
            "num_classes": head.num_classes,
            "scale": float(head.scale),
            "margin": float(head.margin),
            "weight": head.weight.detach().cpu(),
        },
        "label_map": label_map,
        "config": config,
        "state": state,
    }
    _check_plain(payload, "checkpoint")
    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            torch.save(payload, f)
        digest = _sha256(tmp)
    return digest


def _sha256(path: Path) -> str:
    # Hash in chunks: a WavLM-Large teacher checkpoint is over a gigabyte.
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild model and head.

    A missing, truncated or foreign file, or an architecture this version does not know,
    raises :class:`UserError` naming ``path``.
    """
    path = Path(path)
    try:
        # One read serves both hash and load, so the sha256 describes exactly the bytes
        # loaded even if a trainer replaces the file meanwhile.
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} not found") from None
    except OSError as exc:
        raise UserError(f"checkpoint {path} cannot be read: {exc.strerror}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise UserError(
            f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not an entkd checkpoint (no {FORMAT!r} marker)")
    if payload.get("version") != VERSION:
        raise UserError(
            f"checkpoint {path} has format version {payload.get('version')}; "
            f"this entkd reads version {VERSION}"
        )
    arch, arch_kwargs = payload["arch"], dict(payload["arch_kwargs"])
    # `pretrained` only chooses initial weights, which the stored state dict replaces;
    # dropping it means a checkpoint loads without the original pretrained file.
    build_kwargs = {k: v for k, v in arch_kwargs.items() if k != "pretrained"}
    try:
        model = build(arch, **build_kwargs)
    except UserError as exc:
        raise UserError(f"checkpoint {path}: {exc}") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path}: weights do not fit {arch!r}: {exc}") from None
    head = None
    if payload["head"] is not None:
        h = payload["head"]
        head = AAMSoftmax(h["embed_dim"], h["num_classes"], scale=h["scale"], margin=h["margin"])
        head.weight.data.copy_(h["weight"])
        head.eval()
    return LoadedCheckpoint(
        model=model.eval(),
        head=head,
        arch=arch,
        arch_kwargs=arch_kwargs,
        label_map=payload["label_map"],
        config=payload["config"],
        state=payload["state"],
        sha256=hashlib.sha256(data).hexdigest(),
    )
