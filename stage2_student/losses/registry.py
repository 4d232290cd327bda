"""The one registry of distillation losses, and the base class of a loss's own options.

Each loss module registers its loss here (:func:`register_loss`): its cached and online
functions, its options class and what it needs from the cache. The trainer (``DistillConfig``,
``distill_loss``, which teacher outputs the loader computes) and the CLI (``--loss`` choices,
the ``--<loss>-<field>`` flags of ``losses.flags``) read it from here.

As losses multiply, each keeps its own options next to it (one frozen dataclass, registered
with the loss) instead of ``DistillConfig`` growing a field per method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import Tensor

__all__ = ["LossOptions", "option", "RegisteredLoss", "register_loss", "register_sampled",
           "registered_loss", "loss_names", "loss_options", "loss_option_classes"]

# (DistillConfig, DistillBatch) -> scalar loss; typed loosely because losses.config, which
# defines both, imports this registry
LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class LossOptions:
    """Base of a loss's own options. Each field's ``metadata`` holds ``help`` and ``source``
    (where its default comes from), which ``--help`` shows."""

    def for_run(self, epochs: int) -> LossOptions:
        """These options with defaults that depend on the run's length filled in."""
        return self


def option(default, help: str, source: str):
    """A field of a ``LossOptions`` dataclass with its ``--help`` text and default's source."""
    return field(default=default, metadata={"help": help, "source": source})


@dataclass(frozen=True)
class RegisteredLoss:
    """One distillation loss as the trainer and the CLI see it.

    cached, online: ``fn(config, batch) -> Tensor``, the unweighted term from the cache's
        teacher buckets and from a live teacher's logits.
    options: the loss's own options class, None for a loss without options.
    uses_teacher_buckets: the loss compares the student's logits with the teacher's, so
        from the cache it needs the teacher buckets (the loader computes them) and the
        student head's logit scale must be the teacher's.
    sampled: the cached function under ``DistillConfig.tail = "sampled"`` (exact head plus
        the unbiased sampled tail; see ``losses.sampled``); None for a loss without one.
    """

    name: str
    cached: LossFn
    online: LossFn
    options: type[LossOptions] | None = None
    uses_teacher_buckets: bool = True
    sampled: LossFn | None = None


_LOSSES: dict[str, RegisteredLoss] = {}


def register_loss(name: str, cached: LossFn, online: LossFn, *,
                  options: type[LossOptions] | None = None,
                  uses_teacher_buckets: bool = True) -> None:
    """Add a loss to the registry (``loss_names`` lists them in the order added)."""
    _LOSSES[name] = RegisteredLoss(name, cached, online, options, uses_teacher_buckets)


def register_sampled(name: str, sampled: LossFn) -> None:
    """Give the registered loss ``name`` its sampled-tail cached function."""
    _LOSSES[name] = replace(registered_loss(name), sampled=sampled)


def registered_loss(name: str) -> RegisteredLoss:
    """The loss registered as ``name``; ValueError naming the choices for any other."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {loss_names()}")
    return _LOSSES[name]


def loss_names() -> list[str]:
    """The names ``DistillConfig.loss`` accepts."""
    return list(_LOSSES)


def loss_options(name: str) -> type[LossOptions] | None:
    """The options class of loss ``name``; None for a loss without its own options."""
    loss = _LOSSES.get(name)
    return None if loss is None else loss.options


def loss_option_classes() -> dict[str, type[LossOptions]]:
    """{loss name: options class} for every loss that has its own options."""
    return {name: loss.options for name, loss in _LOSSES.items() if loss.options is not None}
