"""Train a student against cached soft labels: ``python -m stage2_student.train``.

Streams rows of a logit cache, replays each row's exact augmented crop, and trains
any registered architecture with ``CE(AAM) + w(epoch) * distillation term``, where
the term is plain KD, DKD with the paper's emphasis on the non-target part
(alpha*TCKD + beta*NCKD), triage KD (TRKD), dual-group KD or embedding KD; a loss's own
options are its ``--<loss>-*`` flags. ``--teacher`` runs the same losses with a
live teacher on full logits instead of the cache (online KD, for comparison). Every
setting is checked against the cache before the first step; the resolved config is
saved as ``config.json`` next to ``model.pt``, and the final evaluation as
``results.json`` and ``det.png``.

Examples::

    python -m stage2_student.train --cache exp/logits.zarr --data toy --arch xvector \\
        --arch-opt channels=128 --loss dkd --alpha 1 --beta 2 --out exp/xv-dkd
    python -m stage2_student.train --cache exp/logits.zarr --data toy --arch campp \\
        --loss kd --temperature 2 --topk 10 --out exp/campp-kd
    python -m stage2_student.train --cache exp/logits.zarr --data toy --loss trkd \\
        --trkd-tau-end 0.05 --out exp/xv-trkd
    python -m stage2_student.train --cache exp/logits.zarr --data toy --loss dualgroup \\
        --topk 16 --dualgroup-binary-entropy 0.5 --out exp/xv-dualgroup
    torchrun --nproc_per_node 2 -m stage2_student.train --cache exp/logits.zarr --data toy \\
        --arch resnet34 --arch-opt base_width=8 --loss dkd --out exp/r34-dkd
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import torch
from torch.utils.data import DataLoader

from speaker.augment import AugmentConfig
from speaker.cli import parse_options, run, setup_logging, write_json
from speaker.data import LabelMap
from speaker.dataset import ViewRenderer
from speaker.errors import UserError
from speaker.evaluation import VerificationResult, evaluate_model
from speaker.metrics import plot_det
from speaker.models import build
from speaker.models.heads import AAMSoftmax
from speaker.recipe import DataPaths, data_options
from speaker.teacher import Teacher, load_teacher
from speaker.training import (
    DEFAULT_LR,
    CheckpointTarget,
    Schedule,
    SpeakerNet,
    Trainer,
    init_distributed,
    intra_op_threads,
    scaled_schedule,
    shutdown_distributed,
)
from stage2_student.data import CachedViews, CacheRequest, StudentBatch, open_cache
from stage2_student.loss_flags import loss_option_flags, options_from_flags
from stage2_student.losses import DistillBatch, DistillConfig, distill_loss, loss_names
from store import StoreError

log = logging.getLogger("stage2_student.train")


@dataclass(frozen=True)
class StudentConfig:
    """Everything that defines a student run (saved as config.json)."""

    arch: str
    arch_kwargs: dict[str, Any]
    distill: DistillConfig
    schedule: Schedule
    epochs: int = 10
    batch_size: int = 64
    teacher_margin: bool = False
    online_teacher: str | None = None
    eval_every: int = 0
    seed: int = 0
    workers: int = 1


def check_request(config: StudentConfig, views: CachedViews, live: Teacher | None,
                  embed_dim: int) -> None:
    """Refuse, before any training, what this cache (or live teacher) cannot serve."""
    spec = views.spec
    if config.distill.loss == "emb":
        teacher_dim = spec.embedding_dim if live is None else None
        if live is None and teacher_dim == 0:
            raise UserError(f"--loss emb needs teacher embeddings, but {views.request.path} has "
                            "none (dump it with --embeddings)")
        if teacher_dim and teacher_dim != embed_dim:
            raise UserError(f"--loss emb: the student's embedding has {embed_dim} dims, the "
                            f"teacher's {teacher_dim}; pass --arch-opt embed_dim={teacher_dim}")
    if live is not None and live.label_map is not None and (
            json.dumps(live.label_map, sort_keys=True) != json.dumps(spec.label_map,
                                                                      sort_keys=True)):
        raise UserError(f"--teacher {config.online_teacher}: its classes (label map) differ "
                        f"from the ones {views.request.path} was dumped with; online KD "
                        "needs a teacher over the same speakers")
    if live is not None and live.sha256 != spec.teacher.checkpoint_sha256:
        log.warning("the live teacher is not the one the cache was dumped with")


def train_student(config: StudentConfig, cache: Path, data: DataPaths, out: Path,
                  resume: bool) -> dict:
    """Train (or resume) one student into ``out``; returns the final evaluation."""
    ctx = init_distributed()
    intra_op_threads(0, config.workers, ctx)  # leave the cores the loader workers use
    manifest = data.train_manifest()
    request = CacheRequest(cache, config.distill.topk, config.distill.temperature,
                           config.teacher_margin)
    live = None if config.online_teacher is None else load_teacher(config.online_teacher,
                                                                   ctx.device)
    spec = open_cache(request, manifest)[0].spec
    sample_rate = manifest[0].sample_rate
    bank = data.noise_bank(sample_rate)
    if bank.content_hash() != spec.noise_bank_hash:
        raise UserError(f"the noise bank (--musan/--rirs) differs from the one {cache} was "
                        "dumped with; crops could not be replayed")
    render = ViewRenderer(
        manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
        AugmentConfig.from_dict(spec.augment), bank, sample_rate=sample_rate,
    )
    views = CachedViews(request, render, config.batch_size, config.seed, ctx.rank,
                        ctx.world_size, keep_waves=live is not None and live.input_kind == "wave",
                        buckets=live is None and config.distill.loss in ("kd", "dkd", "trkd", "dualgroup"))
    torch.manual_seed(config.seed)
    model = build(config.arch, **config.arch_kwargs)
    check_request(config, views, live, model.embed_dim)
    head = AAMSoftmax(model.embed_dim, spec.num_classes, scale=config.schedule.scale)
    steps = views.batches_per_epoch()
    if steps == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the rows each "
                        f"rank streams from {cache}")
    evaluate = None
    evaluated: list[VerificationResult] = []  # the latest evaluation, if any
    if data.has_test:
        test_manifest, trials = data.test_set()

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            result = evaluate_model(m, test_manifest, trials, render.reader, ctx.device)
            evaluated[:] = [result]
            return result.summary()

    out.mkdir(parents=True, exist_ok=True)
    config_dict = {"kind": "student", **asdict(config), "cache": str(cache.absolute()),
                   "data": data.to_dict()}
    trainer = Trainer(
        SpeakerNet(model, head), config.schedule, epochs=config.epochs, steps_per_epoch=steps,
        checkpoint=CheckpointTarget(out / "model.pt", config.arch, config.arch_kwargs,
                                    spec.label_map, config_dict),
        ctx=ctx, seed=config.seed, evaluate=evaluate, eval_every=config.eval_every,
    )
    if resume:
        trainer.resume()
    elif trainer.checkpoint.path.exists():
        raise UserError(f"{trainer.checkpoint.path} exists; pass --resume to continue it")
    if ctx.is_main:
        write_json(out / "config.json", config_dict)

    def batches(epoch: int):
        views.set_epoch(epoch)
        loader = DataLoader(views, batch_size=None, num_workers=config.workers)
        return itertools.islice(loader, steps)

    trainer.fit(batches, distill_step(config.distill, live, ctx.device))
    warn_if_capped(trainer.history, config.distill, views.k_prime)
    final = trainer.history[-1] if trainer.history else {}
    if ctx.is_main and evaluate is not None:
        # The trainer evaluates after the last epoch; a resumed finished run ran none.
        result = evaluated[-1] if evaluated else evaluate_model(
            model, test_manifest, trials, render.reader, ctx.device)
        final = {**final, **result.summary()}
        plot_det({out.name: result.det()}, out / "det.png")
        write_json(out / "results.json", {"history": trainer.history, "final": final})
    shutdown_distributed()
    return final


def warn_if_capped(history: list[dict], distill: DistillConfig, k_prime: int) -> None:
    """Say so when TRKD's confusion set was still capped at k' in the last epoch: there the
    cache's top-k was too short for the tau asked for (the rows fell back to the tail as
    background). Every epoch's share is in the history as ``trkd_capped``."""
    capped = history[-1].get("trkd_capped", 0.0) if history else 0.0
    if capped > 0:
        log.warning("trkd: the confusion set wanted more than k'=%d speakers on %.1f%% of the "
                    "last epoch's rows (mean tau %.3g); a cache with a larger k, or a smaller "
                    "tau, would not cap them", k_prime, 100 * capped,
                    history[-1].get("trkd_tau", float("nan")))


def distill_step(config: DistillConfig, live: Teacher | None, device: str):
    """The per-batch loss: AAM cross-entropy plus the weighted distillation term."""

    def step(net: torch.nn.Module, batch: StudentBatch, epoch: float):
        feats, labels = batch.feats.to(device), batch.labels.to(device)
        emb, margin_logits, cos_logits = net(feats, labels)
        ce = torch.nn.functional.cross_entropy(margin_logits, labels)
        parts = DistillBatch(student_logits=cos_logits, labels=labels,
                             topk_index=batch.topk_index, teacher=batch.teacher,
                             student_emb=emb, teacher_emb=batch.teacher_emb)
        if live is not None:
            teacher_input = batch.waves if live.input_kind == "wave" else batch.feats
            parts.teacher_logits, parts.teacher_emb = live(teacher_input.to(device))
        kd = distill_loss(config, parts, epoch)
        acc = (cos_logits.argmax(1) == labels).float().mean()
        return ce + kd, {"loss": (ce + kd).item(), "ce": ce.item(), "kd": kd.item(),
                         "acc": acc.item(), **parts.stats}

    return step


@click.command(context_settings={"show_default": True})
@click.option("--cache", type=click.Path(exists=True, path_type=Path), required=True,
              help="logits.zarr written by stage1_teacher.dump.")
@data_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--arch", default="xvector", help="Registered architecture (python -m speaker.models).")
@click.option("--arch-opt", multiple=True, help="Architecture argument key=value, repeatable.")
@click.option("--loss", type=click.Choice(loss_names()), default="dkd")
@click.option("--alpha", type=float, default=1.0, help="TCKD weight (dkd).")
@click.option("--beta", type=float, default=2.0, help="NCKD weight (dkd).")
@click.option("--temperature", type=float, default=1.0, help="Must be on the cache's grid.")
@click.option("--topk", type=int, default=None, help="k' <= cache k (default: all k): the kept speakers, TRKD's cap and "
                   "dual-group's primary group.")
@click.option("--kd-warmup", type=float, default=1.0, help="Epochs of linear KD-weight ramp.")
@click.option("--teacher-margin/--no-teacher-margin", default=False,
              help="Apply the teacher's AAM margin to its cached target logit.")
@click.option("--teacher", "online_teacher", default=None,
              help="Online KD: a live teacher (checkpoint/TorchScript/module:factory).")
@click.option("--epochs", type=click.IntRange(min=1), default=10)
@click.option("--batch-size", type=click.IntRange(min=1), default=64)
@click.option("--optimizer", type=click.Choice(sorted(DEFAULT_LR)), default="sgd",
              help="SGD-Nesterov (wespeaker) or AdamW (learns faster in runs of a few "
                   "hundred steps: docs/recipe_sweep.md).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak LR [default: 0.1 for sgd, 3e-3 for adamw].")
@click.option("--final-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="LR at the end of the run [default: --lr / 100].")
@click.option("--eval-every", type=click.IntRange(min=0), default=0,
              help="Evaluate every N epochs (0: last).")
@click.option("--workers", type=click.IntRange(min=0), default=1,
              help="DataLoader workers replaying crops (the result does not depend on it).")
@click.option("--seed", type=int, default=0)
@click.option("--resume", is_flag=True, help="Continue from OUT/model.pt.")
@click.option("-v", "--verbose", is_flag=True)
@loss_option_flags
def cli(cache: Path, out: Path, arch: str, arch_opt: tuple[str, ...], loss: str, alpha: float,
        beta: float, temperature: float, topk: int | None, kd_warmup: float, epochs: int,
        optimizer: str, lr: float | None, final_lr: float | None, resume: bool, verbose: bool,
        **opts) -> None:
    """Train a student of any architecture from the cached teacher soft labels."""
    setup_logging(verbose)
    data = DataPaths.from_options(opts)
    options = options_from_flags(loss, opts, epochs)
    try:
        distill = DistillConfig(loss=loss, alpha=alpha, beta=beta, temperature=temperature,
                                topk=topk, warmup_epochs=kd_warmup, options=options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    config = StudentConfig(arch=arch, arch_kwargs=parse_options(arch_opt), distill=distill,
                           schedule=scaled_schedule(epochs, optimizer, lr, final_lr), epochs=epochs,
                           **opts)
    final = train_student(config, cache, data, out, resume)
    if final:
        click.echo(" ".join(f"{k}={v:.4f}" for k, v in final.items() if isinstance(v, float)))


if __name__ == "__main__":
    run(cli, user_errors=(StoreError,))
