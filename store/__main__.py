"""``python -m store``: inspect, verify and summarise a teacher-logit cache.

Bad input (missing store, wrong version, corrupt shard) prints one ``error: ...`` line and
exits with status 2 (see :func:`store._cli.run`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from store.atomic import atomic_path
from store.cli import run, setup_logging, storage_option_flag
from store.errors import CorruptShardError, StoreError
from store.reader import StoreReader, format_ranges
from store.rows import check_block, logsumexp_rows
from store.writer import StoreWriter

log = logging.getLogger("store")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="""Inspect, verify and summarise a teacher-logit cache (Zarr v3, see store/FORMAT.md).

\b
Examples:
  python -m store inspect logits.zarr
  python -m store verify logits.zarr
  python -m store stats logits.zarr --plot stats.png
  python -m store invalidate logits.zarr 3 7
  python -m store verify s3://bucket/logits.zarr --storage-option endpoint_url=http://host:9000
"""
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    setup_logging(verbose)


def _store_size(reader: StoreReader) -> dict[str, int]:
    return {name: int(reader.group[name].nbytes_stored()) for name in reader.group.array_keys()}


def inspect_report(reader: StoreReader) -> dict[str, Any]:
    """Everything ``inspect`` prints, as a JSON-able dict."""
    spec = reader.spec
    flags = reader.complete_flags()
    sizes = _store_size(reader)
    written_rows = sum(
        stop - start for i in np.flatnonzero(flags) for start, stop in [spec.shard_range(int(i))]
    )
    total = sum(sizes.values())
    arrays = []
    for d in spec.array_defs():
        array = reader.group[d.name]
        arrays.append(
            {
                "name": d.name,
                "dtype": str(d.dtype),
                "shape": list(array.shape),
                "chunks": list(array.chunks),
                "shards": list(array.shards or ()),
                "stored_bytes": sizes[d.name],
                "bytes_per_row": sizes[d.name] / written_rows if written_rows else None,
            }
        )
    attrs = {k: v for k, v in reader.attrs.items() if k != "spec"}
    spec_attrs = dict(reader.attrs["spec"])
    label_map = spec_attrs.pop("label_map")
    return {
        "path": reader.path,
        **attrs,
        "spec": spec_attrs,
        "label_map_keys": sorted(label_map),
        "shards": spec.num_shards,
        "complete_shards": int(flags.sum()),
        "missing_shards": format_ranges(np.flatnonzero(~flags).tolist()),
        "written_rows": written_rows,
        "arrays": arrays,
        "stored_bytes": total,
        "bytes_per_row": total / written_rows if written_rows else None,
        "raw_bytes_per_row": spec.bytes_per_row_raw(),
        "full_fp16_bytes_per_row": 2 * spec.num_classes,
    }


@cli.command()
@click.argument("path")
@storage_option_flag
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def inspect(path: str, as_json: bool, storage_options: dict | None) -> None:
    """Attributes, array shapes, size on disk, bytes per row and completeness of PATH.

    \b
    Example:
      python -m store inspect logits.zarr
    """
    reader = StoreReader.open(path, allow_incomplete=True, storage_options=storage_options)
    report = inspect_report(reader)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    spec, s = reader.spec, report["spec"]
    teacher = s["teacher"]
    click.echo(f"store:        {report['path']}")
    click.echo(
        f"format:       {report['format']} v{report['format_version']}, created "
        f"{report.get('created_at')} by {report.get('created_by')}"
    )
    click.echo(
        f"rows:         {spec.num_rows} in {spec.num_shards} shards of {spec.shard_rows} "
        f"(chunks of {spec.chunk_rows})"
    )
    missing = report["missing_shards"] or "none"
    click.echo(
        f"complete:     {report['complete_shards']}/{spec.num_shards} shards "
        f"({report['written_rows']} rows); missing: {missing}"
    )
    trained = ("" if spec.teacher.epoch is None or spec.teacher.epochs is None
               else f", trained {spec.teacher.epoch}/{spec.teacher.epochs} epochs")
    click.echo(
        f"teacher:      {teacher['arch']} sha256 {teacher['checkpoint_sha256'][:16]}..., "
        f"{teacher['num_classes']} classes, scale {teacher['scale']:g}, "
        f"margin {teacher['margin']:g} ({spec.teacher.margin_kind}){trained}"
    )
    click.echo(
        f"soft labels:  top k={spec.k} non-targets, temperatures {list(spec.temperatures)}, "
        f"embedding_dim {spec.embedding_dim}"
    )
    click.echo(
        f"manifest:     {reader.num_utterances} utterances, hash {spec.manifest_hash[:16]}; "
        f"augment hash {spec.augment_hash[:16] or '-'}; noise bank {spec.noise_bank_hash[:16] or '-'}"
    )
    click.echo(
        f"audio:        {spec.sample_rate} Hz, crops of {spec.crop_samples} samples "
        f"({spec.crop_samples / spec.sample_rate:.2f} s)"
    )
    click.echo(f"label map:    keys {report['label_map_keys']}")
    features = spec.features
    click.echo(
        "checks:       "
        + ("crc32 of each row's raw crop (replay is checked)" if spec.has_crop_checksum
           else "none per row (version-1 store: replayed audio cannot be checked)")
    )
    click.echo(
        "features:     "
        + (f"stored, float16 {features.frames} x {features.mel_bins} fbank per row"
           if features else "not stored (stage 2 replays crops)")
    )
    click.echo("arrays:")
    for a in report["arrays"]:
        per_row = "-" if a["bytes_per_row"] is None else f"{a['bytes_per_row']:.1f}"
        click.echo(
            f"  {a['name']:<13} {a['dtype']:<8} shape {str(a['shape']):<16} chunks "
            f"{str(a['chunks']):<13} shards {str(a['shards']):<14} "
            f"{a['stored_bytes'] / 1e6:9.2f} MB  {per_row:>7} B/row"
        )
    per_row = report["bytes_per_row"]
    click.echo(
        f"size on disk: {report['stored_bytes'] / 1e6:.2f} MB, "
        f"{'-' if per_row is None else f'{per_row:.1f}'} bytes/row "
        f"(raw {report['raw_bytes_per_row']}, full fp16 logits "
        f"{report['full_fp16_bytes_per_row']})"
    )


@cli.command()
@click.argument("path")
@storage_option_flag
@click.option(
    "--allow-incomplete", is_flag=True, help="Do not fail on shards that are not written yet."
)
def verify(path: str, allow_incomplete: bool, storage_options: dict | None) -> None:
    """Read every chunk of PATH, check checksums, shard objects and row invariants.

    Every shard marked complete must have the object of every array (stored features
    included); every chunk must pass its crc32c checksums and every row the invariants of
    store/FORMAT.md. Prints one line per problem and exits non-zero naming the bad shards.

    \b
    Example:
      python -m store verify logits.zarr
    """
    reader = StoreReader.open(path, allow_incomplete=True, check_files=False,
                             storage_options=storage_options)
    spec = reader.spec
    flags = reader.complete_flags()
    problems: list[str] = []
    bad_shards: set[int] = set()
    if not allow_incomplete and not flags.all():
        missing = np.flatnonzero(~flags).tolist()
        problems.append(f"shards {format_ranges(missing)} are not written")
        bad_shards.update(missing)
    for shard, keys in sorted(reader.missing_shard_objects().items()):
        problems.append(f"shard {shard} is marked complete but has no object {', '.join(keys)}")
        bad_shards.add(shard)
    try:
        reader.manifest_ids()
    except StoreError as exc:
        problems.append(str(exc))
    if not spec.has_crop_checksum:
        log.info("%s is a version-1 store: it has no crop checksums to verify", path)
    checked = 0
    shards = [s for s in np.flatnonzero(flags).tolist() if s not in bad_shards]
    for shard in tqdm(shards, desc="verify", unit="shard", leave=False, disable=None):
        first = shard * spec.chunks_per_shard
        for chunk in range(first, min(first + spec.chunks_per_shard, spec.num_chunks)):
            # One chunk at a time: with stored features a chunk is megabytes per row range.
            try:
                block = reader.read_chunk_unchecked(chunk)
            except CorruptShardError as exc:
                problems.append(str(exc))
                bad_shards.add(shard)
                continue
            start, _ = spec.chunk_range(chunk)
            _, errors = check_block(block, spec, start, reader.num_utterances)
            problems.extend(f"shard {shard}: {e}" for e in errors)
            if errors:
                bad_shards.add(shard)
            checked += len(block)
    for problem in problems:
        click.echo(f"bad: {problem}")
    if problems:
        where = f" in shard(s) {format_ranges(sorted(bad_shards))}" if bad_shards else ""
        raise StoreError(
            f"{path} failed verification: {len(problems)} problem(s){where}; first: {problems[0]}"
        )
    arrays = "every array" + (" (stored features included)" if spec.features else "")
    click.echo(
        f"ok: {path}: {checked} rows in {int(flags.sum())} shards pass checksums and "
        f"invariants, {arrays}"
    )


def teacher_stats(
    reader: StoreReader, temperature: float, max_rows: int, seed: int = 0, bins: int = 50
) -> dict[str, Any]:
    """Target-probability histogram and kept non-target mass of top-k' (k' = 1..k).

    Reads whole chunks in random order until ``max_rows`` rows are seen.
    """
    spec = reader.spec
    t_index = reader.temperature_index(temperature)
    p_hist = np.zeros(bins, dtype=np.int64)
    kept_hist = np.zeros((spec.k, bins), dtype=np.int64)
    kept_sum = np.zeros(spec.k)
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = 0
    for chunk in reader.chunks_for(0, seed):
        if rows >= max_rows:
            break
        block = reader.read_chunk(chunk)
        z_t = block.target_logit.astype(np.float64) / temperature
        z_k = block.topk_logit.astype(np.float64) / temperature
        tail = block.tail_lse[:, t_index].astype(np.float64)
        lse_nontarget = np.logaddexp(logsumexp_rows(z_k), tail)
        p_target = np.exp(-np.logaddexp(0.0, lse_nontarget - z_t))
        kept = np.cumsum(np.exp(z_k - lse_nontarget[:, None]), axis=1)
        p_hist += np.histogram(p_target, edges)[0]
        bin_of = np.clip((kept * bins).astype(np.int64), 0, bins - 1)
        for j in range(spec.k):
            kept_hist[j] += np.bincount(bin_of[:, j], minlength=bins)
        kept_sum += kept.sum(axis=0)
        rows += len(block)
    if rows == 0:
        raise StoreError(f"{reader.path} has no complete shard to summarise")

    def quantile(hist: np.ndarray, q: float) -> float:
        cdf = np.cumsum(hist) / hist.sum()
        return float(edges[1:][np.searchsorted(cdf, q)])

    return {
        "rows": rows,
        "temperature": temperature,
        "bin_edges": edges.tolist(),
        "target_prob_hist": p_hist.tolist(),
        "target_prob_median": quantile(p_hist, 0.5),
        "kept_mass_mean": (kept_sum / rows).tolist(),
        "kept_mass_p10": [quantile(h, 0.1) for h in kept_hist],
        "kept_mass_p90": [quantile(h, 0.9) for h in kept_hist],
    }


def plot_stats(stats: dict[str, Any], path: Path) -> None:
    """Two panels: p_target histogram, kept non-target mass vs k'; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    edges = np.asarray(stats["bin_edges"])
    left.bar(edges[:-1], stats["target_prob_hist"], width=np.diff(edges), align="edge")
    left.set_xlabel(f"teacher target probability (T={stats['temperature']:g})")
    left.set_ylabel("rows")
    left.set_title(f"p_target over {stats['rows']} rows")
    k = np.arange(1, len(stats["kept_mass_mean"]) + 1)
    right.plot(k, stats["kept_mass_mean"], marker="o", label="mean")
    right.fill_between(
        k,
        stats["kept_mass_p10"],
        stats["kept_mass_p90"],
        alpha=0.3,
        label="10-90% (bin width 0.02)",
    )
    right.set_xlabel("k'")
    right.set_ylabel("non-target mass kept by top-k'")
    right.set_ylim(0, 1)
    right.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # a full or read-only disk: one line, old plot stays
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


@cli.command()
@click.argument("path")
@storage_option_flag
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG with both panels here.",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Temperature (default: the first of the store's grid).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Summarise whole chunks in random order until this many rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
def stats(
    path: str, plot_path: Path | None, temperature: float | None, max_rows: int, as_json: bool,
    storage_options: dict | None,
) -> None:
    """Teacher target-probability histogram and non-target mass kept by top-k'.

    Of an incomplete store, the written shards only (a warning says so).

    \b
    Example:
      python -m store stats logits.zarr --plot stats.png
    """
    reader = StoreReader.open(path, allow_incomplete=True, storage_options=storage_options)
    temperature = reader.spec.temperatures[0] if temperature is None else temperature
    result = teacher_stats(reader, temperature, max_rows)
    missing = reader.missing_shards()
    result["shards"], result["complete_shards"] = reader.spec.num_shards, \
        reader.spec.num_shards - len(missing)
    if missing:
        click.echo(f"warning: {path} is incomplete: {len(missing)} of {reader.spec.num_shards} "
                   f"shards are not written (shards {format_ranges(missing)}); these "
                   f"statistics cover the written shards only", err=True)
    if plot_path is not None:
        if not plot_path.parent.is_dir():
            raise StoreError(f"cannot write plot {plot_path}: {plot_path.parent} does not exist")
        plot_stats(result, plot_path)
        log.info("wrote %s", plot_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    hist = np.asarray(result["target_prob_hist"])
    high = hist[int(0.9 * len(hist)) :].sum() / hist.sum()
    click.echo(
        f"{result['rows']} rows at T={temperature:g}: median p_target "
        f"{result['target_prob_median']:.2f}, p_target >= 0.9 in {high:.1%} of rows"
    )
    click.echo("k'   kept non-target mass (mean, p10-p90)")
    kept = result["kept_mass_mean"]
    shown = sorted({1, 2, 4, 8, 16, 32, 64, 128, len(kept)} & set(range(1, len(kept) + 1)))
    for j in shown:
        click.echo(
            f"{j:<4} {kept[j - 1]:.3f} ({result['kept_mass_p10'][j - 1]:.2f}-"
            f"{result['kept_mass_p90'][j - 1]:.2f})"
        )


@cli.command()
@click.argument("path")
@storage_option_flag
@click.argument("shards", nargs=-1, type=int, required=True)
def invalidate(path: str, shards: tuple[int, ...], storage_options: dict | None) -> None:
    """Mark SHARDS of PATH as not written, so a resumed dump rewrites them.

    \b
    Example (after verify named shard 3 as corrupt):
      python -m store invalidate logits.zarr 3
    """
    writer = StoreWriter.open(path, storage_options=storage_options)
    try:
        writer.invalidate(shards)
    except OSError as exc:  # a read-only or full disk: the flags are written one by one
        raise StoreError(f"cannot mark shards of {path} as not written: "
                         f"{exc.strerror or exc}") from None
    click.echo(f"marked shard(s) {format_ranges(list(shards))} of {path} as not written")


def main() -> None:
    run(cli)


if __name__ == "__main__":
    main()
