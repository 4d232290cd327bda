"""Merge the caches of several teachers into one ensemble cache:
``python -m stage1_teacher.merge a.zarr b.zarr --out ens.zarr``.

The inputs must hold the same rows (``utt``, ``start``, ``seed`` equal row for row: dumps
with the same view settings, or ``--views-from`` relabellings) under the same label map and
temperature grid, which must include T = 1, and none may hold a sampled tail
(``--tail-samples``: a draw from one teacher's tail is not one from the ensemble's).

**What the ensemble is.** Per row, the mean of the teachers' class probabilities at T = 1,
``p(c) = mean_m softmax(z_m)(c)``, stored as logits ``zhat(c) = log p(c) + mean_m Z_m``
(``Z_m`` teacher m's log-normaliser, which keeps ``zhat`` on the teachers' logit scale and
makes merging a cache with itself return its own logits). A cache holds one logit vector per
row, so at another grid temperature T the merged cache serves ``softmax(zhat / T)``, the
ensemble tempered like any single teacher -- not ``mean_m softmax(z_m / T)``, which no single
logit vector reproduces at every T.

**The top-k approximation.** Each input knows its teacher's target logit and top-k logits
exactly but, of its other ``C - 1 - k`` classes ("its tail"), only ``tail_lse`` per
temperature. Merging assumes:

1. a class in teacher m's tail has probability ``R_m / (C - 1 - k_m)`` under m (its tail mass
   ``R_m`` spread evenly: never more than its smallest top-k probability, as the truth);
2. the classes no teacher keeps (outside the union U of targets and top-k's) share the
   ensemble's mass there, and at T != 1 their tempered sum ``sum p(c)^(1/T)`` is that of
   the mass spread evenly times ``rho(T)``, the mean over teachers (weighted by their mass
   outside U) of how much more peaked each teacher's own tail is (its exact tempered tail
   sum, known from ``tail_lse``, over its tail mass spread evenly). Exact for one teacher (or identical ones), and at T = 1
   equal to what (1) gives. (Taking instead the mean of the teachers' tempered tails
   doubled the error at T = 2, 4 in scripts/measure_merge.py: averaging flattens tails.)

The merged top-k is the k largest ensemble probabilities among U's non-targets (a class
outside U can never rank above one inside it under (1)); the tail is the rest of U plus the
outside classes. ``scripts/measure_merge.py`` measures the resulting error against merging
the full logits (docs/merge_approximation.md).

**Where it writes.** A local ``--out`` is built under a staging name and renamed when
complete. Inputs and ``--out`` may also be object-store URLs (``s3://bucket/ens.zarr``, options
from ``--storage-option`` or the environment); there, with no rename, a merge that fails
removes what it wrote, and one that could not (a lost connection) is finished by the same
command with ``--resume`` (store/FORMAT.md, "On an object store").

Example::

    python -m stage1_teacher.merge exp/logits-ecapa.zarr exp/logits-r34.zarr \\
        --out exp/logits-ens.zarr
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from store import FORMAT_VERSION, RowBlock, StoreReader, StoreSpec, StoreWriter, TeacherInfo
from store.cli import StoreLocation, run, setup_logging, storage_option_flag
from store.errors import StoreError, UserError
from store.lock import StoreLock
from store.remote import is_remote, remove_command, remove_store, store_state

log = logging.getLogger("stage1_teacher.merge")

# Settings that must agree for rows to be the same views under the same classes.
SAME = ("num_rows", "num_classes", "temperatures", "crop_samples", "manifest_hash",
        "sample_rate", "augment_hash", "noise_bank_hash", "label_map", "chunk_rows",
        "shard_rows")


def _log_softmax_parts(block: RowBlock, t1: int) -> tuple[np.ndarray, ...]:
    """(Z, log p(target), log p(top-k), log R) of one teacher at T = 1, float64."""
    target = block.target_logit.astype(np.float64)
    topk = block.topk_logit.astype(np.float64)
    tail = block.tail_lse[:, t1].astype(np.float64)
    z = np.logaddexp.reduce(np.concatenate([target[:, None], topk, tail[:, None]], 1), axis=1)
    return z, target - z, topk - z[:, None], tail - z


def merge_rows(blocks: Sequence[RowBlock], num_classes: int, temperatures: Sequence[float],
               k: int) -> RowBlock:
    """The ensemble's rows from the teachers' rows of the same views (module docstring)."""
    temperatures = [float(t) for t in temperatures]
    t1 = temperatures.index(1.0)
    first, m = blocks[0], len(blocks)
    rows = len(first)
    parts = [_log_softmax_parts(b, t1) for b in blocks]
    # Candidates U: the target, then every teacher's top-k (duplicates masked below).
    cand = np.concatenate([first.label[:, None].astype(np.int64)]
                          + [b.topk_index.astype(np.int64) for b in blocks], axis=1)
    logp = np.empty((m, rows, cand.shape[1]))
    log_mass_out = np.empty((m, rows))  # log of m's mass (T = 1) outside U
    log_peak = np.empty((m, rows, len(temperatures)))  # log rho_m(T), assumption (2)
    order = np.argsort(cand, axis=1, kind="stable")
    sorted_cand = np.take_along_axis(cand, order, 1)
    dup_sorted = np.zeros_like(sorted_cand, dtype=bool)
    dup_sorted[:, 1:] = sorted_cand[:, 1:] == sorted_cand[:, :-1]
    duplicate = np.zeros_like(dup_sorted)
    np.put_along_axis(duplicate, order, dup_sorted, 1)
    unique = ~duplicate
    for i, (block, (z, lp_target, lp_topk, log_r)) in enumerate(zip(blocks, parts, strict=True)):
        n_tail = num_classes - 1 - block.topk_index.shape[1]
        # assumption (1); with no tail (k = C - 1) every class is known exactly
        log_uniform = log_r - np.log(n_tail) if n_tail else np.full(rows, -np.inf)
        eq = cand[:, :, None] == block.topk_index[:, None, :].astype(np.int64)
        in_topk = eq.any(2)
        exact = np.where(eq, lp_topk[:, None, :], -np.inf).max(2)
        logp[i] = np.where(in_topk, exact, log_uniform[:, None])
        logp[i][:, 0] = lp_target  # top-k lists never hold the target: only column 0 is it
        in_tail_of_i = (unique & ~in_topk & (cand != first.label[:, None])).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):  # -inf - -inf: an empty tail
            log_mass_out[i] = log_r + np.log((n_tail - in_tail_of_i) / max(n_tail, 1))
            for j, t in enumerate(temperatures):
                # rho = sum over m's tail of p^(1/T), relative to the same mass spread evenly
                log_even = np.log(max(n_tail, 1)) + (log_r - np.log(max(n_tail, 1))) / t
                log_peak[i, :, j] = block.tail_lse[:, j] - z / t - log_even
    logp_ens = np.logaddexp.reduce(logp, axis=0) - np.log(m)
    shift = np.mean([p[0] for p in parts], axis=0)  # mean log-normaliser
    zhat = logp_ens + shift[:, None]
    # Top-k among unique non-target candidates; the target is column 0.
    rank = np.where(unique, zhat, -np.inf)
    rank[:, 0] = -np.inf
    top_cols = np.argsort(-rank, axis=1, kind="stable")[:, :k]
    topk_logit = np.take_along_axis(zhat, top_cols, 1)
    if not np.isfinite(topk_logit).all():
        raise UserError(f"cannot keep k={k}: some rows have fewer distinct non-target "
                        "candidates")
    kept = np.zeros_like(unique)
    np.put_along_axis(kept, top_cols, True, 1)
    kept[:, 0] = True
    rest = unique & ~kept
    n_out = num_classes - unique.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mass_out = np.logaddexp.reduce(log_mass_out, axis=0) - np.log(m)
        # rho(T): teachers weighted by the mass they put outside U (none: no weight)
        weighted = np.where(np.isfinite(log_mass_out)[:, :, None],
                            log_mass_out[:, :, None] + log_peak, -np.inf)
        peak = (np.logaddexp.reduce(weighted, axis=0)
                - np.logaddexp.reduce(log_mass_out, axis=0)[:, None])
        log_n_out = np.log(n_out)
    tail_lse = np.empty((rows, len(temperatures)))
    for j, t in enumerate(temperatures):
        in_u = np.logaddexp.reduce(np.where(rest, logp_ens / t, -np.inf), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            outside = np.where(n_out > 0, log_n_out + (mass_out - log_n_out) / t + peak[:, j],
                               -np.inf)
            tail_lse[:, j] = np.logaddexp(in_u, outside) + shift / t
    return RowBlock(
        utt=first.utt, start=first.start, seed=first.seed, label=first.label,
        target_logit=zhat[:, 0].astype(np.float32),
        topk_index=np.take_along_axis(cand, top_cols, 1).astype(first.topk_index.dtype),
        topk_logit=topk_logit.astype(np.float16),
        tail_lse=tail_lse.astype(np.float32),
        crop_checksum=first.crop_checksum, features=first.features,  # the same views
        features_checksum=first.features_checksum,
    )


def check_same_views(specs: Sequence[StoreSpec], paths: Sequence[Path]) -> None:
    for spec, path in zip(specs[1:], paths[1:], strict=True):
        differing = [name for name in SAME if getattr(spec, name) != getattr(specs[0], name)]
        if differing:
            raise UserError(f"{path} differs from {paths[0]} in {', '.join(differing)}; merge "
                            "only caches of the same views and classes (dump with --views-from)")
    if 1.0 not in specs[0].temperatures:
        raise UserError(f"{paths[0]}: the temperature grid {list(specs[0].temperatures)} lacks "
                        "1.0, which the ensemble's probabilities are taken at")


def ensemble_teacher(specs: Sequence[StoreSpec]) -> TeacherInfo:
    """The ensemble's identity; its margin head is the members' when they share one."""
    teachers = [s.teacher for s in specs]
    digest = hashlib.sha256("".join(t.checkpoint_sha256 for t in teachers).encode()).hexdigest()
    heads = {(t.scale, t.margin, t.margin_kind) for t in teachers}
    scale, margin, kind = heads.pop() if len(heads) == 1 else (
        float(np.mean([t.scale for t in teachers])), 0.0, "none")
    return TeacherInfo(arch="ensemble:" + "+".join(t.arch for t in teachers),
                       checkpoint_sha256=digest, num_classes=teachers[0].num_classes,
                       scale=scale, margin=margin, margin_kind=kind)


def merge(paths: Sequence[str | Path], out: str | Path, k: int | None = None, *,
          storage_options: dict | None = None, resume: bool = False) -> StoreSpec:
    """Write the ensemble cache of ``paths`` to ``out`` (via a staging directory renamed at
    the end, so a failed merge leaves nothing at ``out`` and removes its staging; the
    staging of a killed merge is removed by the next one, which holds ``out``'s lock).

    An ``out`` on an object store is written in place (module docstring); ``resume``
    finishes one left incomplete. ``storage_options``: for every path given as a URL.
    """
    if len(paths) < 2:
        raise UserError("give at least two caches to merge")
    remote = is_remote(out)
    state = store_state(str(out), storage_options) if remote else (
        "store" if Path(out).exists() else "absent")
    if state != "absent" and not (remote and resume):
        raise UserError(f"{out} exists; choose another --out"
                        + (", or pass --resume to finish an interrupted merge" if remote else ""))
    readers = [StoreReader.open(p, storage_options=storage_options if is_remote(p) else None)
               for p in paths]
    for reader, path in zip(readers, paths, strict=True):
        if not reader.spec.has_crop_checksum:
            raise UserError(f"{path} is a format-1 cache without crop checksums; dump it "
                            "again before merging")
        if reader.spec.has_tail_samples:
            raise UserError(f"{path} holds a sampled tail (--tail-samples "
                            f"{reader.spec.tail_draws}): draws from one teacher's tail cannot "
                            "be merged into the ensemble's; merge caches dumped without it")
    specs = [r.spec for r in readers]
    check_same_views(specs, paths)
    k_max = min(s.k for s in specs)
    k = k_max if k is None else k
    if not 1 <= k <= k_max:
        raise UserError(f"--topk {k}: the inputs keep at most {k_max} non-targets per row")
    first = specs[0]
    spec = dataclasses.replace(
        first, k=k, embedding_dim=0, teacher=ensemble_teacher(specs),
        format_version=FORMAT_VERSION,
        extra={**first.extra, "ensemble": {
            "members": [str(p) for p in paths],
            "teachers": [s.teacher.to_dict() for s in specs],
            "probabilities_at_temperature": 1.0, "approximation": "top-k (merge.py)"}})
    if remote:
        with StoreLock.acquire(out, storage_options) as lock:
            _write_remote(readers, paths, spec, str(out), storage_options, state, lock.check)
        return spec
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with StoreLock.acquire(out):
        _write_merged(readers, paths, spec, out)
    return spec


def _write_shards(readers: Sequence[StoreReader], paths: Sequence[str | Path], spec: StoreSpec,
                  writer: StoreWriter) -> None:
    """Merge and write every shard the writer still misses."""
    first = readers[0].spec
    for shard in writer.missing_shards():
        start, stop = spec.shard_range(shard)
        blocks = [r.read(start, stop, features=i == 0 and first.features is not None)
                  for i, r in enumerate(readers)]
        for block, path in zip(blocks[1:], paths[1:], strict=True):
            for name in ("utt", "start", "seed", "label", "crop_checksum"):
                if not np.array_equal(getattr(block, name), getattr(blocks[0], name)):
                    raise UserError(f"{path}: rows {start}..{stop - 1} are other views than "
                                    f"{paths[0]}'s ({name} differs); merge only caches of "
                                    "the same views")
        writer.write_shard(shard, merge_rows(blocks, spec.num_classes, spec.temperatures,
                                             spec.k))


def _write_remote(readers: Sequence[StoreReader], paths: Sequence[str | Path], spec: StoreSpec,
                  out: str, options: dict | None, state: str, guard) -> None:
    """The merge into an object store: create (or, resuming, finish) it in place; a failure
    removes it, or says to resume when it cannot be removed (the store unreachable)."""
    if state == "store":  # --resume of a merge that created the store
        writer = StoreWriter.open(out, storage_options=options)
        if writer.spec.differences(dataclasses.replace(spec, manifest_ids=())):
            raise UserError(f"{out} is not an interrupted merge of these caches; choose "
                            f"another --out, or remove it with {remove_command(out)}")
        writer = StoreWriter.open(out, spec, storage_options=options)
    else:
        writer = StoreWriter.create(out, spec, storage_options=options,
                                    finish_interrupted=state == "creating")
    writer.guard = guard
    try:
        _write_shards(readers, paths, spec, writer)
    except (UserError, StoreError) as exc:
        if isinstance(exc, StoreError) and "lost the connection" in str(exc):
            raise StoreError(f"{exc}; once {out} is reachable, finish the merge with the same "
                             f"command and --resume") from None
        remove_store(out, options)
        raise


def _write_merged(readers: Sequence[StoreReader], paths: Sequence[Path], spec: StoreSpec,
                  out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp-merge")
    if tmp.exists():
        log.info("removing %s, left by a merge that was killed", tmp)
        shutil.rmtree(tmp)
    try:
        _write_shards(readers, paths, spec, StoreWriter.create(tmp, spec))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@click.command(context_settings={"show_default": True})
@click.argument("caches", nargs=-1, required=True, type=StoreLocation(exists=True))
@click.option("--out", type=StoreLocation(), required=True,
              help="The ensemble cache to write (.zarr, or an object-store URL), e.g. "
                   "--out exp/logits-ens.zarr.")
@storage_option_flag
@click.option("--resume", is_flag=True,
              help="Finish a merge into an object store that was interrupted (same inputs); "
                   "a local merge leaves nothing to finish.")
@click.option("--topk", type=click.IntRange(min=1), default=None,
              help="Non-targets kept per row (default: the smallest k of the inputs), "
                   "e.g. --topk 16.")
@click.option("-v", "--verbose", is_flag=True)
def cli(caches: tuple[str, ...], out: str, topk: int | None, verbose: bool,
        storage_options: dict | None, resume: bool) -> None:
    """Merge CACHES (same views, same label map) into the cache of their ensemble: the mean of
    the teachers' probabilities at T=1, re-reduced to target, top-k and tail. Each input has
    only its top-k, so the merge approximates the rest (see the module docstring and
    docs/merge_approximation.md).

    \b
    Examples:
      python -m stage1_teacher.dump --teacher wespeaker:exp/r34 --data vox \\
          --views-from exp/logits-ecapa.zarr --out exp/logits-r34.zarr
      python -m stage1_teacher.merge exp/logits-ecapa.zarr exp/logits-r34.zarr \\
          --out exp/logits-ens.zarr
    """
    setup_logging(verbose)
    spec = merge(list(caches), out, topk, storage_options=storage_options, resume=resume)
    click.echo(f"wrote the ensemble of {len(caches)} teachers, {spec.num_rows} rows (k={spec.k}) "
               f"to {out}")


def main() -> None:
    """``python -m stage1_teacher.merge``: bad input -> one ``error:`` line, exit 2."""
    run(cli)


if __name__ == "__main__":
    main()
