"""What every training loop here shares: distributed context, LR schedule, the epoch
loop with per-epoch seeding and atomic, resumable checkpoints.

Teacher training (stage 1) and student training (stage 2) differ only in where
batches come from and which loss terms are added to the AAM cross-entropy, so both
build a :class:`Trainer` and pass those two pieces in.

Resume is exact at epoch granularity: a checkpoint is written after every epoch
with the optimizer state, and everything random inside an epoch is derived from
``(seed, epoch)`` (the views through their row seeds, torch's global RNG through
:func:`epoch_seed`), so a killed run restarted with ``resume=True`` produces the
same weights as an uninterrupted one. That only holds for the same settings, so
:meth:`Trainer.resume` refuses a checkpoint whose saved config differs from the
requested one in anything but :data:`RESUME_IGNORED` (the LR schedule, for one, depends
on the total number of epochs).

Example::

    trainer = Trainer(net, schedule, epochs=10, steps_per_epoch=len(loader),
                      checkpoint=CheckpointTarget(out / "model.pt", "xvector", {}, lm, cfg))
    trainer.fit(lambda epoch: loader_for(epoch), ce_step)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from speaker.models.checkpoint import load_checkpoint, save_checkpoint
from speaker.models.heads import AAMSoftmax, MarginScheduler
from store.errors import UserError

log = logging.getLogger(__name__)

RESUME_IGNORED = frozenset({"workers"})
"""Top-level config keys that may change on ``--resume``: they do not change the result
(every random draw of an epoch is seeded from ``(seed, epoch)``, not from the loader, and
a resumed run keeps the torch thread count of the run it continues)."""

RESUME_INPUTS = "inputs"
"""Config key of what a run trains on, beyond its settings (a student's cache identity, an
online teacher's sha256): ``--resume`` against other inputs is refused, naming them."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) torchrun job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun process group when launched by torchrun, else run alone.

    gloo on CPU, NCCL on GPU; the device defaults to CUDA when available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def intra_op_threads(requested: int, workers: int, ctx: DistContext) -> int:
    """Torch intra-op threads for a training or dump process, and set them.

    ``requested > 0`` is taken as is. Auto (0): ``OMP_NUM_THREADS`` when set (torchrun
    sets it to 1); on a GPU, torch's current setting; on a CPU, this process's share
    of the cores (``cores // local ranks``) minus the DataLoader ``workers`` rendering
    crops, at least 1 -- more threads than free cores makes OpenMP spin against the
    workers (measured 2-5x slower steps on a busy 2-core machine).
    """
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if requested > 0:
        threads = requested
    elif omp.isdigit() and int(omp) > 0:
        threads = int(omp)
    elif not ctx.device.startswith("cpu"):
        threads = torch.get_num_threads()
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        threads = max(1, (cores or 1) // max(local_world, 1) - workers)
    torch.set_num_threads(threads)
    return threads


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed for torch's global RNG at the start of ``epoch`` (dropout, init of lazy parts)."""
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass(frozen=True)
class Schedule:
    """The optimizer, its linear warm-up then exponential decay, and the AAM margin ramp.

    Defaults follow wespeaker's VoxCeleb recipes (SGD-Nesterov, lr 0.1 -> 5e-5, warm-up
    6 epochs, margin 0 -> 0.2 between epochs 20 and 40 of 150), scaled by the caller for
    short runs. ``optimizer="adamw"`` (``momentum`` is then beta1) is for runs of a few
    hundred steps, where SGD at 0.1 has no time to recover from its first steps.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    final_lr: float = 5e-5
    warmup_epochs: float = 6.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scale: float = 32.0
    margin: float = 0.2
    margin_increase_start: float = 20.0
    margin_fix_start: float = 40.0

    def learning_rate(self, epoch: float, total_epochs: int) -> float:
        """LR at fractional ``epoch``: exponential decay from ``lr`` to ``final_lr``
        over the run, multiplied by a linear warm-up factor (wespeaker's
        ExponentialDecrease)."""
        progress = min(max(epoch / max(total_epochs, 1), 0.0), 1.0)
        lr = self.lr * math.exp(progress * math.log(self.final_lr / self.lr))
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            lr *= epoch / self.warmup_epochs
        return lr

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, betas=(self.momentum, 0.999),
                                     weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True,
                               weight_decay=self.weight_decay)

    def margin_scheduler(self) -> MarginScheduler:
        return MarginScheduler(
            initial_margin=0.0,
            final_margin=self.margin,
            increase_start_epoch=self.margin_increase_start,
            fix_start_epoch=self.margin_fix_start,
        )


DEFAULT_LR = {"sgd": 0.1, "adamw": 3e-3}
"""Peak LR per optimizer when none is given: wespeaker's SGD value (batch 64), and a common
AdamW value; the demo's and ``make results``' learning rates are chosen on the dev split
(``scripts/tune.py``, docs/tuning.md)."""

DEFAULT_WEIGHT_DECAY = {"sgd": 1e-4, "adamw": 1e-2}


def scaled_schedule(epochs: int, optimizer: Literal["sgd", "adamw"] = "sgd",
                    lr: float | None = None, final_lr: float | None = None) -> Schedule:
    """wespeaker's recipe shape fitted to a run of ``epochs``.

    Warm-up the first 1/8 of the run and the margin ramp from 1/8 to 1/2 of it, capped
    at wespeaker's 6 and 20 -> 40 epochs (so 150 epochs is wespeaker's schedule); the LR
    decays 100x unless ``final_lr`` says otherwise. A straight 6/150 compression leaves a
    few-hundred-step run a handful of warm-up steps: SGD's first steps at full LR then
    blow up the embedding and class-weight norms and the cosine head crawls for the rest
    of the run.

    Example::

        >>> s = scaled_schedule(8, "adamw")
        >>> (s.lr, s.final_lr, s.warmup_epochs, s.margin_increase_start, s.margin_fix_start)
        (0.003, 3e-05, 1.0, 1.0, 4.0)
    """
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    return Schedule(
        optimizer=optimizer, lr=lr, final_lr=lr / 100 if final_lr is None else final_lr,
        weight_decay=DEFAULT_WEIGHT_DECAY[optimizer], warmup_epochs=min(6.0, epochs / 8),
        margin_increase_start=min(20.0, epochs / 8), margin_fix_start=min(40.0, epochs / 2),
    )


KD_WARMUP_FRACTION = 2 / 15
"""The paper ramps the KD weight up over 20 of its 150 epochs."""


def kd_warmup_epochs(epochs: float) -> float:
    """Default KD-weight warm-up of a run of ``epochs``: 2/15 of it, at most the paper's 20.

    >>> kd_warmup_epochs(150), kd_warmup_epochs(15), kd_warmup_epochs(300)
    (20.0, 2.0, 20.0)
    """
    return min(20.0, KD_WARMUP_FRACTION * epochs)


class SpeakerNet(nn.Module):
    """Embedding model + AAM head as one module, so DDP syncs both."""

    def __init__(self, model: nn.Module, head: AAMSoftmax):
        super().__init__()
        self.model = model
        self.head = head

    def forward(
        self, feats: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (embedding, margin logits (CE; KD under ``--kd-logits margin``), scale*cos
        logits without margin (KD under ``--kd-logits cosine``))."""
        emb = self.model(feats)
        return emb, self.head(emb, labels), self.head.cosine_logits(emb)


@dataclass(frozen=True)
class CheckpointTarget:
    """Where and how to write the self-describing checkpoint of a run."""

    path: Path
    arch: str
    arch_kwargs: dict[str, Any]
    label_map: dict[str, Any]
    config: dict[str, Any]


StepLoss = Callable[[nn.Module, Any, float], tuple[torch.Tensor, dict[str, float]]]
"""(net, batch, fractional epoch) -> (loss, scalar logs). ``net`` may be DDP-wrapped."""


@dataclass
class Trainer:
    """The epoch loop shared by teacher and student training."""

    net: SpeakerNet
    schedule: Schedule
    epochs: int
    steps_per_epoch: int
    checkpoint: CheckpointTarget
    ctx: DistContext = field(default_factory=DistContext)
    seed: int = 0
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    eval_every: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net.to(self.ctx.device)
        self.optimizer = self.schedule.build_optimizer(self.net.parameters())
        self.margins = self.schedule.margin_scheduler()
        self.start_epoch = 0
        self.wrapped: nn.Module = self.net
        if self.ctx.world_size > 1:
            self.wrapped = nn.parallel.DistributedDataParallel(self.net)

    def resume(self) -> bool:
        """Load the last completed epoch from the checkpoint, if there is one.

        A checkpoint without training state, or one written with other settings
        (config or label map) than this run's, is a :class:`UserError`: continuing it
        would not give the result of an uninterrupted run of this command.
        """
        path = self.checkpoint.path
        if not path.exists():
            return False
        loaded = load_checkpoint(path)
        state = loaded.state or {}
        if "optimizer" not in state or "epoch" not in state:
            raise UserError(f"{path} holds no training state, so it cannot be resumed")
        diffs = config_differences(loaded.config, self.checkpoint.config)
        inputs = [d for d in diffs if d.startswith(f"{RESUME_INPUTS}.")]
        if inputs:
            raise UserError(
                f"{path} was trained on other inputs than this run's "
                f"({'; '.join(d[len(RESUME_INPUTS) + 1:] for d in inputs)}): its cache or "
                "teacher was rewritten since; resume with the ones it started with, or "
                "choose another --out"
            )
        if _plain(loaded.label_map) != _plain(self.checkpoint.label_map):
            diffs.append("label map (the training speakers or speeds)")
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise UserError(
                f"{path} was written with other settings ({shown}); resume it with the "
                "command that started it, or choose another --out"
            )
        self.net.model.load_state_dict(loaded.model.state_dict())
        self.net.head.load_state_dict(loaded.head.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"])
        threads = state.get("threads")
        if threads and threads != torch.get_num_threads():
            # CPU kernels split their sums by thread, so the count is part of the result;
            # the automatic count follows --workers, which a resume may change.
            log.info("resuming with the %d torch threads the run was started with", threads)
            torch.set_num_threads(threads)
        self.history = list(state.get("history", []))
        log.info("resumed %s after epoch %d", path, self.start_epoch)
        return True

    def fit(self, batches_for_epoch: Callable[[int], Iterable[Any]], step_loss: StepLoss) -> None:
        for epoch in range(self.start_epoch, self.epochs):
            torch.manual_seed(epoch_seed(self.seed, epoch))
            self.net.train()
            logs = self._run_epoch(epoch, batches_for_epoch(epoch), step_loss)
            due = epoch + 1 == self.epochs or (
                self.eval_every > 0 and (epoch + 1) % self.eval_every == 0
            )
            # Only rank 0 evaluates (and saves); the others wait at the checkpoint barrier.
            if self.evaluate is not None and due and self.ctx.is_main:
                self.net.eval()
                logs.update(self.evaluate(self.net.model))
            if self.ctx.is_main:  # every epoch: the losses' own counters are in logs
                log.info("epoch %d: %s", epoch + 1, _fmt(logs))
            self.history.append({"epoch": epoch + 1, **logs})
            self._save(epoch + 1)

    def _run_epoch(self, epoch: int, batches: Iterable[Any], step_loss: StepLoss) -> dict:
        totals: dict[str, float] = {}
        steps = 0
        bar = tqdm(
            unwrap_worker_errors(batches),
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.ctx.is_main,
            leave=False,
        )
        for step, batch in enumerate(bar):
            progress = epoch + step / max(self.steps_per_epoch, 1)
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.learning_rate(progress, self.epochs)
            self.net.head.margin = self.margins.margin(progress)
            loss, logs = step_loss(self.wrapped, batch, progress)
            if not torch.isfinite(loss):
                # Input audio is checked for NaN/inf when read (speaker.io.audio), so this is
                # the optimisation diverging: one line, the last checkpoint stays as it was.
                raise UserError(
                    f"the loss became NaN/inf at epoch {epoch + 1} step {step}: training "
                    f"diverged (a lower --lr may help); {self.checkpoint.path} keeps the "
                    "last completed epoch"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            steps += 1
            for name, value in logs.items():
                totals[name] = totals.get(name, 0.0) + value
            bar.set_postfix(loss=f"{logs.get('loss', loss.item()):.3f}")
        return {name: value / max(steps, 1) for name, value in totals.items()}

    def _save(self, epochs_done: int) -> None:
        if self.ctx.is_main:
            target = self.checkpoint
            save_checkpoint(
                target.path,
                arch=target.arch,
                arch_kwargs=target.arch_kwargs,
                model=self.net.model,
                head=self.net.head,
                label_map=target.label_map,
                config=target.config,
                state={
                    "optimizer": self.optimizer.state_dict(),
                    "epoch": epochs_done,
                    "history": self.history,
                    "schedule": asdict(self.schedule),
                    "threads": torch.get_num_threads(),
                },
            )
        self.ctx.barrier()


def _plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists, paths -> strings)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def config_differences(
    saved: dict[str, Any], requested: dict[str, Any], ignore: frozenset[str] = RESUME_IGNORED
) -> list[str]:
    """``"key: saved -> requested"`` for every (dotted) key whose value differs.

    Example::

        >>> config_differences({"epochs": 2, "s": {"lr": 0.1}}, {"epochs": 3, "s": {"lr": 0.1}})
        ['epochs: 2 -> 3']
    """
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                name = f"{where}.{key}" if where else key
                if not where and key in ignore:
                    continue
                walk(a.get(key), b.get(key), name)
        elif a != b:
            out.append(f"{where}: {json.dumps(a)} -> {json.dumps(b)}")

    walk(_plain(saved), _plain(requested), "")
    return out


_WORKER_PREFIX = f"Caught {UserError.__name__} in DataLoader worker"


def unwrap_worker_errors(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``batches``, turning a :class:`UserError` raised in a DataLoader worker
    back into its one-line message.

    The DataLoader re-raises a worker's exception with the worker's whole traceback as
    its message; for bad input (a missing or corrupt audio file) the CLI must print one
    line, the original message, as it does with ``--workers 0``. After any error the
    loader's workers are shut down at once: left to the garbage collector (the traceback
    keeps the iterator alive in a reference cycle) each costs a 5-s join timeout.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            if not isinstance(exc, UserError):
                raise
            message = str(exc)
            if message.startswith(_WORKER_PREFIX):
                last = [line for line in message.splitlines() if line.strip()][-1]
                for prefix in (f"{UserError.__module__}.{UserError.__name__}: ",
                               f"{UserError.__name__}: "):
                    if last.startswith(prefix):
                        raise UserError(last[len(prefix):]) from None
            raise
        yield batch


def _fmt(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in logs.items())
