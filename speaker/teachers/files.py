"""File helpers the pretrained-teacher loaders share: hashing, YAML, torch state dicts.

Each turns a bad file into one :class:`~store.errors.UserError` line naming it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import UserError, first_line

if TYPE_CHECKING:
    from torch import nn


def files_sha256(paths: Sequence[Path]) -> str:
    """Identity of a teacher kept in several files: sha256 over each file's name and bytes."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_yaml(path: Path, loader: type | None = None) -> dict:
    """A YAML mapping, or one ``UserError`` line naming the file."""
    import yaml

    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.load(f, Loader=loader or yaml.SafeLoader)  # SafeLoader or a subclass
    except (OSError, yaml.YAMLError) as exc:
        first = first_line(exc)
        raise UserError(f"cannot read {path}: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping")
    return data


def load_state(path: Path) -> dict:
    """A torch state dict (tensors only: ``weights_only``), or one ``UserError`` line."""
    import torch

    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip/RuntimeError variants
        first = first_line(exc)
        raise UserError(f"cannot load {path}: {first}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint rather than bare weights
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_into(module: nn.Module, state: dict, where: Path) -> None:
    """``load_state_dict(strict=True)`` with one line naming a few keys that do not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{where}: the weights do not fit the architecture ({detail})") from None
