"""Speaker embedding models and the registry that builds them by name.

Every architecture module registers a factory with :func:`register`; :func:`build`
is the one way the rest of the project makes a model, so a checkpoint that records
``(arch, arch_kwargs)`` can always be rebuilt (see :mod:`speaker.models.checkpoint`).

Fbank models map ``feats [B, T, 80] -> [B, embed_dim]``; waveform models (the WavLM
teacher) map ``wave [B, samples] -> [B, embed_dim]``. :func:`build` stamps each model
with ``input_kind`` (``"fbank"`` or ``"wave"``) so callers know what to feed it.

Example:
    >>> import torch
    >>> from speaker.models import build
    >>> model = build("xvector", channels=64, embed_dim=32)
    >>> model(torch.randn(2, 100, 80)).shape
    torch.Size([2, 32])
    >>> model.input_kind, model.embed_dim
    ('fbank', 32)
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from store.errors import UserError

Factory = Callable[..., nn.Module]

INPUT_KINDS = ("fbank", "wave")

# Modules whose import registers the built-in architectures. Imported lazily so that
# `import speaker.models` stays cheap and model modules can import `register` from here.
_BUILTIN_MODULES = ("xvector", "resnet", "campplus", "ecapa_tdnn", "wavlm_ecapa")


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    input_kind: str


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, input_kind: str = "fbank") -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(**kwargs) -> nn.Module`` under ``name``.

    Example:
        >>> from torch import nn
        >>> @register("doc_identity")
        ... def _identity(embed_dim: int = 80) -> nn.Module:
        ...     m = nn.Identity(); m.embed_dim = embed_dim; return m
        >>> "doc_identity" in architectures()
        True
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = _Entry(factory, input_kind)
        return factory

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def architectures() -> list[str]:
    """Sorted names accepted by :func:`build`.

    Example:
        >>> {"xvector", "resnet34", "campp", "ecapa", "wavlm_ecapa"} <= set(architectures())
        True
    """
    _load_builtin()
    return sorted(_REGISTRY)


def build(name: str, **kwargs: object) -> nn.Module:
    """Build architecture ``name`` with keyword arguments ``kwargs``.

    Unknown names and unknown keyword arguments raise :class:`UserError` that lists what
    is accepted, because both usually come straight from a CLI option or a checkpoint.

    Example:
        >>> build("resnet34", base_width=8, embed_dim=64).embed_dim
        64
    """
    names = architectures()
    if name not in _REGISTRY:
        raise UserError(f"unknown architecture {name!r}; choose one of: {', '.join(names)}")
    entry = _REGISTRY[name]
    check_arguments(name, kwargs)
    model = entry.factory(**kwargs)
    model.input_kind = entry.input_kind
    return model


def check_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse, as a :class:`UserError` naming the argument and its value, keyword arguments
    that ``name``'s factory does not take or whose value does not fit its annotation.

    Integers must be whole numbers >= 1 (widths, dimensions, counts, kernel sizes), floats
    finite numbers >= 0 (the factories' floats are rates and probabilities), booleans and
    strings what they say; ``None`` only where the annotation allows it. Values come from
    ``--arch-opt`` or a checkpoint, so a bad one would otherwise surface as a traceback
    from deep inside the model's constructor.

    Example:
        >>> check_arguments("xvector", {"channels": "abc"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        store.errors.UserError: ... channels='abc': channels must be an integer >= 1 (default 512)...
    """
    names = architectures()
    if name not in _REGISTRY:
        raise UserError(f"unknown architecture {name!r}; choose one of: {', '.join(names)}")
    signature = inspect.signature(_REGISTRY[name].factory, eval_str=True)
    accepted = ", ".join(signature.parameters)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise UserError(
            f"bad arguments for architecture {name!r}: {exc}; accepted: {accepted}"
        ) from None
    for key, value in kwargs.items():
        parameter = signature.parameters[key]
        wanted = _refusal(parameter.annotation, value)
        if wanted is not None:
            raise UserError(
                f"bad arguments for architecture {name!r}: {key}={value!r}: {key} must be "
                f"{wanted} (default {parameter.default!r}); accepted: {accepted}"
            )


def _refusal(annotation: Any, value: Any) -> str | None:
    """What ``value`` should have been for ``annotation`` (None: it fits)."""
    kinds = (typing.get_args(annotation)
             if typing.get_origin(annotation) in (typing.Union, types.UnionType)
             else (annotation,))
    if value is None:
        return None if type(None) in kinds else "allowed to be null"
    checks = {
        int: ("an integer >= 1", lambda v: isinstance(v, numbers.Integral)
              and not isinstance(v, bool) and v >= 1),
        float: ("a number >= 0", lambda v: isinstance(v, numbers.Real)
                and not isinstance(v, bool) and math.isfinite(v) and v >= 0),
        bool: ("true or false", lambda v: isinstance(v, bool)),
        str: ("a string", lambda v: isinstance(v, str)),
    }
    known = [checks[kind] for kind in kinds if kind in checks]
    if not known or any(fits(value) for _, fits in known):
        return None
    return " or ".join(what for what, _ in known)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (models here hold no classifier, so this is the figure
    wespeaker quotes "excluding the classifier").

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())
