"""The cache format's settings and layout (see ``store/FORMAT.md``).

The format version, the arrays with their dtypes, shapes and fill values, and how a
:class:`StoreSpec` becomes root attributes and back. What every row must satisfy is
:mod:`store.rows`. The writer and reader only move bytes; they ask these two modules what
the bytes must look like.

Example::

    spec = StoreSpec(num_rows=10_000, k=32, temperatures=(1.0, 2.0), num_classes=5994,
                     crop_samples=32_000, manifest_hash="ab12...",
                     teacher=TeacherInfo("ecapa", "c0ffee...", 5994, 32.0, 0.2))
    spec.num_shards, spec.shard_range(0)      # -> (1, (0, 10000))
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from store.errors import StoreError

FORMAT_NAME = "entkd-teacher-cache"
#: The version this entkd writes. Version 2 added ``crop_checksum``, the optional
#: ``features`` array, ``spec_sha256`` and the teacher's epoch/labels; version 3 the
#: ``features_checksum`` that binds stored features to their row and the optional sampled
#: tail (``tail_index``, ``tail_logit``; FORMAT.md).
FORMAT_VERSION = 3
#: Versions this entkd reads (version-1 stores have no crop checksums: replay is unchecked;
#: version-2 stores have no features checksums: stored features are unchecked).
READABLE_VERSIONS = (1, 2, 3)

#: Name of the uint8 array with one chunk per shard; 1 = the shard's rows are all written.
COMPLETE_ARRAY = "shard_complete"
#: Name of the uint8 array holding the manifest ids as UTF-8, separated by newlines.
MANIFEST_ARRAY = "manifest_ids"
#: zstd level of every data chunk: level 3 is within 10% of level 9's size at 1/3 the time.
ZSTD_LEVEL = 3
#: uint64 seed value reserved as the fill value, so a missing seed shard is detectable.
SEED_FILL = int(np.iinfo(np.uint64).max)
#: Largest class count whose indices (and the -1 fill) fit int16.
INT16_CLASSES = int(np.iinfo(np.int16).max)
#: Root attribute holding the sha256 of the canonical JSON of the ``spec`` block.
SPEC_CHECKSUM_KEY = "spec_sha256"

#: Margin heads a teacher may declare (see TeacherInfo).
MARGIN_KINDS = ("aam", "am", "none")


@dataclass(frozen=True)
class ArrayDef:
    """One per-row array: ``shape = (num_rows, *inner)`` (``inner = ()`` for a column)."""

    name: str
    dtype: np.dtype
    inner: tuple[int, ...]
    fill: int | float
    dims: tuple[str, ...]

    def shape(self, num_rows: int) -> tuple[int, ...]:
        return (num_rows, *self.inner)

    def is_fill(self, value: Any) -> bool:
        """Whether ``value`` (e.g. an array's metadata fill value) is this array's fill."""
        if self.dtype.kind == "f":
            return bool(np.isnan(np.float64(value))) if value is not None else False
        return value is not None and int(value) == int(self.fill)


@dataclass(frozen=True)
class TeacherInfo:
    """Identity of the teacher whose logits are cached.

    ``scale``, ``margin`` and ``margin_kind`` describe the teacher's margin head: ``"aam"``
    (additive angular, ``cos(theta + m)``), ``"am"`` (additive cosine, ``cos(theta) - m``) or
    ``"none"``. The cached logits are ``scale * cos`` without the margin; a reader applies
    the margin itself when its KD convention asks for it. ``epoch``/``epochs`` say how far
    the teacher's training got (None when unknown, e.g. a TorchScript teacher).
    ``teacher_labels``: the name of each teacher class, for a teacher whose classes are its
    own (e.g. a pretrained teacher's speakers) rather than the label map's; None when its
    classes are the label map's.

    Example: ``TeacherInfo("ecapa", sha256_hex, num_classes=5994, scale=32.0, margin=0.2)``
    """

    arch: str
    checkpoint_sha256: str
    num_classes: int
    scale: float
    margin: float
    margin_kind: str = "aam"
    epoch: int | None = None
    epochs: int | None = None
    teacher_labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.margin_kind not in MARGIN_KINDS:
            raise StoreError(f"teacher margin_kind {self.margin_kind!r} is not one of "
                             f"{', '.join(MARGIN_KINDS)}")
        if self.teacher_labels is not None:
            labels = tuple(str(label) for label in self.teacher_labels)
            if len(labels) != self.num_classes:
                raise StoreError(f"teacher_labels names {len(labels)} classes, the teacher has "
                                 f"{self.num_classes}")
            object.__setattr__(self, "teacher_labels", labels)

    @property
    def complete(self) -> bool | None:
        """Whether the teacher finished its training run (None when unknown)."""
        if self.epoch is None or self.epochs is None:
            return None
        return self.epoch >= self.epochs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.teacher_labels is None:
            del out["teacher_labels"]  # optional: absent rather than null
        else:
            out["teacher_labels"] = list(self.teacher_labels)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TeacherInfo:
        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        try:
            return cls(
                arch=str(data["arch"]),
                checkpoint_sha256=str(data["checkpoint_sha256"]),
                num_classes=int(data["num_classes"]),
                scale=float(data["scale"]),
                margin=float(data["margin"]),
                margin_kind=str(data.get("margin_kind", "aam")),  # format 1: always AAM
                epoch=optional_int("epoch"),
                epochs=optional_int("epochs"),
                teacher_labels=None if data.get("teacher_labels") is None
                else tuple(data["teacher_labels"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"teacher attributes {dict(data)!r} are malformed: {exc}") from exc


@dataclass(frozen=True)
class FeatureInfo:
    """The stored student features (``features`` array): what they are and how they were made.

    Each row holds ``frames x mel_bins`` float16 Kaldi log-mel filterbanks of the view's
    augmented crop (``frame_length_ms`` Hamming windows every ``frame_shift_ms``, dither of
    std ``dither`` drawn from the row seed, mean over frames subtracted): exactly what a
    student computes when it replays the row, rounded to float16. A reader whose own
    front-end differs (compare with :meth:`differences`) must replay instead.

    Example: ``FeatureInfo(frames=198, mel_bins=80)``
    """

    frames: int
    mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 1.0
    window: str = "hamming"
    normalization: str = "utterance_mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", _positive_int("features.frames", self.frames))
        object.__setattr__(self, "mel_bins", _positive_int("features.mel_bins", self.mel_bins))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureInfo:
        try:
            return cls(**data)
        except TypeError as exc:
            raise StoreError(f"features attributes {dict(data)!r} are malformed: {exc}") from None

    def differences(self, other: FeatureInfo) -> list[str]:
        """``["frames: 198 -> 98", ...]`` for the fields that differ."""
        return [f"{f.name}: {getattr(self, f.name)} -> {getattr(other, f.name)}"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise StoreError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise StoreError(f"{name} must be >= {minimum}, got {number}")
    return number


def _json_value(name: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{name} must be JSON-serialisable (no NaN): {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class StoreSpec:
    """Everything fixed when a store is created; validated on construction.

    ``manifest_ids[i]`` is the utterance that ``utt == i`` refers to (may be empty when the
    caller does not record ids). ``shard_rows`` must be a multiple of ``chunk_rows``.
    ``features``: stored student features (None: stage 2 replays crops). ``tail_draws``: M
    classes drawn per row and temperature from the teacher's tail (0: no sampled tail), by
    ``tail_sampler`` (``store.tail.SAMPLER``). ``format_version``
    is the version of the store the spec describes (a reader may open version-1 stores,
    which have no ``crop_checksum``); it is a root attribute, not part of ``spec``.
    """

    num_rows: int
    k: int
    temperatures: tuple[float, ...]
    num_classes: int
    crop_samples: int
    manifest_hash: str
    teacher: TeacherInfo
    embedding_dim: int = 0
    chunk_rows: int = 4096
    shard_rows: int = 65536
    sample_rate: int = 16000
    manifest_ids: tuple[str, ...] = ()
    augment: dict[str, Any] = field(default_factory=dict)
    augment_hash: str = ""
    noise_bank_hash: str = ""
    label_map: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    features: FeatureInfo | None = None
    tail_draws: int = 0
    tail_sampler: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("num_rows", _positive_int("num_rows", self.num_rows))
        put("num_classes", _positive_int("num_classes", self.num_classes, minimum=2))
        put("k", _positive_int("k", self.k))
        if self.k > self.num_classes - 1:
            raise StoreError(
                f"k={self.k} exceeds the {self.num_classes - 1} non-target classes of a "
                f"{self.num_classes}-class teacher"
            )
        if self.num_classes > np.iinfo(np.int32).max:
            raise StoreError(f"num_classes={self.num_classes} does not fit int32 indices")
        put("embedding_dim", _positive_int("embedding_dim", self.embedding_dim, minimum=0))
        put("chunk_rows", _positive_int("chunk_rows", self.chunk_rows))
        put("shard_rows", _positive_int("shard_rows", self.shard_rows))
        if self.shard_rows % self.chunk_rows:
            raise StoreError(
                f"shard_rows={self.shard_rows} must be a multiple of chunk_rows={self.chunk_rows}"
            )
        put("sample_rate", _positive_int("sample_rate", self.sample_rate))
        put("crop_samples", _positive_int("crop_samples", self.crop_samples))

        try:
            temps = tuple(float(t) for t in self.temperatures)
        except (TypeError, ValueError):
            raise StoreError(f"temperatures must be numbers, got {self.temperatures!r}") from None
        if not temps:
            raise StoreError("temperatures must list at least one temperature")
        if any(not math.isfinite(t) or t <= 0 for t in temps):
            raise StoreError(f"temperatures must be finite and > 0, got {list(temps)}")
        if len(set(temps)) != len(temps):
            raise StoreError(f"temperatures must be distinct, got {list(temps)}")
        put("temperatures", temps)

        if not isinstance(self.teacher, TeacherInfo):
            raise StoreError(f"teacher must be a TeacherInfo, got {type(self.teacher).__name__}")
        if self.teacher.num_classes != self.num_classes:
            raise StoreError(
                f"teacher.num_classes={self.teacher.num_classes} differs from "
                f"num_classes={self.num_classes}"
            )
        if not isinstance(self.manifest_hash, str) or not self.manifest_hash:
            raise StoreError("manifest_hash must be a non-empty string (Manifest.content_hash())")

        ids = tuple(str(i) for i in self.manifest_ids)
        if any("\n" in i or not i for i in ids):
            bad = next(i for i in ids if "\n" in i or not i)
            raise StoreError(f"manifest id {bad!r} is empty or contains a newline")
        put("manifest_ids", ids)
        put("augment", _json_value("augment", dict(self.augment)))
        put("label_map", _json_value("label_map", dict(self.label_map)))
        put("extra", _json_value("extra", dict(self.extra)))
        if self.features is not None and not isinstance(self.features, FeatureInfo):
            raise StoreError(f"features must be a FeatureInfo, got {type(self.features).__name__}")
        if self.format_version not in READABLE_VERSIONS:
            raise StoreError(f"format_version {self.format_version} is not one of "
                             f"{list(READABLE_VERSIONS)}")
        if self.format_version < 2 and self.features is not None:
            raise StoreError("stored features need cache format version 2")
        put("tail_draws", _positive_int("tail_draws", self.tail_draws, minimum=0))
        if self.tail_draws and not (isinstance(self.tail_sampler, str) and self.tail_sampler):
            raise StoreError("tail_draws > 0 needs tail_sampler (how the draws were made, "
                             "e.g. 'draw_tail/1')")
        if not self.tail_draws and self.tail_sampler:
            raise StoreError(f"tail_sampler {self.tail_sampler!r} given without tail_draws")
        if self.tail_draws and self.format_version < 3:
            raise StoreError("a sampled tail needs cache format version 3")

    # -- geometry ---------------------------------------------------------------------------

    @property
    def num_shards(self) -> int:
        return -(-self.num_rows // self.shard_rows)

    @property
    def num_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Half-open global row range ``(start, stop)`` of ``shard``."""
        if not 0 <= shard < self.num_shards:
            raise StoreError(f"shard {shard} is out of range: the store has {self.num_shards}")
        start = shard * self.shard_rows
        return start, min(start + self.shard_rows, self.num_rows)

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)

    def shard_of_chunk(self, chunk: int) -> int:
        return chunk // self.chunks_per_shard

    @property
    def topk_index_dtype(self) -> np.dtype:
        return np.dtype(np.int16 if self.num_classes <= INT16_CLASSES else np.int32)

    # -- lookups stage 2 relies on ------------------------------------------------------------

    def temperature_index(self, temperature: float) -> int:
        """Column of ``tail_lse`` for ``temperature``; off-grid -> :class:`StoreError`."""
        for i, t in enumerate(self.temperatures):
            if math.isclose(t, float(temperature), rel_tol=1e-6, abs_tol=1e-9):
                return i
        raise StoreError(
            f"temperature {temperature:g} is not in the store's grid "
            f"{[float(t) for t in self.temperatures]}: the tail logsumexp exists only there; "
            f"pick one of those or re-dump with that temperature"
        )

    def check_topk(self, k_prime: int) -> int:
        """Validate a requested ``k' <= k`` (entries k'..k-1 fold into the tail)."""
        k_prime = operator.index(k_prime)
        if not 0 <= k_prime <= self.k:
            raise StoreError(
                f"k'={k_prime} is not available: the store keeps the top k={self.k} "
                f"non-target logits, so use 0 <= k' <= {self.k} or re-dump with a larger k"
            )
        return k_prime

    # -- arrays --------------------------------------------------------------------------------

    @property
    def has_crop_checksum(self) -> bool:
        """Version-2 stores record a checksum of each row's raw crop; version 1 did not."""
        return self.format_version >= 2

    @property
    def has_tail_samples(self) -> bool:
        """Whether rows carry a sampled tail (``tail_index``, ``tail_logit``)."""
        return self.tail_draws > 0

    @property
    def has_features_checksum(self) -> bool:
        """Version-3 stores with stored features bind each row's features to the row."""
        return self.features is not None and self.format_version >= 3

    def array_defs(self) -> tuple[ArrayDef, ...]:
        """The per-row arrays of this store, in canonical order."""
        defs = [
            ArrayDef("utt", np.dtype(np.int32), (), -1, ("row",)),
            ArrayDef("start", np.dtype(np.int64), (), -1, ("row",)),
            ArrayDef("seed", np.dtype(np.uint64), (), SEED_FILL, ("row",)),
        ]
        if self.has_crop_checksum:
            defs.append(ArrayDef("crop_checksum", np.dtype(np.int32), (), -1, ("row",)))
        defs += [
            ArrayDef("label", np.dtype(np.int32), (), -1, ("row",)),
            ArrayDef("target_logit", np.dtype(np.float32), (), math.nan, ("row",)),
            ArrayDef("topk_index", self.topk_index_dtype, (self.k,), -1, ("row", "rank")),
            ArrayDef("topk_logit", np.dtype(np.float16), (self.k,), math.nan, ("row", "rank")),
            ArrayDef("tail_lse", np.dtype(np.float32), (len(self.temperatures),), math.nan,
                     ("row", "temperature")),
        ]
        if self.embedding_dim:
            defs.append(ArrayDef("embedding", np.dtype(np.float16), (self.embedding_dim,),
                                 math.nan, ("row", "dim")))
        if self.features is not None:
            defs.append(ArrayDef("features", np.dtype(np.float16),
                                 (self.features.frames, self.features.mel_bins), math.nan,
                                 ("row", "frame", "mel")))
        if self.has_features_checksum:
            defs.append(ArrayDef("features_checksum", np.dtype(np.int32), (), -1, ("row",)))
        if self.has_tail_samples:
            draws = (len(self.temperatures), self.tail_draws)
            dims = ("row", "temperature", "draw")
            defs += [ArrayDef("tail_index", self.topk_index_dtype, draws, -1, dims),
                     ArrayDef("tail_logit", np.dtype(np.float16), draws, math.nan, dims)]
        return tuple(defs)

    def bytes_per_row_raw(self) -> int:
        """Uncompressed bytes of one row over all arrays."""
        return sum(d.dtype.itemsize * math.prod(d.inner) for d in self.array_defs())

    # -- (de)serialisation -------------------------------------------------------------------

    def to_attrs(self) -> dict[str, Any]:
        """The ``spec`` root attribute (manifest ids live in their own array)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("manifest_ids", "format_version"):
                continue
            if f.name == "features":
                if value is None:
                    continue  # optional: absent rather than null
                value = value.to_dict()
            elif f.name in ("tail_draws", "tail_sampler") and not self.tail_draws:
                continue  # optional: absent, so a store without samples keeps its spec
            elif f.name == "teacher":
                value = value.to_dict()
            elif f.name == "temperatures":
                value = list(value)
            out[f.name] = value
        out["num_utterances"] = len(self.manifest_ids)
        return out

    @classmethod
    def from_attrs(
        cls,
        data: Mapping[str, Any],
        manifest_ids: Sequence[str] = (),
        format_version: int = FORMAT_VERSION,
    ) -> tuple[StoreSpec, int]:
        """Inverse of :meth:`to_attrs`; returns ``(spec, num_utterances)``."""
        data = dict(data)
        num_utts = data.pop("num_utterances", len(manifest_ids))
        try:
            teacher = TeacherInfo.from_dict(data.pop("teacher"))
            features = data.pop("features", None)
            spec = cls(teacher=teacher, manifest_ids=tuple(manifest_ids),
                       features=None if features is None else FeatureInfo.from_dict(features),
                       format_version=format_version, **data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"store spec attributes are malformed: {exc}") from exc
        return spec, int(num_utts)

    def differences(self, other: StoreSpec) -> list[str]:
        """Names of the fields whose values differ between two specs."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def spec_checksum(spec_attrs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a ``spec`` attribute block."""
    text = json.dumps(spec_attrs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def root_attrs(spec: StoreSpec, created_by: str, created_at: str) -> dict[str, Any]:
    """All root attributes of a new store (always the version this entkd writes)."""
    if spec.format_version != FORMAT_VERSION:
        raise StoreError(f"this entkd writes cache format version {FORMAT_VERSION} only, "
                         f"not {spec.format_version}")
    spec_attrs = spec.to_attrs()
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": created_by,
        "created_at": created_at,
        "spec": spec_attrs,
        SPEC_CHECKSUM_KEY: spec_checksum(spec_attrs),
    }


def check_format(
    attrs: Mapping[str, Any], where: str, versions: Sequence[int] = READABLE_VERSIONS
) -> int:
    """Refuse attributes of anything but an entkd store of one of ``versions``.

    From version 2 on, the ``spec`` block must match its checksum. Returns the version.
    """
    if attrs.get("format") != FORMAT_NAME or "format_version" not in attrs:
        raise StoreError(
            f"{where} is not an entkd cache store (no '{FORMAT_NAME}' format attribute: an "
            f"interrupted create?); remove it with `rm -r {where}` and dump again"
        )
    version = attrs["format_version"]
    if version not in versions:
        *most, last = [str(v) for v in versions]
        readable = f"{', '.join(most)} or {last}" if most else last
        raise StoreError(
            f"{where} has cache format version {version} but this entkd "
            f"{'reads' if len(versions) > 1 else 'writes'} version {readable}; use the entkd "
            f"that wrote it or re-dump the cache"
        )
    if version >= 2:
        stored = attrs.get(SPEC_CHECKSUM_KEY)
        if "spec" not in attrs or stored != spec_checksum(attrs["spec"]):
            raise StoreError(
                f"{where}/zarr.json: the 'spec' attribute block does not match its checksum "
                f"'{SPEC_CHECKSUM_KEY}' (edited after the store was written?); restore the "
                f"file or re-dump the cache"
            )
    return int(version)


def encode_ids(ids: Sequence[str]) -> np.ndarray:
    """Manifest ids as one uint8 array (UTF-8, newline separated)."""
    return np.frombuffer("\n".join(ids).encode("utf-8"), dtype=np.uint8)


def decode_ids(data: np.ndarray, expected: int) -> tuple[str, ...]:
    ids = tuple(bytes(data).decode("utf-8").split("\n")) if expected else ()
    if len(ids) != expected:
        raise StoreError(f"manifest_ids holds {len(ids)} ids but the spec says {expected}")
    return ids
