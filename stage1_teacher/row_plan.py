"""Which rows a dump writes, and under which label map.

By default a dump writes ``--views-per-utt`` fresh views of every manifest utterance with
the manifest's own label map. Two options change that, both decided here before anything
is written:

- the teacher names its classes (a pretrained teacher's speaker list, or ``--teacher-labels``):
  the cache's label map is the teacher's and manifest speakers map onto it by name
  (:mod:`speaker.teachers.labels`); ``--unknown-speakers drop`` leaves out the utterances of
  speakers it does not know, and the remaining utterances' views are drawn as usual;
- ``--views-from OLD``: the rows are OLD's rows, ``(utt, start, seed)`` for
  ``(utt, start, seed)``, so two teachers' soft labels can be compared on identical inputs.
  Everything that defines a view (run seed, views per utterance, crop length, augmentation,
  noise bank, chunk and shard sizes) is taken from OLD; top-k, temperatures and embeddings
  are this dump's own.

Example::

    plan = plan_rows(teacher, "wespeaker:exp/r34", manifest, config,
                     RowOptions(unknown_speakers="drop"))
    rows = plan.rows(render)            # a ViewRows (or the old cache's rows)
    spec = plan.adapt_spec(make_spec(plan.config, plan.teacher, ...), len(rows))
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speaker.io.manifest import Manifest
from speaker.teachers.base import Teacher
from speaker.teachers.frontend import check_frontend
from speaker.teachers.labels import SpeakerMapping, label_map_for, map_speakers, read_label_list
from speaker.views.augment import AugmentConfig
from speaker.views.dataset import ViewRenderer, ViewRows
from stage1_teacher.dump_config import DumpConfig, RowOptions
from store import StoreReader, StoreSpec
from store.errors import UserError

log = logging.getLogger("stage1_teacher.dump")


class StoredViews(ViewRows):
    """The rows of an existing cache: row ``r`` is its ``(utt[r], start[r], seed[r])``.

    Each re-rendered crop's checksum is compared with the old row's ``crop_checksum`` (when
    the old cache has them, format version >= 2), so audio changed under the same ids is
    refused naming the utterance instead of relabelled as if it were the old views.
    """

    def __init__(self, old: OldViews, render: ViewRenderer, store_features: bool = False):
        self.render = render
        self.old = old
        self.store_features = store_features

    def __len__(self) -> int:
        return len(self.old.utt)

    def view(self, row: int) -> tuple[int, int, int]:
        return int(self.old.utt[row]), int(self.old.start[row]), int(self.old.seed[row])

    def __getitem__(self, row: int) -> dict[str, object]:
        item = super().__getitem__(row)
        checksums = self.old.crop_checksum
        if checksums is not None and item["crop_checksum"] != checksums[row]:
            u = self.render.manifest[int(item["utt"])]
            raise UserError(
                f"--views-from {self.old.path}: the audio of utterance {u.id!r} ({u.path}) is "
                f"not the audio that cache was dumped from (crop at sample {item['start']}: "
                f"checksum {item['crop_checksum']}, cache says {int(checksums[row])}); restore "
                f"the corpus, or dump fresh views without --views-from"
            )
        return item


@dataclass(frozen=True)
class OldViews:
    """What ``--views-from`` takes from the old cache."""

    path: str | Path
    spec: StoreSpec
    utt: np.ndarray
    start: np.ndarray
    seed: np.ndarray
    crop_checksum: np.ndarray | None  # None: a version-1 cache records none

    @classmethod
    def read(cls, path: str | Path, manifest: Manifest,
             storage_options: dict | None = None) -> OldViews:
        reader = StoreReader.open(path, manifest_hash=manifest.content_hash(),
                                  storage_options=storage_options)
        if reader.missing_shards():
            raise UserError(f"--views-from {path}: the cache is incomplete (shards "
                            f"{reader.missing_shards()[:5]} missing); finish it with --resume")
        names = ("utt", "start", "seed", "crop_checksum")
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for begin in range(0, len(reader), reader.spec.shard_rows):
            block = reader.read(begin, min(begin + reader.spec.shard_rows, len(reader)))
            for name in names:
                parts[name].append(getattr(block, name))
        if not reader.spec.has_crop_checksum:
            log.warning("--views-from %s is a version-1 cache: it records no crop checksums, "
                        "so the audio cannot be checked to be the one its views were cut from",
                        path)
        columns = {name: None if parts[name][0] is None else np.concatenate(parts[name])
                   for name in names}
        return cls(path, reader.spec, **columns)

    def config(self, config: DumpConfig) -> DumpConfig:
        """``config`` with every view-defining setting replaced by the old cache's."""
        spec, extra = self.spec, self.spec.extra
        if "run_seed" not in extra or "views_per_utt" not in extra:
            raise UserError(f"--views-from {self.path}: not written by stage1_teacher.dump "
                            "(no run_seed/views_per_utt recorded)")
        return dataclasses.replace(
            config, views_per_utt=int(extra["views_per_utt"]), seed=int(extra["run_seed"]),
            crop_seconds=spec.crop_samples / spec.sample_rate,
            augment=AugmentConfig.from_dict(spec.augment), chunk_rows=spec.chunk_rows,
            shard_rows=spec.shard_rows)


@dataclass(frozen=True)
class RowPlan:
    config: DumpConfig
    teacher: Teacher
    mapping: SpeakerMapping
    old: OldViews | None

    def rows(self, render: ViewRenderer) -> ViewRows:
        if self.old is not None:
            return StoredViews(self.old, render, self.config.store_features)
        return ViewRows(render, self.config.views_per_utt, self.config.seed, self.mapping.utts,
                        self.config.store_features)

    def adapt_spec(self, spec: StoreSpec, num_rows: int) -> StoreSpec:
        """The store's spec for these rows: their count, the teacher's margin kind and front-end,
        and in ``extra`` how speakers were mapped and where the views came from."""
        extra, teacher = dict(spec.extra), self.teacher
        if teacher.label_map is not None:
            extra["speaker_mapping"] = self.mapping.record()
        if teacher.frontend is not None:
            extra["frontend"] = teacher.frontend.to_dict()
        if self.old is not None:
            if spec.noise_bank_hash != self.old.spec.noise_bank_hash:
                raise UserError(f"--views-from {self.old.path}: the noise bank (--musan/--rirs) "
                                "differs from the one its views were drawn with")
            extra["views_from"] = {"path": str(self.old.path),
                                   "teacher_sha256": self.old.spec.teacher.checkpoint_sha256}
            extra["row_order"] = self.old.spec.extra.get("row_order")
        info = dataclasses.replace(spec.teacher, margin_kind=teacher.margin_kind,
                                   epoch=teacher.epoch, epochs=teacher.epochs)
        return dataclasses.replace(spec, num_rows=num_rows, teacher=info, extra=extra)


def with_label_list(teacher: Teacher, path: Path, speeds: tuple[float, ...]) -> Teacher:
    """``--teacher-labels``: name the classes of a teacher that does not name them itself."""
    if teacher.label_map is not None:
        raise UserError(f"--teacher-labels {path}: the teacher already names its classes")
    return dataclasses.replace(teacher, label_map=label_map_for(read_label_list(path), speeds))


def plan_rows(teacher: Teacher, teacher_spec: str, manifest: Manifest, config: DumpConfig,
              options: RowOptions, views_options: dict | None = None) -> RowPlan:
    """Decide rows and label map (see the module docstring); refuses before anything is
    written when the teacher cannot serve this corpus. ``views_options``: the storage options
    of a ``--views-from`` given as an object-store URL."""
    check_frontend(teacher.frontend, manifest[0].sample_rate, teacher_spec)
    views_from = options.views_from
    old = None if views_from is None else OldViews.read(views_from, manifest, views_options)
    if old is not None:
        config = old.config(config)
        log.info("relabelling the %d rows of %s (views: seed %d, %d per utterance, %.3g s crops)",
                 len(old.utt), views_from, config.seed, config.views_per_utt,
                 config.crop_seconds)
    if options.teacher_labels is not None:
        teacher = with_label_list(teacher, options.teacher_labels, config.augment.speeds)
    mapping = map_speakers(teacher.label_map, manifest, config.augment.speeds,
                           options.unknown_speakers)
    if mapping.dropped_utts:
        if old is not None:
            lost = np.setdiff1d(np.unique(old.utt), mapping.utts)
            if len(lost):
                raise UserError(
                    f"--views-from {views_from}: {len(lost)} of its utterances are of speakers "
                    f"the teacher does not know ({', '.join(mapping.dropped_speakers[:5])}); "
                    "relabelling keeps every row")
        log.warning("left out %d of %d utterances: their %d speaker(s) are not among the "
                    "teacher's classes", mapping.dropped_utts, len(manifest),
                    len(mapping.dropped_speakers))
    return RowPlan(config, teacher, mapping, old)
