"""What every row of a cache must satisfy (the invariants of ``store/FORMAT.md``).

:class:`RowBlock` is a run of rows as numpy arrays; :func:`check_block` lists every row
breaking the format (including stored features that are not the row's own, see
:func:`features_checksum`), :func:`missing_arrays` tells unwritten data (fill values) from
data. The writer validates every shard with them before writing, the reader every chunk it
returns.

Example::

    checked, problems = check_block(block, spec, row_offset=4096)
    problems   # ["target_logit is not finite at row 4100", ...]
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from store.errors import StoreError
from store.schema import SEED_FILL, StoreSpec

# How many offending rows an error message lists before "(+N more)".
_ROWS_SHOWN = 5


def features_checksum(utt: np.ndarray, start: np.ndarray, seed: np.ndarray,
                      features: np.ndarray) -> np.ndarray:
    """Per row, ``zlib.crc32`` of the row's identity -- ``utt`` (int32), ``start`` (int64),
    ``seed`` (uint64), little-endian -- followed by its ``features`` as float16
    little-endian bytes, masked to 31 bits: what binds stored features to their row.

    >>> int(features_checksum(np.array([0]), np.array([0]), np.array([1]),
    ...                       np.zeros((1, 2, 2), np.float16))[0])
    773383800
    """
    ident = np.empty(len(utt), dtype=[("utt", "<i4"), ("start", "<i8"), ("seed", "<u8")])
    ident["utt"], ident["start"], ident["seed"] = utt, start, seed
    rows = np.ascontiguousarray(features, dtype="<f2").reshape(len(utt), -1)
    return np.array([zlib.crc32(row.tobytes(), zlib.crc32(key.tobytes())) & 0x7FFFFFFF
                     for key, row in zip(ident, rows, strict=True)], dtype=np.int32)


@dataclass
class RowBlock:
    """Consecutive or gathered rows of every array, as numpy arrays of equal length.

    The optional arrays are None when absent: ``embedding`` (stores without embeddings),
    ``crop_checksum`` (version-1 stores), ``features`` (stores without stored features,
    and every block a reader returns unless asked for features), ``features_checksum``
    (stores without stored features, version-2 stores, and blocks handed to the writer,
    which computes it), ``tail_index`` / ``tail_logit`` (stores without a sampled tail):
    [N, nT, M] each.

    Example::

        block = reader.read(0, 4096)
        block.topk_logit.shape          # (4096, k), float16
        block.slice(0, 10), block.take([3, 1]), RowBlock.concat([a, b])
    """

    utt: np.ndarray
    start: np.ndarray
    seed: np.ndarray
    label: np.ndarray
    target_logit: np.ndarray
    topk_index: np.ndarray
    topk_logit: np.ndarray
    tail_lse: np.ndarray
    embedding: np.ndarray | None = None
    crop_checksum: np.ndarray | None = None
    features: np.ndarray | None = None
    features_checksum: np.ndarray | None = None
    tail_index: np.ndarray | None = None
    tail_logit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def arrays(self) -> dict[str, np.ndarray]:
        """Name -> array, without the optional arrays that are absent."""
        return {f.name: a for f in fields(self) if (a := getattr(self, f.name)) is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RowBlock:
        return cls(**arrays)

    def slice(self, start: int, stop: int) -> RowBlock:
        return RowBlock.from_arrays({n: a[start:stop] for n, a in self.arrays().items()})

    def take(self, index: np.ndarray | Sequence[int]) -> RowBlock:
        index = np.asarray(index, dtype=np.int64)
        return RowBlock.from_arrays({n: a[index] for n, a in self.arrays().items()})

    @classmethod
    def concat(cls, blocks: Sequence[RowBlock]) -> RowBlock:
        if not blocks:
            raise StoreError("RowBlock.concat needs at least one block")
        names = blocks[0].arrays().keys()
        return cls.from_arrays({n: np.concatenate([b.arrays()[n] for b in blocks]) for n in names})


def logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """``log(sum(exp(x), axis=1))`` per row of a 2-d array, stable, and -inf for a row
    that is all -inf or empty along axis 1 (an empty tail): the numpy reference the store's
    statistics and ``stage1_teacher.verify`` compare cached tails with.

    >>> logsumexp_rows(np.array([[0.0, 0.0], [-np.inf, -np.inf]])).round(4).tolist()
    [0.6931, -inf]
    """
    if x.shape[1] == 0:
        return np.full(x.shape[0], -np.inf, dtype=x.dtype)
    peak = np.max(x, axis=1, keepdims=True)
    # an all -inf row would give -inf - -inf = nan: shift it by 0 instead
    safe = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(x - safe).sum(axis=1, keepdims=True)) + safe)[:, 0]


def _describe_rows(mask: np.ndarray, row_offset: int) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r) + row_offset) for r in rows[:_ROWS_SHOWN])
    more = f" (+{len(rows) - _ROWS_SHOWN} more)" if len(rows) > _ROWS_SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _out_of_range(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Mask of integer values of ``a`` that ``dtype`` cannot represent."""
    info = np.iinfo(dtype)
    if a.dtype.kind == "u":
        return a > np.uint64(info.max)
    lo = max(int(info.min), int(np.iinfo(np.int64).min))
    hi = min(int(info.max), int(np.iinfo(np.int64).max))
    a = a.astype(np.int64, copy=False)
    return (a < np.int64(lo)) | (a > np.int64(hi))


def _coerce(
    block: RowBlock, spec: StoreSpec, row_offset: int, features: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Shapes and dtype kinds; returns arrays cast to storage dtypes and shape problems."""
    problems: list[str] = []
    arrays = block.arrays()
    n = len(np.asarray(block.label))
    defs = {d.name: d for d in spec.array_defs() if features or d.name != "features"}
    problems += [f"{name} given but the store has no such array (format version "
                 f"{spec.format_version}, embedding_dim={spec.embedding_dim}, features "
                 f"{'stored' if spec.features else 'not stored'})"
                 for name in arrays if name not in defs and (features or name != "features")]
    out: dict[str, np.ndarray] = {}
    for name, d in defs.items():
        if name not in arrays:
            problems.append(f"{name} missing (the store has this array)")
            continue
        a = np.asarray(arrays[name])
        if a.shape != d.shape(n):
            problems.append(f"{name} has shape {a.shape}, expected {d.shape(n)}")
            continue
        if d.dtype.kind in "iu" and a.dtype.kind not in "iu":
            problems.append(f"{name} must be integers, got dtype {a.dtype}")
            continue
        if d.dtype.kind == "f" and a.dtype.kind not in "fiu":
            problems.append(f"{name} must be numbers, got dtype {a.dtype}")
            continue
        out[name] = a
    if problems:
        return {}, problems
    for name, d in defs.items():
        a = out[name]
        if d.dtype.kind in "iu" and not np.can_cast(a.dtype, d.dtype):
            wide = _out_of_range(a, d.dtype)
            if wide.any():
                rows = _describe_rows(wide.reshape(n, -1).any(1), row_offset)
                problems.append(f"{name} does not fit {d.dtype} at {rows}")
                continue
        out[name] = a.astype(d.dtype, copy=False)
    return out, problems


def check_block(
    block: RowBlock,
    spec: StoreSpec,
    row_offset: int = 0,
    num_utterances: int | None = None,
    *,
    features: bool = True,
) -> tuple[RowBlock | None, list[str]]:
    """Check every row invariant of FORMAT.md.

    Returns ``(block cast to the storage dtypes or None, problems)``; each problem names
    the field and the global rows (``row_offset`` + position) at fault. ``features=False``
    checks a block read without the ``features`` array (and ignores one if present).
    """
    out, problems = _coerce(block, spec, row_offset, features)
    if problems:
        return None, [f"{p} (block starting at row {row_offset})" for p in problems]

    def bad(mask: np.ndarray, what: str) -> None:
        if mask.any():
            problems.append(f"{what} at {_describe_rows(mask, row_offset)}")

    n_utts = len(spec.manifest_ids) if num_utterances is None else num_utterances
    utt, label = out["utt"], out["label"]
    bad(utt < 0, "utt is negative")
    if n_utts:
        bad(utt >= n_utts, f"utt is not an index into the {n_utts}-utterance manifest")
    bad(out["start"] < 0, "start is negative")
    bad(out["seed"] == np.uint64(SEED_FILL), f"seed equals the reserved fill value {SEED_FILL}")
    if "crop_checksum" in out:
        bad(out["crop_checksum"] < 0, "crop_checksum is negative (checksums are 31-bit)")
    bad((label < 0) | (label >= spec.num_classes), f"label outside [0, {spec.num_classes})")
    bad(~np.isfinite(out["target_logit"]), "target_logit is not finite")

    index = out["topk_index"]
    bad(
        ((index < 0) | (index >= spec.num_classes)).any(1),
        f"topk_index outside [0, {spec.num_classes})",
    )
    bad((index == label[:, None]).any(1), "topk_index contains the target label")
    if spec.k > 1:
        ordered = np.sort(index, axis=1)
        bad((ordered[:, 1:] == ordered[:, :-1]).any(1), "topk_index repeats a class")

    logits = out["topk_logit"].astype(np.float32)
    finite = np.isfinite(logits).all(1)
    bad(~finite, "topk_logit is not finite in float16 (|logit| > 65504 or NaN)")
    if spec.k > 1:
        with np.errstate(invalid="ignore"):  # inf - inf in rows already reported non-finite
            unsorted = (np.diff(logits, axis=1) > 0).any(1)
        bad(unsorted, "topk_logit is not sorted in descending order")

    tail = out["tail_lse"]
    n_tail = spec.num_classes - 1 - spec.k
    if n_tail == 0:
        bad((tail != -np.inf).any(1), "tail_lse must be -inf: top-k holds every non-target")
    else:
        bad(~np.isfinite(tail).all(1), "tail_lse is not finite")
        # Every tail logit is <= the k-th kept logit, so logsumexp over n_tail of them is at
        # most log(n_tail) + z_k / T; the slack covers float16 rounding of z_k.
        z_k = np.where(finite, logits.min(axis=1), 0.0)[:, None]
        temps = np.asarray(spec.temperatures, dtype=np.float64)[None, :]
        bound = math.log(n_tail) + (z_k + np.abs(z_k) * 2.0**-10 + 1e-3) / temps
        bound += 1e-5 * np.abs(bound) + 1e-4
        bad(
            finite & (np.isfinite(tail) & (tail > bound)).any(1),
            "tail_lse exceeds log(#tail) + z_k/T (the tail includes a logit above the k-th)",
        )
    if "tail_index" in out:
        _check_tail(out, spec, finite, bad)
    if "embedding" in out:
        bad(~np.isfinite(out["embedding"].astype(np.float32)).all(1), "embedding is not finite")
    if "features" in out:
        bad(~np.isfinite(out["features"].reshape(len(label), -1)).all(1),
            "features are not finite in float16")
    if "features_checksum" in out:
        bad(out["features_checksum"] < 0, "features_checksum is negative (checksums are 31-bit)")
        if "features" in out:
            got = features_checksum(utt, out["start"], out["seed"], out["features"])
            bad(got != out["features_checksum"],
                "features are not the row's own (they fail the row's features_checksum: "
                "copied from another row or dump?)")
    return RowBlock.from_arrays(out), problems


def _check_tail(out: dict[str, np.ndarray], spec: StoreSpec, topk_finite: np.ndarray,
                bad) -> None:
    """The sampled tail's invariants (FORMAT.md): per row and temperature, M draws from
    outside the row's top-k and label, ascending, with finite logits that fit ``tail_lse``."""
    index = out["tail_index"].astype(np.int64)  # [B, nT, M]
    logit = out["tail_logit"].astype(np.float32)
    label, n = out["label"], len(out["label"])
    if spec.num_classes - 1 - spec.k == 0:  # nothing to draw from: the whole row is padding
        bad((index != -1).reshape(n, -1).any(1) | (logit != -np.inf).reshape(n, -1).any(1),
            "tail_index must be -1 and tail_logit -inf: top-k holds every non-target")
        return
    drawn = index >= 0
    bad((~drawn).reshape(n, -1).any(1),
        f"tail_index has fewer than {spec.tail_draws} draws per temperature (-1 entries) "
        "though the tail is not empty")
    bad((index >= spec.num_classes).reshape(n, -1).any(1),
        f"tail_index outside [0, {spec.num_classes})")
    bad((index == label[:, None, None]).reshape(n, -1).any(1),
        "tail_index contains the target label")
    topk = out["topk_index"].astype(np.int64)
    inside = np.zeros(index.shape, bool)
    for j in range(topk.shape[1]):  # k passes over [B, nT, M] rather than a [B, nT, M, k] array
        inside |= index == topk[:, j, None, None]
    bad(inside.reshape(n, -1).any(1), "tail_index contains one of the row's top-k classes")
    if spec.tail_draws > 1:
        bad((np.diff(index, axis=2) < 0).reshape(n, -1).any(1),
            "tail_index is not in ascending order")
    finite = np.isfinite(logit).reshape(n, -1).all(1)
    bad(~finite, "tail_logit is not finite in float16")
    # A drawn class is one of the tail's, so z/T <= logsumexp over the tail (tail_lse); the
    # slack covers the float16 rounding of z (2^-11 |z|) as for topk_logit.
    temps = np.asarray(spec.temperatures, np.float64)[None, :, None]
    tail = out["tail_lse"].astype(np.float64)[:, :, None]
    with np.errstate(invalid="ignore"):
        over = logit / temps > tail + (np.abs(logit) * 2.0**-10 + 1e-3) / temps \
            + 1e-5 * np.abs(tail) + 1e-4
    bad(finite & topk_finite & np.isfinite(tail[:, :, 0]).all(1) & over.reshape(n, -1).any(1),
        "tail_logit exceeds tail_lse at its temperature (z/T above the tail's log-sum-exp)")


def validate_block(
    block: RowBlock, spec: StoreSpec, row_offset: int = 0, num_utterances: int | None = None
) -> RowBlock:
    """:func:`check_block` that raises :class:`StoreError` on the first problems."""
    checked, problems = check_block(block, spec, row_offset, num_utterances)
    if problems or checked is None:
        shown = "; ".join(problems[:3])
        more = f"; +{len(problems) - 3} more problems" if len(problems) > 3 else ""
        raise StoreError(f"invalid rows: {shown}{more}")
    return checked


def missing_arrays(arrays: Mapping[str, np.ndarray], spec: StoreSpec) -> list[str]:
    """Arrays of a read chunk that hold fill values, i.e. whose stored data is missing.

    Written data never contains a fill value (each is invalid, see FORMAT.md), and a
    missing chunk (or shard file) reads back as fill in every row, so the first entry of
    each row suffices; fill in some rows only is data breaking the invariants, which
    :func:`check_block` reports. Only the arrays present in ``arrays`` are checked.
    """
    missing = []
    empty_tail = spec.k == spec.num_classes - 1
    for d in spec.array_defs():
        if d.name not in arrays or (d.name == "tail_index" and empty_tail):
            # an empty tail's draws are all -1 (the fill): tail_logit (-inf) tells them apart
            continue
        a = arrays[d.name]
        first = a.reshape(len(a), -1)[:, 0]
        hit = np.isnan(first).all() if d.dtype.kind == "f" else (first == d.fill).all()
        if hit:
            missing.append(d.name)
    return missing
