"""Train a student against cached soft labels: ``python -m stage2_student.train``.

Streams rows of a logit cache, replays each row's exact augmented crop, and trains
any registered architecture with ``CE(AAM) + w(epoch) * distillation term``, where
the term is plain KD, DKD with the paper's emphasis on the non-target part
(alpha*TCKD + beta*NCKD), triage KD (TRKD), dual-group KD or embedding KD; a loss's own
options are its ``--<loss>-*`` flags. ``--online-teacher`` runs the same losses with
a live teacher on full logits instead of the cache (online KD, for comparison).

KD compares the student's and the teacher's logits under one convention (``--kd-logits``):
``margin`` (the default, as the paper's code) puts each head's margin on the target -- the
student's AAM margin as it ramps up, the teacher's own margin kind and value from the
cache's teacher attributes (or the live teacher's) -- and ``cosine`` uses ``scale * cos``
on both sides. The student head's logit scale is the teacher's: another one would be KD at
another temperature, and is refused. The KD weight ramps up over 2/15 of the epochs (the
paper's 20 of 150) unless ``--kd-warmup`` says otherwise.

``--tail sampled`` (KD and DKD) replaces the tail bucket by the cache's sampled tail, an
unbiased estimate of the full-logit loss (docs/sampled_tail.md); it needs a cache dumped with
``--tail-samples`` and k' = k. With ``--online-teacher`` the live teacher's logits are
summarised and drawn the way the dump does (the cache's k, M and generators per row), so an
online run with the dump's teacher sees the cache's draws.

Every setting is checked against the cache before the first step; the resolved config is
saved as ``config.json`` next to ``model.pt`` (``--config`` runs it again, any option given
on the command line replacing its value), and the training history as ``results.json``, with
the final evaluation and ``det.png`` when the data has a dev or test split: the dev split
when there is one (the test trials are then never scored in training), else the test split
(pass only ``--train`` to skip it when another step evaluates the models together, as the
demo does). Examples: see :data:`EXAMPLES` (``--help``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import click
import torch
from torch.utils.data import DataLoader

from speaker.evaluation.metrics import plot_det
from speaker.io.manifest import LabelMap
from speaker.io.paths import DataPaths, data_options
from speaker.models.margin import LogitMargin
from speaker.teachers.base import Teacher
from speaker.teachers.load import load_teacher
from speaker.training.options import given_options, resolve_run, training_options
from speaker.training.run import TrainingRun
from speaker.training.trainer import RESUME_INPUTS, Schedule, kd_warmup_epochs
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer, check_audio
from stage2_student.data import CachedViews, CacheRequest, StudentBatch, open_cache
from stage2_student.fresh_views import fresh_views_option, with_fresh_views
from stage2_student.losses import (
    DistillBatch,
    DistillConfig,
    distill_loss,
    loss_names,
    registered_loss,
    sampled_from_logits,
)
from stage2_student.losses.flags import loss_option_flags, options_from_flags
from store import StoreReader, StoreSpec, TeacherInfo
from store.cli import StoreLocation, run, setup_logging, storage_option_flag
from store.errors import UserError
from store.remote import is_remote
from store.schema import spec_checksum
from store.tail import tail_rng

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
    online_teacher: str | None = None
    fresh_views: bool = False  # online KD on new crops every epoch (stage2_student.fresh_views)
    eval_every: int = 0
    seed: int = 0
    workers: int = 1

    @classmethod
    def from_dict(cls, saved: dict[str, Any], where: str) -> StudentConfig:
        """The config a run saved (``config.json`` without ``kind``/``cache``/``data``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(saved) - known)
        missing = sorted(f.name for f in fields(cls) if f.name not in saved
                         and f.default is MISSING)
        if unknown or missing:
            raise UserError(f"{where}: not a student config.json of this version (unknown keys "
                            f"{unknown or 'none'}, missing {missing or 'none'})")
        try:
            return cls(**{**saved, "distill": DistillConfig(**saved["distill"]),
                          "schedule": Schedule(**saved["schedule"])})
        except (TypeError, ValueError) as exc:
            raise UserError(f"{where}: {exc}") from None


def kd_teacher_margin(kd_logits: str, teacher: TeacherInfo | Teacher) -> LogitMargin | None:
    """The margin the teacher's logits get under the KD convention (None: as they are).

    ``teacher`` is the cache's ``spec.teacher`` or a live teacher: both carry the
    teacher head's ``margin_kind``, ``margin`` and ``scale``.
    """
    if kd_logits == "cosine" or teacher.margin_kind == "none":
        return None
    try:
        return LogitMargin(teacher.margin_kind, teacher.margin, teacher.scale)
    except ValueError as exc:
        raise UserError(f"the teacher's head ({teacher.arch}): {exc}") from None


def check_scale(config: StudentConfig, teacher_scale: float, source: str) -> None:
    """Refuse a student head whose logit scale differs from the teacher's, when the
    distillation term compares logits (CE alone and embedding KD do not)."""
    if not registered_loss(config.distill.loss).uses_teacher_buckets:
        return
    if not math.isclose(config.schedule.scale, teacher_scale, rel_tol=1e-6):
        raise UserError(f"the student head's logit scale {config.schedule.scale:g} differs from "
                        f"the teacher's {teacher_scale:g} ({source}); KD at another scale is KD "
                        f"at another temperature: pass --scale {teacher_scale:g}")


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
        raise UserError(f"--online-teacher {config.online_teacher}: its classes (label map) differ "
                        f"from the ones {views.request.path} was dumped with; online KD "
                        "needs a teacher over the same speakers")
    if live is not None and live.sha256 != spec.teacher.checkpoint_sha256:
        log.warning("the live teacher is not the one the cache was dumped with")


@dataclass(frozen=True)
class OnlineDraws:
    """How online ``--tail sampled`` summarises and draws a live teacher's rows: the cache's
    k, M and run seed, and the temperature's column (the generators' ``t``)."""

    k: int
    m: int
    run_seed: int
    t_index: int

    @classmethod
    def of(cls, spec: StoreSpec, temperature: float) -> OnlineDraws:
        return cls(spec.k, spec.tail_draws, int(spec.extra.get("run_seed", 0)),
                   spec.temperature_index(temperature))


def cache_identity(spec: StoreSpec) -> dict[str, Any]:
    """What the rows of a cache are, for ``--resume`` to compare: the teacher's checkpoint
    sha256, the manifest digest, the dump's run seed, the augmentation and noise bank, and
    a digest of all the spec attributes (anything else a re-dump changes)."""
    return {"teacher_sha256": spec.teacher.checkpoint_sha256,
            "manifest_hash": spec.manifest_hash, "run_seed": spec.extra.get("run_seed"),
            "augment_hash": spec.augment_hash, "noise_bank_hash": spec.noise_bank_hash,
            "spec_sha256": spec_checksum(spec.to_attrs())}


def train_student(config: StudentConfig, cache: str | Path, data: DataPaths, out: Path,
                  resume: bool, storage_options: dict | None = None) -> dict:
    """Train (or resume) one student into ``out``; returns the last epoch's statistics, with the
    final evaluation when ``data`` has a dev split (else a test split). ``cache`` may be an
    object-store URL, opened with ``storage_options`` (never saved in the run: they may hold
    credentials)."""
    with TrainingRun(out, config.workers) as job:
        ctx = job.ctx
        manifest, sample_rate = job.training_manifest(data, check=False)
        live = None if config.online_teacher is None else load_teacher(config.online_teacher,
                                                                       ctx.device)
        spec = open_cache(CacheRequest(cache, config.distill.topk, config.distill.temperature,
                                       sampled_tail=config.distill.tail == "sampled",
                                       storage_options=storage_options), manifest)[0].spec
        if spec.features is None:  # the crops are replayed from the audio
            check_audio(manifest, sample_rate, "training manifest")
        if live is None:
            check_scale(config, spec.teacher.scale, f"the teacher attributes of {cache}")
        else:
            check_scale(config, live.scale, f"--online-teacher {config.online_teacher}")
        sampled = config.distill.tail == "sampled"
        request = CacheRequest(cache, config.distill.topk, config.distill.temperature,
                               kd_teacher_margin(config.distill.kd_logits, spec.teacher),
                               sampled_tail=sampled, storage_options=storage_options)
        bank = data.noise_bank(sample_rate)
        if bank.content_hash() != spec.noise_bank_hash:
            raise UserError(f"the noise bank (--musan/--rirs) differs from the one {cache} was "
                            "dumped with; crops could not be replayed")
        render = ViewRenderer(manifest, LabelMap.from_dict(spec.label_map), spec.crop_samples,
                              AugmentConfig.from_dict(spec.augment), bank, sample_rate=sample_rate)
        views = CachedViews(request, render, config.batch_size, config.seed, ctx.rank,
                            ctx.world_size,
                            keep_waves=live is not None and live.input_kind == "wave",
                            buckets=live is None
                            and registered_loss(config.distill.loss).uses_teacher_buckets,
                            rows=live is not None and sampled)
        views = with_fresh_views(config.fresh_views, config.online_teacher,
                                 config.distill.loss, config.distill.topk, views)
        net = job.net(config.arch, config.arch_kwargs, spec.num_classes, config.schedule.scale,
                      config.seed)
        check_request(config, views, live, net.model.embed_dim)
        steps = views.batches_per_epoch()
        if steps == 0:
            raise UserError(f"--batch-size {config.batch_size} is larger than the rows each "
                            f"rank streams from {cache}")
        inputs: dict[str, Any] = {"cache": cache_identity(spec)}
        if live is not None:
            inputs["online_teacher_sha256"] = live.sha256
        config_dict = {"kind": "student", **asdict(config), "cache": cache if is_remote(cache)
                       else str(Path(cache).absolute()),
                       "data": data.to_dict(), RESUME_INPUTS: inputs}
        evaluate = job.evaluator(data, sample_rate, render.reader)
        trainer = job.trainer(
            net, config.schedule, epochs=config.epochs, steps_per_epoch=steps,
            label_map=spec.label_map, config=config_dict, seed=config.seed,
            evaluate=evaluate, eval_every=config.eval_every, resume=resume,
        )

        def batches(epoch: int):
            views.set_epoch(epoch)
            loader = DataLoader(views, batch_size=None, num_workers=config.workers)
            return itertools.islice(loader, steps)

        live_margin = None if live is None else kd_teacher_margin(config.distill.kd_logits, live)
        draws = OnlineDraws.of(spec, config.distill.temperature) if live and sampled else None
        trainer.fit(batches, distill_step(config.distill, live, live_margin, ctx.device, draws))
        warn_if_capped(trainer.history, config.distill, views.k_prime)
        final = trainer.history[-1] if trainer.history else {}
        if ctx.is_main and evaluate is not None:
            # The trainer evaluates after the last epoch; a resumed finished run ran none.
            result = evaluate.last or evaluate.result(net.model)
            final = {**final, **result.summary()}
            plot_det({out.name: result.det()}, out / "det.png")
        job.finish(trainer.history, final)
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


def distill_step(config: DistillConfig, live: Teacher | None, live_margin: LogitMargin | None,
                 device: str, draws: OnlineDraws | None = None):
    """The per-batch loss: AAM cross-entropy plus the weighted distillation term.

    The student's KD logits follow ``config.kd_logits`` (its margin logits, the ones CE
    trains, or ``scale * cos``); a live teacher's get ``live_margin`` on the target (the
    cached teacher's got it in the kernel). ``draws``: online ``--tail sampled`` (the live
    logits summarised and drawn as the dump does; the batch must carry its store rows).
    """

    def step(net: torch.nn.Module, batch: StudentBatch, epoch: float):
        feats, labels = batch.feats.to(device), batch.labels.to(device)
        emb, margin_logits, cos_logits = net(feats, labels)
        ce = torch.nn.functional.cross_entropy(margin_logits, labels)
        kd_logits = margin_logits if config.kd_logits == "margin" else cos_logits
        parts = DistillBatch(student_logits=kd_logits, labels=labels,
                             topk_index=batch.topk_index, teacher=batch.teacher,
                             student_emb=emb, teacher_emb=batch.teacher_emb,
                             tail_index=batch.tail_index, sampled=batch.sampled)
        if live is not None:
            teacher_input = batch.waves if live.input_kind == "wave" else batch.feats
            parts.teacher_logits, parts.teacher_emb = live(teacher_input.to(device))
            if draws is not None:  # the sampled loss from the live rows (cached mode's path)
                rngs = [tail_rng(draws.run_seed, r, draws.t_index) for r in batch.row.tolist()]
                parts.topk_index, parts.teacher, tail, parts.sampled = sampled_from_logits(
                    parts.teacher_logits, labels, draws.k, config.temperature, draws.m, rngs,
                    margin=live_margin)
                parts.tail_index, parts.teacher_logits = tail.index, None
            elif live_margin is not None:
                parts.teacher_logits = live_margin.apply(parts.teacher_logits, labels)
        kd = distill_loss(config, parts, epoch)
        acc = (cos_logits.argmax(1) == labels).float().mean()
        return ce + kd, {"loss": (ce + kd).item(), "ce": ce.item(), "kd": kd.item(),
                         "acc": acc.item(), **parts.stats}

    return step


EXAMPLES = """\b
Examples:
  python -m stage2_student.train --cache exp/logits.zarr --data toy --arch xvector \\
      --arch-opt channels=128 --loss dkd --alpha 1 --beta 2 --out exp/xv-dkd
  python -m stage2_student.train --cache exp/logits.zarr --data toy --arch campp \\
      --loss kd --temperature 2 --topk 10 --kd-logits cosine --out exp/campp-kd
  python -m stage2_student.train --cache exp/logits.zarr --data toy --loss trkd \\
      --trkd-tau-end 0.05 --out exp/xv-trkd
  python -m stage2_student.train --cache exp/logits.zarr --data toy --loss dualgroup \\
      --topk 16 --dualgroup-binary-entropy 0.5 --out exp/xv-dualgroup
  python -m stage2_student.train --cache exp/logits.zarr --data toy --loss dkd \\
      --beta 8 --temperature 4 --tail sampled --out exp/xv-dkd-sampled
  python -m stage2_student.train --config exp/xv-dkd/config.json --out exp/xv-dkd-again
  python -m stage2_student.train --config exp/xv-dkd/config.json --seed 1 --out exp/xv-dkd-s1
  python -m stage2_student.train --cache exp/logits.zarr --data toy --arch xvector \\
      --online-teacher exp/teacher/model.pt --loss dkd --out exp/xv-online
  torchrun --nproc_per_node 2 -m stage2_student.train --cache exp/logits.zarr --data toy \\
      --arch resnet34 --arch-opt base_width=8 --loss dkd --out exp/r34-dkd
"""

# Options that live in the distillation config (the rest are the options every training run
# has -- speaker.training.options -- StudentConfig's own, --cache/--config and the data).
_DISTILL_OPTIONS = {"loss": "loss", "alpha": "alpha", "beta": "beta",
                    "temperature": "temperature", "topk": "topk", "kd_warmup": "warmup_epochs",
                    "kd_logits": "kd_logits", "tail": "tail"}


@click.command(context_settings={"show_default": True}, epilog=EXAMPLES)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              default=None, help="A student run's config.json: run it again (with its cache "
                                 "and data); options given here replace its values.")
@click.option("--cache", type=StoreLocation(exists=True), default=None,
              help="logits.zarr written by stage1_teacher.dump, or its object-store URL "
                   "(s3://bucket/logits.zarr) (required without --config).")
@storage_option_flag
@data_options
@training_options(arch="xvector", epochs=10, batch_size=64, optimizer="sgd", eval_every=0,
                  workers=1, seed=0)
@click.option("--loss", type=click.Choice(loss_names()), default="dkd")
@click.option("--alpha", type=float, default=1.0, help="TCKD weight (dkd).")
@click.option("--beta", type=float, default=2.0, help="NCKD weight (dkd).")
@click.option("--temperature", type=float, default=1.0, help="Must be on the cache's grid.")
@click.option("--topk", type=int, default=None, help="k' <= cache k (default: all k): the kept speakers, TRKD's cap and "
                   "dual-group's primary group.")
@click.option("--kd-logits", type=click.Choice(["margin", "cosine"]), default="margin",
              help="KD on margin logits (each head's margin on the target: the student's "
                   "ramped AAM margin, the teacher's from the cache; the paper's code) or on "
                   "scale*cos logits on both sides.")
@click.option("--tail", type=click.Choice(["exact-bucket", "sampled"]), default="exact-bucket",
              help="The non-targets outside the top-k: one bucket of their exact mass, or the "
                   "cache's sampled tail (kd, dkd: an unbiased estimate of the full-logit loss; "
                   "needs a cache dumped with --tail-samples and k' = k), e.g. --tail sampled.")
@click.option("--kd-warmup", type=click.FloatRange(min=0), default=None,
              help="Epochs of linear KD-weight ramp [default: 2/15 of --epochs, at most 20: "
                   "the paper's 20 of 150].")
@click.option("--online-teacher", default=None,
              help="Online KD: a live teacher (checkpoint/TorchScript/module:factory) gives "
                   "full logits instead of the cache (which still gives the crops).")
@fresh_views_option
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Logit scale of the student head [default: the teacher's, from the cache]; "
                   "one that differs from the teacher's is refused.")
@loss_option_flags
def cli(config_path: Path | None, cache: str | None, out: Path, resume: bool, verbose: bool,
        storage_options: dict | None, **opts) -> None:
    """Train a student of any architecture from the cached teacher soft labels.

    The run evaluates itself (--eval-every, and after its last epoch) on the dev split when
    the data has one (--data ROOT with dev/, or --dev/--dev-trials) and then never scores the
    test trials; without a dev split, on the test split; with only --train, not at all.
    """
    setup_logging(verbose)
    given = given_options(opts)
    data_given = {f.name: opts.pop(f.name) for f in fields(DataPaths)}
    if config_path is None:
        if cache is None:
            raise UserError("--cache is required (or --config with a run's config.json)")
        config = config_from_options(opts, cache, storage_options)
        data = DataPaths.from_options(data_given)
    else:
        saved = _read_config(config_path)
        config = apply_options(StudentConfig.from_dict(
            {k: v for k, v in saved.items() if k not in ("kind", "cache", "data", RESUME_INPUTS)},
            str(config_path)), opts, given)
        cache = cache or saved["cache"]
        if any(value is not None for value in data_given.values()):
            data = DataPaths.from_options(data_given)
        else:
            data = DataPaths(**{k: None if v is None else Path(v)
                                for k, v in saved["data"].items()})
    if not is_remote(cache):
        cache = Path(cache)
    final = train_student(config, cache, data, out, resume, storage_options=storage_options)
    if final:
        click.echo(" ".join(f"{k}={v:.4f}" for k, v in final.items() if isinstance(v, float)))


def config_from_options(opts: dict[str, Any], cache: str | Path,
                        storage_options: dict | None = None) -> StudentConfig:
    """The StudentConfig the command-line options (and their defaults) describe."""
    scale = opts["scale"] if opts["scale"] is not None else StoreReader.open(
        cache, allow_incomplete=True, storage_options=storage_options).spec.teacher.scale
    return apply_options(None, {**opts, "scale": scale}, set(opts))


def apply_options(base: StudentConfig | None, opts: dict[str, Any],
                  given: set[str]) -> StudentConfig:
    """``base`` with the ``given`` options replacing its values (all options if no base),
    the way :func:`speaker.training.options.resolve_run` says; a new ``--epochs`` rebuilds
    the KD warm-up with the schedule unless ``--kd-warmup`` is given.
    """
    settings = resolve_run(base, opts, given, own=("online_teacher", "fresh_views"))

    def pick(name: str, saved: Any) -> Any:
        return opts[name] if base is None or name in given else saved

    distill_base = {} if base is None else asdict(base.distill)
    distill = {field: pick(option, distill_base.get(field))
               for option, field in _DISTILL_OPTIONS.items()}
    epochs = settings["epochs"]
    if base is not None and "kd_warmup" not in given and "epochs" in given:
        distill["warmup_epochs"] = None
    if distill["warmup_epochs"] is None:
        distill["warmup_epochs"] = kd_warmup_epochs(epochs)
    same_loss = base is not None and base.distill.loss == distill["loss"]
    distill["options"] = options_from_flags(
        distill["loss"], opts, epochs, base=base.distill.options if same_loss else None)
    try:
        return StudentConfig(distill=DistillConfig(**distill), **settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--config {path}: not readable JSON ({exc})") from None
    if (not isinstance(saved, dict) or saved.get("kind") != "student"
            or not {"cache", "data"} <= set(saved)):
        raise UserError(f"--config {path}: not a student run's config.json (kind "
                        f"{saved.get('kind') if isinstance(saved, dict) else None!r})")
    return saved


if __name__ == "__main__":
    run(cli)
