"""The command-line options both training CLIs share, declared once, and the one way a base
configuration and the options given on the command line make a run's settings.

The base is a teacher preset or a student run's saved ``config.json``; with no base (a
student run from options alone) every option, given or defaulted, counts. An option given on
the command line replaces the base's value; for the schedule, any of ``--epochs``,
``--optimizer``, ``--lr``, ``--final-lr``, ``--scale`` rebuilds it with
:func:`~speaker.training.trainer.scaled_schedule` over the run's epochs, keeping the base's
peak LR and weight decay when the optimizer is the same (they belong to it) and its final
LR when the peak LR is, so ``--epochs 6`` on a preset gives the preset's recipe over 6
epochs. ``--arch-opt`` values are merged into the base's architecture arguments unless
``--arch`` names another architecture, and are checked against the factory's arguments.

Example::

    @click.command()
    @training_options(arch="xvector", epochs=10)
    def cli(**opts): ...
    settings = resolve_run(base, opts, given_options(opts), own=("online_teacher",))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from speaker.models import check_arguments
from speaker.training.trainer import DEFAULT_LR, Schedule, scaled_schedule
from store.cli import parse_options

F = TypeVar("F", bound=Callable[..., Any])

SCHEDULE_OPTIONS = ("epochs", "optimizer", "lr", "final_lr", "scale")
"""Options that rebuild the schedule over the run when given."""

RUN_FIELDS = ("batch_size", "eval_every", "seed", "workers")
"""Top-level settings every run has besides architecture, epochs and schedule."""


def training_options(**defaults: Any) -> Callable[[F], F]:
    """The options of every training CLI, with that CLI's ``defaults`` (None: the base's)."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True,
                     help="Run directory (a folder; one run writes it at a time)."),
        click.option("--arch", default=defaults.get("arch"),
                     help="Registered architecture (python -m speaker.models)."),
        click.option("--arch-opt", multiple=True,
                     help="Architecture argument key=value, repeatable (checked against the "
                          "architecture's arguments and their types)."),
        click.option("--epochs", type=click.IntRange(min=1), default=defaults.get("epochs"),
                     help="Total epochs (the LR schedule spans them; --resume needs the "
                          "same value)."),
        click.option("--batch-size", type=click.IntRange(min=1),
                     default=defaults.get("batch_size"), help="Crops per step and rank."),
        click.option("--optimizer", type=click.Choice(sorted(DEFAULT_LR)),
                     default=defaults.get("optimizer"),
                     help="SGD-Nesterov (wespeaker) or AdamW (learns faster in runs of a few "
                          "hundred steps: docs/recipe_sweep.md); another one than the "
                          "preset's gets its own scaled schedule over --epochs."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Peak LR [default: the preset's or saved run's for the same "
                          "optimizer, else 0.1 for sgd, 3e-3 for adamw]."),
        click.option("--final-lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="LR at the end of the run [default: --lr / 100]."),
        click.option("--eval-every", type=click.IntRange(min=0),
                     default=defaults.get("eval_every"),
                     help="Evaluate every N epochs (0: last)."),
        click.option("--workers", type=click.IntRange(min=0), default=defaults.get("workers"),
                     help="DataLoader worker processes (the result does not depend on it)."),
        click.option("--seed", type=int, default=defaults.get("seed")),
        click.option("--resume", is_flag=True,
                     help="Continue OUT/model.pt after its last epoch; refused unless the "
                          "settings and inputs (cache, teacher) are the ones it was started "
                          "with (--workers may change)."),
        click.option("-v", "--verbose", is_flag=True),
    ]

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def given_options(opts: dict[str, Any]) -> set[str]:
    """Names of the options of ``opts`` given on the command line of the running command."""
    ctx = click.get_current_context()
    return {name for name in opts
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}


def resolve_run(base: Any, opts: dict[str, Any], given: set[str],
                own: Iterable[str] = ()) -> dict[str, Any]:
    """The run settings -- ``arch``, ``arch_kwargs``, ``epochs``, ``schedule``,
    :data:`RUN_FIELDS` and the caller's ``own`` top-level fields -- of ``base`` (a config
    dataclass, or None) with the ``given`` options of ``opts`` replacing its values.

    ``opts["arch_kwargs"]``, when given, replaces the architecture arguments whole (callers
    in Python); ``opts["arch_opt"]`` is the ``--arch-opt`` pairs.
    """
    def pick(name: str, saved: Any) -> Any:
        return opts.get(name) if base is None or name in given else saved

    epochs = pick("epochs", None if base is None else base.epochs)
    schedule = None if base is None else base.schedule
    if base is None or given & set(SCHEDULE_OPTIONS):
        saved = schedule or Schedule()
        optimizer = pick("optimizer", saved.optimizer)
        same = base is not None and optimizer == saved.optimizer
        # A saved LR and weight decay belong to the saved optimizer, a final LR to its LR.
        lr = pick("lr", saved.lr if same else None)
        final_lr = pick("final_lr", saved.final_lr if lr == saved.lr else None)
        schedule = scaled_schedule(epochs, optimizer, lr, final_lr)
        schedule = replace(schedule, scale=pick("scale", saved.scale) or saved.scale,
                           weight_decay=saved.weight_decay if same else schedule.weight_decay)
    arch = pick("arch", None if base is None else base.arch)
    if "arch_kwargs" in given:
        arch_kwargs = dict(opts["arch_kwargs"])
    elif base is None or "arch" in given or "arch_opt" in given:
        arch_kwargs = parse_options(tuple(opts.get("arch_opt") or ()))
        if base is not None and "arch" not in given:
            arch_kwargs = {**base.arch_kwargs, **arch_kwargs}
    else:
        arch_kwargs = base.arch_kwargs
    check_arguments(arch, arch_kwargs)
    top = {name: pick(name, None if base is None else getattr(base, name))
           for name in (*RUN_FIELDS, *own)}
    return {"arch": arch, "arch_kwargs": arch_kwargs, "epochs": epochs, "schedule": schedule,
            **top}
