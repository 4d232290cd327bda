"""click flags for the losses' own options (``registry.loss_option_classes``).

Every field of a registered options dataclass becomes ``--<loss>-<field>`` (underscores as
dashes), with the field's default and, in its help, where that default comes from. A flag
of a loss other than the chosen ``--loss`` is refused rather than silently ignored.

Example::

    @click.command()
    @click.option("--loss", default="dkd")
    @loss_option_flags
    def cli(loss, epochs, **values):
        options = options_from_flags(loss, values, epochs)   # pops the flags from values
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import Field, fields
from typing import Any

import click
from click.core import ParameterSource

from stage2_student.losses.registry import LossOptions, loss_option_classes, loss_options
from store.errors import UserError


def _flag(loss: str, f: Field) -> str:
    return f"--{loss}-{f.name.replace('_', '-')}"


def _param(loss: str, f: Field) -> str:
    return f"{loss}_{f.name}"


def _value_type(cls: type[LossOptions], f: Field) -> type:
    """The field's type without ``None`` (``float | None`` -> float)."""
    hint = typing.get_type_hints(cls)[f.name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return kinds[0]


def loss_option_flags(command: Callable) -> Callable:
    """Decorator: add every registered loss option as a click flag."""
    for loss, cls in sorted(loss_option_classes().items(), reverse=True):
        for f in reversed(fields(cls)):
            help_text = f"[--loss {loss}] {f.metadata['help']} Default from: {f.metadata['source']}."
            command = click.option(_flag(loss, f), _param(loss, f), type=_value_type(cls, f),
                                   default=f.default, help=help_text)(command)
    return command


def options_from_flags(loss: str, values: dict[str, Any], epochs: int,
                       base: LossOptions | None = None) -> LossOptions | None:
    """Pop every loss-option flag from ``values`` (the command's keyword arguments) and
    return the options of ``loss``, resolved for a run of ``epochs``.

    ``base`` (a rerun's saved options of the same loss) supplies every field whose flag is
    not given on the command line. Raises UserError for a flag given for another loss, or
    a value the options refuse.
    """
    ctx = click.get_current_context(silent=True)

    def given(name: str, f: Field) -> bool:
        return ctx is not None and ctx.get_parameter_source(
            _param(name, f)) is ParameterSource.COMMANDLINE

    chosen: dict[str, Any] = {}
    for name, cls in loss_option_classes().items():
        for f in fields(cls):
            value = values.pop(_param(name, f))
            if name == loss:
                keep_saved = base is not None and not given(name, f)
                chosen[f.name] = getattr(base, f.name) if keep_saved else value
            elif given(name, f):
                raise UserError(f"{_flag(name, f)} applies to --loss {name}, not --loss {loss}")
    cls = loss_options(loss)
    if cls is None:
        return None
    try:
        return cls(**chosen).for_run(epochs)
    except ValueError as exc:
        raise UserError(str(exc)) from None
