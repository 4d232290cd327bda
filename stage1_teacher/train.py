"""Train the teacher: ``python -m stage1_teacher.train``.

AAM-softmax training of any registered architecture on augmented crops, with
SGD-Nesterov, warm-up + exponential LR decay and the margin ramp (wespeaker's
recipe), a checkpoint after every epoch (atomic) and ``--resume``. Presets give the
settings; any option given on the command line overrides its preset value, and the
resolved configuration is saved as ``config.json`` next to the checkpoint.

``--resume`` continues ``OUT/model.pt`` after its last completed epoch and gives the
weights an uninterrupted run would have (CPU, same seed). It is refused unless the
resolved settings equal those the checkpoint was written with (only ``--workers`` may
change): the LR schedule, for one, spans ``--epochs``. Bad input (missing, corrupt or
mixed-rate audio, unknown trial ids, duplicate ids) stops the run with one ``error:``
line before anything is overwritten; utterances shorter than the crop are repeat-padded.

Augmentation draws on MUSAN/RIR audio (``--musan``/``--rirs``, or ``musan/`` and ``rirs/``
under ``--data``). Without it nothing is added whatever ``aug_prob`` says: the run says so
in one warning line at the start and ``config.json`` records what the crops really get
under ``augmentation`` (``kinds: []``, ``probability: 0``) next to the requested
``augment`` settings. (Refusing instead would break runs that want clean crops; the line
and the record make the choice visible.)

Examples::

    python -m stage1_teacher.train --preset demo --data toy/ --out exp/teacher
    torchrun --nproc_per_node 2 -m stage1_teacher.train --preset demo --data toy/ --out exp/t
    python -m stage1_teacher.train --preset voxceleb --train vox2/manifest.jsonl \\
        --test vox1/manifest.jsonl --trials vox1/veri_test2.txt --musan musan --rirs RIRS_NOISES \\
        --out exp/ecapa1024
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import click
import torch
from torch.utils.data import DataLoader

from speaker.evaluation.evaluate import evaluate_model
from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths, data_options
from speaker.models import build
from speaker.models.heads import AAMSoftmax
from speaker.training.trainer import (
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
from speaker.views.augment import AugmentConfig, announce_augmentation
from speaker.views.dataset import EpochViews, ViewRenderer, check_audio
from store.atomic import write_json
from store.cli import parse_options, run, setup_logging
from store.errors import UserError

log = logging.getLogger("stage1_teacher.train")


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that defines a teacher run (saved as config.json)."""

    arch: str
    arch_kwargs: dict[str, Any]
    epochs: int
    batch_size: int
    crop_seconds: float
    views_per_utt: int
    schedule: Schedule
    augment: AugmentConfig
    eval_every: int = 1
    seed: int = 0
    workers: int = 0


PRESETS: dict[str, TeacherConfig] = {
    # CPU minutes on the toy corpus: a 2M-parameter ECAPA, about 4x the demo students,
    # which ends clearly ahead of them. SGD at lr 0.02, not wespeaker's 0.1: in 250 steps
    # the higher LR never recovers from its first steps (docs/recipe_sweep.md).
    "demo": TeacherConfig(
        arch="ecapa",
        arch_kwargs={"channels": 256, "embed_dim": 192},
        epochs=8,
        batch_size=64,
        crop_seconds=2.0,
        views_per_utt=1,
        schedule=scaled_schedule(8, "sgd", lr=0.02),
        augment=AugmentConfig(aug_prob=0.6),
        eval_every=2,
        workers=1,
    ),
    # The paper's / wespeaker's VoxCeleb2 setting: ECAPA C=1024, 200-frame crops,
    # MUSAN+RIR with probability 0.6, speed perturbation, 150 epochs, batch 256.
    "voxceleb": TeacherConfig(
        arch="ecapa",
        arch_kwargs={"channels": 1024, "embed_dim": 192},
        epochs=150,
        batch_size=256,
        crop_seconds=2.0,
        views_per_utt=1,
        schedule=Schedule(weight_decay=2e-5),
        augment=AugmentConfig(aug_prob=0.6, speeds=(1.0, 0.9, 1.1)),
        eval_every=10,
        workers=8,
    ),
}


def resolve_config(preset: str, overrides: dict[str, Any]) -> TeacherConfig:
    """The preset with every non-None command-line value applied on top.

    An ``optimizer`` other than the preset's replaces the whole schedule with
    :func:`~speaker.training.trainer.scaled_schedule` for that optimizer (the preset's LR and
    weight decay belong to its own optimizer).
    """
    config = PRESETS[preset]
    top = {f.name for f in fields(TeacherConfig)}
    sched = {k: v for k, v in overrides.items() if k not in top and v is not None}
    config = replace(config, **{k: v for k, v in overrides.items() if k in top and v is not None})
    optimizer = sched.pop("optimizer", config.schedule.optimizer)
    if optimizer != config.schedule.optimizer:
        config = replace(config, schedule=scaled_schedule(config.epochs, optimizer,
                                                          sched.pop("lr", None)))
    if sched:
        config = replace(config, schedule=replace(config.schedule, **sched))
    return config


def train_teacher(config: TeacherConfig, data: DataPaths, out: Path, resume: bool) -> dict:
    """Train (or resume) a teacher into ``out``; returns the final evaluation summary."""
    ctx = init_distributed()
    intra_op_threads(0, config.workers, ctx)
    manifest = data.train_manifest()
    label_map = LabelMap.from_manifest(manifest, speeds=config.augment.speeds)
    sample_rate = manifest[0].sample_rate
    check_audio(manifest, sample_rate, "training manifest")
    bank = data.noise_bank(sample_rate)
    augmentation = announce_augmentation(config.augment, bank)
    render = ViewRenderer(
        manifest,
        label_map,
        crop_samples=int(round(config.crop_seconds * sample_rate)),
        augment=config.augment,
        bank=bank,
        sample_rate=sample_rate,
    )
    views = EpochViews(render, config.views_per_utt, config.seed, ctx.rank, ctx.world_size)
    if len(views) < config.batch_size:
        raise UserError(
            f"--batch-size {config.batch_size} is larger than the {len(views)} views per rank"
        )
    torch.manual_seed(config.seed)
    model = build(config.arch, **config.arch_kwargs)
    head = AAMSoftmax(model.embed_dim, label_map.num_classes, scale=config.schedule.scale)
    evaluate = None
    if data.has_test:
        test_manifest, trials = data.test_set()
        check_audio(test_manifest, sample_rate, "test manifest")

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return evaluate_model(m, test_manifest, trials, render.reader, ctx.device).summary()

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    # "augmentation": what the crops really get (config.augment is what was asked for).
    config_dict = {"kind": "teacher", **asdict(config), "data": data.to_dict(),
                   "augmentation": augmentation}
    trainer = Trainer(
        SpeakerNet(model, head),
        config.schedule,
        epochs=config.epochs,
        steps_per_epoch=len(views) // config.batch_size,
        checkpoint=CheckpointTarget(
            out / "model.pt", config.arch, config.arch_kwargs, label_map.to_dict(), config_dict
        ),
        ctx=ctx,
        seed=config.seed,
        evaluate=evaluate,
        eval_every=config.eval_every,
    )
    if resume:
        trainer.resume()
    elif trainer.checkpoint.path.exists():
        raise UserError(
            f"{trainer.checkpoint.path} exists; pass --resume to continue it or choose another --out"
        )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config_dict)
    ctx.barrier()

    def batches(epoch: int) -> DataLoader:
        views.set_epoch(epoch)
        return DataLoader(
            views, batch_size=config.batch_size, num_workers=config.workers, drop_last=True
        )

    trainer.fit(batches, ce_step)
    final = trainer.history[-1] if trainer.history else {}
    if ctx.is_main:
        write_json(out / "results.json", {"history": trainer.history, "final": final})
    shutdown_distributed()
    return final


def ce_step(net: torch.nn.Module, batch: Any, epoch: float) -> tuple[torch.Tensor, dict]:
    """AAM cross-entropy on one batch of (features, labels), moved to the net's device."""
    device = next(net.parameters()).device
    feats, labels = (t.to(device, non_blocking=True) for t in batch)
    _, margin_logits, cos_logits = net(feats, labels)
    loss = torch.nn.functional.cross_entropy(margin_logits, labels)
    acc = (cos_logits.argmax(1) == labels).float().mean()
    return loss, {"loss": loss.item(), "acc": acc.item()}


@click.command(context_settings={"show_default": True, "help_option_names": ["-h", "--help"]}, epilog="""\b
Examples:
  python -m stage1_teacher.train --preset demo --data toy --out exp/teacher
  python -m stage1_teacher.train --preset demo --data toy --out exp/teacher --resume
  torchrun --nproc_per_node 2 -m stage1_teacher.train --preset demo --data toy --out exp/t
  python -m stage1_teacher.train --preset voxceleb --data data/vox --out exp/ecapa1024
""")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="demo")
@data_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--arch", default=None, help="Registered architecture (python -m speaker.models).")
@click.option("--arch-opt", multiple=True, help="Architecture argument key=value, repeatable.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Total epochs (the LR decays over them; --resume needs the same value).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Crops per step and rank.")
@click.option("--crop-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Training crop length; shorter utterances are repeat-padded.")
@click.option("--views-per-utt", type=click.IntRange(min=1), default=None,
              help="Crops per utterance per epoch.")
@click.option("--optimizer", type=click.Choice(sorted(DEFAULT_LR)), default=None,
              help="Another optimizer than the preset's: its scaled_schedule over --epochs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak LR [default: the preset's, or the optimizer's default].")
@click.option("--eval-every", type=click.IntRange(min=0), default=None,
              help="Evaluate every N epochs (0: last).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes.")
@click.option("--seed", type=int, default=None)
@click.option("--resume", is_flag=True,
              help="Continue OUT/model.pt after its last epoch; refused unless the settings "
                   "are the ones it was started with (--workers may change).")
@click.option("-v", "--verbose", is_flag=True)
def cli(preset: str, out: Path, arch_opt: tuple[str, ...], resume: bool, verbose: bool, **opts):
    """Train a speaker-embedding teacher with AAM softmax on augmented crops."""
    setup_logging(verbose)
    data = DataPaths.from_options(opts)
    overrides = dict(opts)
    if arch_opt:
        base = PRESETS[preset].arch_kwargs if overrides.get("arch") is None else {}
        overrides["arch_kwargs"] = {**base, **parse_options(arch_opt)}
    final = train_teacher(resolve_config(preset, overrides), data, out, resume)
    if final:
        click.echo(" ".join(f"{k}={v:.4f}" for k, v in final.items() if isinstance(v, float)))


if __name__ == "__main__":
    run(cli)
