"""Benchmark the cache store on a synthetic VoxCeleb2-shaped cache.

Writes stores of N = 1M and 10M rows (5,994 classes, k=32, 3 temperatures, VoxCeleb2's
1,092,009 manifest ids), each in a fresh subprocess so peak RSS values are independent,
then streams them back. Prints one JSON object as its last line and writes
docs/bench_store.md.

\b
Examples:
  python scripts/bench_store.py                 # full run (~2-3 min, ~1.5 GB of disk)
  python scripts/bench_store.py --quick         # N = 131,072 and 1,048,576
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numcodecs
import numpy as np
import psutil
import zarr

from experiments.machine import load_average, machine
from experiments.markdown import write_atomic
from experiments.paths import DOCS, SCRIPTS
from store import RowBlock, StoreReader, StoreWriter
from store.cli import setup_logging
from store.schema import ZSTD_LEVEL
from store.synthetic import synthetic_rows, synthetic_spec

log = logging.getLogger("bench_store")

VOXCELEB2_UTTERANCES = 1_092_009
SETTINGS = {
    "num_classes": 5994,
    "k": 32,
    "temperatures": (1.0, 2.0, 4.0),
    "chunk_rows": 4096,
    "shard_rows": 65536,
}


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _evict(path: Path) -> None:
    """Drop the store's files from the page cache so the next read comes from disk."""
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _stream(reader: StoreReader) -> tuple[float, int]:
    """Rows/s of one process streaming every row in random chunk order."""
    start, rows, checksum = time.perf_counter(), 0, 0.0
    for block in reader.iter_blocks(epoch=0, seed=0):
        rows += len(block)
        checksum += float(block.tail_lse[:, 0].sum())  # touch the data
    assert np.isfinite(checksum)
    return rows / (time.perf_counter() - start), rows


def run_child(num_rows: int, workdir: Path) -> dict[str, Any]:
    """Write then read one store of ``num_rows`` rows in this process; return measurements."""
    spec = synthetic_spec(num_rows, num_utterances=VOXCELEB2_UTTERANCES, **SETTINGS)
    path = workdir / f"bench_{num_rows}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    rss_start = _rss_mb()
    writer = StoreWriter.create(path, spec)
    write_s = generate_s = 0.0
    for shard in writer.missing_shards():
        start, stop = writer.shard_rows_range(shard)
        t0 = time.perf_counter()
        # Synthesise in chunk-sized pieces so the generator's float64 temporaries do not
        # dominate the peak RSS that is meant to measure the store.
        step = spec.chunk_rows
        block = RowBlock.concat(
            [synthetic_rows(spec, a, min(a + step, stop), seed=1) for a in range(start, stop, step)]
        )
        t1 = time.perf_counter()
        writer.write_shard(shard, block)
        generate_s += t1 - t0
        write_s += time.perf_counter() - t1
        del block
        if shard % 16 == 0:
            log.info("N=%d: wrote shard %d/%d", num_rows, shard + 1, spec.num_shards)
    rss_after_write = _rss_mb()
    sizes = {
        name: sum(f.stat().st_size for f in (path / name).rglob("*") if f.is_file())
        for name in [d.name for d in spec.array_defs()] + ["shard_complete", "manifest_ids"]
    }
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    del writer, spec

    reader = StoreReader.open(path, num_classes=SETTINGS["num_classes"])
    read_warm, rows = _stream(reader)
    assert rows == num_rows
    _evict(path)
    read_cold, _ = _stream(reader)
    result = {
        "rows": num_rows,
        "bytes_per_row": total / num_rows,
        "array_bytes_per_row": {name: size / num_rows for name, size in sizes.items()},
        "raw_bytes_per_row": reader.spec.bytes_per_row_raw(),
        "write_rows_per_s": num_rows / write_s,
        "generate_rows_per_s": num_rows / generate_s,
        "read_rows_per_s": read_warm,
        "read_rows_per_s_cold": read_cold,
        "rss_mb_start": rss_start,
        "rss_mb_after_write": rss_after_write,
        "rss_mb_after_read": _rss_mb(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    shutil.rmtree(path)
    return result


def _measure(num_rows: int, workdir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_store.py"), "--child", str(num_rows), "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_markdown(path: Path, runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    settings = ", ".join(f"{k}={v}" for k, v in SETTINGS.items())
    lines = [
        "# Cache store benchmark",
        "",
        f"Written by `python scripts/bench_store.py{' --quick' if summary['quick'] else ''}` "
        f"on {datetime.now(UTC):%Y-%m-%d}; rerun it to refresh this page.",
        "",
        f"- Machine: {machine(zarr, numcodecs, np)}. Load average (1, 5, 15 min): {summary['load_average']} "
        "(other jobs may share these cores; expect +/-30% noise in the rates).",
        f"- Store: synthetic VoxCeleb2-shaped rows ({settings}, no embedding, "
        f"{VOXCELEB2_UTTERANCES:,} manifest ids), zstd level {ZSTD_LEVEL} + crc32c per chunk. "
        "Logits are the exact top order statistics of 5,993 normal non-target cosines times "
        "s=32 (see `store/synthetic.py`); seeds are random 63-bit integers.",
        "- Write: `StoreWriter.write_shard` (validation + all arrays + completion flag), "
        "excluding the time to synthesise the rows.",
        "- Read: one process, `StoreReader.iter_blocks` (random chunk order, shuffle buffer of "
        "4 chunks, blocks of 4,096 rows); warm = store in the page cache right after writing, "
        "cold = after `posix_fadvise(DONTNEED)` on every file.",
        "- RSS: each N runs in a fresh process that writes, then reads twice; peak = ru_maxrss "
        "(includes numpy/zarr and the 1.09M-id manifest the writer's spec holds).",
        "",
        "| rows | bytes/row | full fp16 bytes/row | write rows/s | read rows/s (warm) "
        "| read rows/s (cold) | RSS after write / read MB | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['rows']:,} | {r['bytes_per_row']:.1f} | {summary['full_fp16_bytes_per_row']:,} "
            f"| {r['write_rows_per_s']:,.0f} | {r['read_rows_per_s']:,.0f} "
            f"| {r['read_rows_per_s_cold']:,.0f} "
            f"| {r['rss_mb_after_write']:.0f} / {r['rss_mb_after_read']:.0f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    big = runs[-1]
    lines += [
        "",
        f"Bytes per row by array at N={big['rows']:,} (raw, uncompressed row: "
        f"{big['raw_bytes_per_row']} bytes):",
        "",
        "| array | bytes/row |",
        "|---|---:|",
        *(f"| {n} | {b:.2f} |" for n, b in big["array_bytes_per_row"].items()),
        "",
        "Targets (issue 4): bytes/row <= 200 at k=32; read >= 200k rows/s; RSS flat between 1M "
        "and 10M rows and < 500 MB.",
        "",
    ]
    write_atomic(path, lines, {k: v for k, v in summary.items() if k != "load_average"})


@click.command(help=__doc__)
@click.option("--quick", is_flag=True, help="Small N (131,072 and 1,048,576) for CI.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DOCS / "bench_store.md",
    show_default=True,
    help="Markdown report to write.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the temporary stores go (default: a new temp dir).",
)
@click.option("--child", type=int, default=None, hidden=True)
def main(quick: bool, out: Path, workdir: Path | None, child: int | None) -> None:
    setup_logging()
    if child is not None:
        click.echo(json.dumps(run_child(child, workdir)))
        return
    sizes = (131_072, 1_048_576) if quick else (1_000_000, 10_000_000)
    load = load_average()
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench_store_")) if own_dir else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        runs = []
        for n in sizes:
            log.info("measuring N=%d in a fresh process", n)
            runs.append(_measure(n, workdir))
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    small, large = runs
    summary = {
        "bytes_per_row": round(large["bytes_per_row"], 1),
        "full_fp16_bytes_per_row": 2 * SETTINGS["num_classes"],
        "write_rows_per_s": round(large["write_rows_per_s"]),
        "read_rows_per_s": round(large["read_rows_per_s"]),
        "read_rows_per_s_cold": round(large["read_rows_per_s_cold"]),
        "rss_mb_1m": round(small["peak_rss_mb"], 1),
        "rss_mb_10m": round(large["peak_rss_mb"], 1),
        "rows_small": small["rows"],
        "rows_large": large["rows"],
        "quick": quick,
    }
    load_end = load_average()
    summary_for_docs = {**summary, "load_average": f"{load} at the start, {load_end} at the end"}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out, runs, summary_for_docs)
    log.info("wrote %s", out)
    click.echo(json.dumps(summary))
