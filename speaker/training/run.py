"""The run skeleton of teacher and student training: what every run into ``--out`` does
around its own data and loss.

A :class:`TrainingRun` joins the (torchrun) process group, refuses an ``--out`` that is not
a folder, reads and checks the training and evaluation audio (the dev split, else the test
split), builds model + AAM head, and -- only once everything that can be checked has been --
takes the run directory's lock (one writer per directory, keyed by its resolved path:
:class:`store.lock.StoreLock`), refuses to overwrite a checkpoint without ``--resume``,
resumes, and writes ``config.json``; :meth:`TrainingRun.finish` writes ``results.json``
last, so its presence says the run finished. The stages keep what is their own: where
batches come from, the step loss, what their config holds.

Example::

    with TrainingRun(out, workers=config.workers) as run:
        manifest, rate = run.training_manifest(data)
        ...  # the stage's own renderer / views
        trainer = run.trainer(run.net(arch, kwargs, classes, scale, seed), schedule, ...)
        trainer.fit(batches, step)
        run.finish(trainer.history, final)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from speaker.evaluation.evaluate import VerificationResult, evaluate_model
from speaker.io.audio import AudioReader
from speaker.io.manifest import Manifest
from speaker.io.paths import DataPaths
from speaker.models import build
from speaker.models.heads import AAMSoftmax
from speaker.training.trainer import (
    CheckpointTarget,
    Schedule,
    SpeakerNet,
    Trainer,
    init_distributed,
    intra_op_threads,
    shutdown_distributed,
)
from speaker.views.dataset import check_audio
from store.atomic import write_json
from store.errors import UserError
from store.lock import StoreLock

log = logging.getLogger("speaker.training")


class Evaluator:
    """The evaluation a :class:`Trainer` runs (EER etc. of the embedding model on the dev
    split, else the test split: :meth:`TrainingRun.evaluator`); ``last`` keeps the latest
    full result."""

    def __init__(self, manifest: Manifest, trials: list, reader: AudioReader, device: str):
        self.manifest, self.trials, self.reader, self.device = manifest, trials, reader, device
        self.last: VerificationResult | None = None

    def result(self, model: torch.nn.Module) -> VerificationResult:
        self.last = evaluate_model(model, self.manifest, self.trials, self.reader, self.device)
        return self.last

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        return self.result(model).summary()


class TrainingRun:
    """One training process writing the run directory ``out`` (a context manager: leaving
    it releases the directory's lock, however the run ends)."""

    def __init__(self, out: Path, workers: int):
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory; choose a folder")
        self.out = out
        self.ctx = init_distributed()
        intra_op_threads(0, workers, self.ctx)  # leave the cores the loader workers use
        self._lock: StoreLock | None = None
        self.eval_split: str | None = None  # "dev" or "test" once evaluator() chose one

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def training_manifest(self, data: DataPaths, check: bool = True) -> tuple[Manifest, int]:
        """The training manifest and its sample rate; ``check``: its audio files exist and
        are all at that rate (False where the crops are not read from the audio)."""
        manifest = data.train_manifest()
        sample_rate = manifest[0].sample_rate
        if check:
            check_audio(manifest, sample_rate, "training manifest")
        return manifest, sample_rate

    def evaluator(self, data: DataPaths, sample_rate: int, reader: AudioReader
                  ) -> Evaluator | None:
        """The run's own evaluation (its audio checked): on the dev split when the data has
        one -- a training run never scores the test trials then (a given test trial list is
        only read, so bad input is still refused before the first step) -- else on the test
        split, else None. ``results.json`` records the split as ``eval_split``."""
        if data.has_dev:
            if data.has_test:
                data.test_set()
            self.eval_split = "dev"
        elif data.has_test:
            self.eval_split = "test"
        else:
            return None
        manifest, trials = data.split(self.eval_split)
        check_audio(manifest, sample_rate, f"{self.eval_split} manifest")
        log.info("evaluating on the %s split (%d trials)%s", self.eval_split, len(trials),
                 "; the test trials are not scored" if self.eval_split == "dev" else "")
        return Evaluator(manifest, trials, reader, self.ctx.device)

    @staticmethod
    def net(arch: str, arch_kwargs: dict[str, Any], num_classes: int, scale: float,
            seed: int) -> SpeakerNet:
        """The embedding model and its AAM head, initialised from ``seed``."""
        torch.manual_seed(seed)
        model = build(arch, **arch_kwargs)
        return SpeakerNet(model, AAMSoftmax(model.embed_dim, num_classes, scale=scale))

    def trainer(self, net: SpeakerNet, schedule: Schedule, *, epochs: int,
                steps_per_epoch: int, label_map: dict[str, Any], config: dict[str, Any],
                seed: int, evaluate: Evaluator | None, eval_every: int,
                resume: bool) -> Trainer:
        """The :class:`Trainer` of this run, resumed when asked, with ``config`` (the run's
        resolved settings, ``arch``/``arch_kwargs`` among them) written as ``config.json``.

        From here on this process is the run directory's one writer: a second run into the
        same folder (under any spelling of its path) is refused until this one ends.
        """
        trainer = Trainer(
            net, schedule, epochs=epochs, steps_per_epoch=steps_per_epoch,
            checkpoint=CheckpointTarget(self.out / "model.pt", config["arch"],
                                        config["arch_kwargs"], label_map, config),
            ctx=self.ctx, seed=seed, evaluate=evaluate, eval_every=eval_every,
        )
        if self.ctx.is_main:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._lock = StoreLock.acquire(self.out)
        if resume:
            trainer.resume()
        elif trainer.checkpoint.path.exists():
            raise UserError(f"{trainer.checkpoint.path} exists; pass --resume to continue it "
                            "or choose another --out")
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", config)
        self.ctx.barrier()
        return trainer

    def finish(self, history: list[dict], final: dict[str, Any]) -> None:
        """Write ``results.json`` (last: its presence says the run finished) and leave the
        process group."""
        if self.ctx.is_main:
            write_json(self.out / "results.json", {"history": history, "final": final,
                                                   "eval_split": self.eval_split})
        shutdown_distributed()
