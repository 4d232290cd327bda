"""Benchmark the teacher-bucket Numba kernel against the vectorised numpy version.

Times ``stage2_student.kernels.teacher_probs`` (after its warm-up compile, with 1 and
``--threads`` Numba threads, writing into preallocated outputs) and
``numpy_buckets`` (same math, whole-array numpy, defined here) on synthetic cache rows: k=64
float16 top-k logits, k' in {64, 32}, T=2. Prints a table, writes docs/bench_kernels.md
and ends with one JSON line: rows_per_s (``--threads`` threads, k=64, k'=64),
numpy_rows_per_s, speedup_vs_numpy, bytes_per_row_touched. The TRKD and dual-group kernels
(``triage_probs``, ``dual_group_probs``), which regroup ``teacher_probs``' output, are
timed on it beside it (k'=64, TRKD at tau=0.05, dual-group with softening on): JSON
trkd_rows_per_s, dualgroup_rows_per_s. So is the sampled tail's kernel
(``sampled_tail_probs``, M = 32 float16 draws per row, on the same buckets): JSON
sampled_rows_per_s.

\b
Examples:
    python scripts/bench_kernels.py                       # 1M rows, writes docs/bench_kernels.md
    python scripts/bench_kernels.py --rows 200000 --repeats 3 --out /tmp/bench.md
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import click
import numba
import numpy as np
from llvmlite import binding as llvm

from experiments.machine import load_average, machine
from experiments.markdown import write_atomic
from stage2_student.kernels import (
    DualGroupBuckets,
    SampledTail,
    TeacherBuckets,
    TriageBuckets,
    dual_group_probs,
    sampled_tail_probs,
    teacher_probs,
    triage_probs,
)
from stage2_student.losses import log_odds_at_entropy
from store.cli import setup_logging
from store.errors import UserError

log = logging.getLogger("bench_kernels")

K = 64
K_PRIMES = (64, 32)
TEMPERATURE = 2.0
TAIL_DRAWS = 32  # M of the sampled tail's kernel


def synthetic_rows(rows: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cache-like rows: scale-32 cosine logits, top-k sorted descending, float16."""
    rng = np.random.default_rng(seed)
    target = rng.normal(20.0, 4.0, rows).astype(np.float32)
    first = rng.normal(10.0, 3.0, (rows, 1)).astype(np.float32)
    gaps = rng.exponential(0.3, (rows, k - 1)).astype(np.float32)
    topk = np.concatenate([first, first - np.cumsum(gaps, axis=1)], axis=1).astype(np.float16)
    tail = rng.normal(8.0, 1.0, rows).astype(np.float32)  # logsumexp(z/T) of ~1000 others
    return target, topk, tail


def bytes_per_row(k: int, k_prime: int) -> int:
    """Bytes read and written per row: target + fp16 top-k + tail in, three outputs out."""
    read = 4 + 2 * k + 4
    written = 4 * (2 + (k_prime + 1) + (k_prime + 2))
    return read + written


TRKD_TAU = 0.05  # the published end of TRKD's curriculum: the longest background scan
DUALGROUP_ENTROPY = 0.5  # softening on: the kernel's one log per row is timed too


def group_bytes_per_row(kind: str, k_prime: int) -> int:
    """Bytes the TRKD / dual-group / sampled-tail kernel reads from teacher_probs' output
    (and the cache) and writes."""
    if kind == "sampled":  # two tail masses and tail_lse in; per draw id + logit in, 4 out
        return 3 * 4 + TAIL_DRAWS * (2 + 2 + 4 * 4)
    if kind == "trkd":  # binary + nontarget in; mass, confusion, size, capped out
        return 4 * 2 + 4 * (k_prime + 1) + 4 * 3 + 4 * k_prime + 4 + 1
    return 4 * (k_prime + 2) + 4 * (k_prime + 1) + 4 * 2 + 4  # full in; primary, binary, soften


def numpy_buckets(target_logit: np.ndarray, topk_logit: np.ndarray, tail_lse: np.ndarray,
                  k_prime: int, temperature: float) -> TeacherBuckets:
    """The math of ``teacher_probs`` (no margin), vectorised with numpy: the baseline.

    Whole-array operations in float32, the way one would write it without a compiler:
    several passes over [B, k] temporaries instead of one pass per row. (z/T in float32 is
    exact only for power-of-two T at extreme logits; the kernel forms it in float64.)
    """
    inv_t = np.float32(1.0 / temperature)
    u = topk_logit.astype(np.float32) * inv_t
    big = np.maximum(u.max(axis=1), tail_lse)
    e = np.exp(u - big[:, None])
    e_tail = np.exp(tail_lse - big) + e[:, k_prime:].sum(axis=1)
    kept = e[:, :k_prime]
    s_nt = kept.sum(axis=1) + e_tail
    ut = (target_logit * inv_t).astype(np.float32)
    top = np.maximum(ut, big)
    e_t = np.exp(ut - top)
    rescale = np.exp(big - top)
    total = e_t + s_nt * rescale
    c_full = (rescale / total)[:, None]
    nontarget = np.concatenate([kept, e_tail[:, None]], axis=1) / s_nt[:, None]
    full = np.concatenate([(e_t / total)[:, None], kept * c_full, e_tail[:, None] * c_full],
                          axis=1)
    binary = np.stack([e_t / total, s_nt * c_full[:, 0]], axis=1)
    return TeacherBuckets(binary=binary.astype(np.float32), nontarget=nontarget.astype(np.float32),
                          full=full.astype(np.float32))


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that call summed over threads).

    CPU time is what the work costs even when other jobs share the cores (wall time then
    includes waiting for a core).
    """
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def write_report(path: Path, table: list[dict], summary: dict, settings: dict) -> None:
    lines = [
        "# Teacher-bucket kernel benchmark",
        "",
        "Written by `scripts/bench_kernels.py`; rerun it to refresh. Numbers are best-of-"
        f"{settings['repeats']} wall times.",
        "",
        "## Machine and settings",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Results",
        "",
        "| implementation | threads | k | k' | seconds | rows/s | rows/CPU-s | bytes/row | GB/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['impl']} | {r['threads']} | {r['k']} | {r['k_prime']} | {r['seconds']:.4f} "
          f"| {r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {r['bytes_per_row']} "
          f"| {r['gb_per_s']:.2f} |" for r in table),
        "",
        "bytes/row counts what one row reads (fp32 target, fp16 top-k, fp32 tail) and writes "
        "(binary, non-target and full distributions, fp32); for numba-trkd and "
        "numba-dualgroup, what they read of those buckets and write. rows/CPU-s divides by the CPU "
        "time of all threads: the throughput per core, unaffected by other jobs on the machine "
        "(compare it with rows/s when the load average is high).",
        "",
    ]
    write_atomic(path, lines, summary)


@click.command(help=__doc__)
@click.option("--rows", default=1_000_000, show_default=True, help="Rows per call.")
@click.option("--repeats", default=5, show_default=True, help="Timed calls per setting (best).")
@click.option("--threads", default=2, show_default=True, help="Numba threads for the headline.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("docs/bench_kernels.md"), show_default=True, help="Markdown report.")
@click.option("-v", "--verbose", is_flag=True)
def cli(rows: int, repeats: int, threads: int, seed: int, out_path: Path, verbose: bool) -> None:
    setup_logging(verbose)
    if rows < 1 or repeats < 1:
        raise UserError(f"--rows and --repeats must be >= 1, got {rows} and {repeats}")
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise UserError(f"--threads {threads}: this machine allows 1..{numba.config.NUMBA_NUM_THREADS}")
    if not out_path.parent.is_dir():
        raise UserError(f"--out {out_path}: directory {out_path.parent} does not exist")
    load_at_start = load_average()
    target, topk, tail = synthetic_rows(rows, K, seed)
    log.info("%d rows, k=%d float16, T=%g", rows, K, TEMPERATURE)

    table: list[dict] = []

    def record(impl: str, n_threads: int, k_prime: int, timing: tuple[float, float],
               nbytes: int | None = None) -> dict:
        seconds, cpu_seconds = timing
        nbytes = bytes_per_row(K, k_prime) if nbytes is None else nbytes
        entry = dict(impl=impl, threads=n_threads, k=K, k_prime=k_prime, seconds=seconds,
                     rows_per_s=rows / seconds, rows_per_cpu_s=rows / max(cpu_seconds, 1e-9),
                     bytes_per_row=nbytes, gb_per_s=rows * nbytes / seconds / 1e9)
        table.append(entry)
        click.echo(f"{impl:15s} threads={n_threads} k={K} k'={k_prime:2d}  {seconds:8.4f} s  "
                   f"{entry['rows_per_s']:>13,.0f} rows/s  {entry['gb_per_s']:5.2f} GB/s  "
                   f"{entry['rows_per_cpu_s']:>13,.0f} rows/CPU-s")
        return entry

    headline: dict[int, dict] = {}
    for k_prime in K_PRIMES:
        out = TeacherBuckets.empty(rows, k_prime)
        start = time.perf_counter()
        teacher_probs(target, topk, tail, k_prime, TEMPERATURE, out=out)  # compile / cache load
        log.info("warm-up call (compile or cache load + first touch) %.2f s",
                 time.perf_counter() - start)
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            timing = best_time(
                lambda kp=k_prime, o=out: teacher_probs(target, topk, tail, kp, TEMPERATURE, out=o),
                repeats)
            entry = record("numba", n_threads, k_prime, timing)
            if n_threads == threads:
                headline[k_prime] = entry
        numba.set_num_threads(threads)
        reference = numpy_buckets(target, topk, tail, k_prime, TEMPERATURE)  # warm-up
        err = max(float(np.abs(getattr(out, f) - getattr(reference, f)).max())
                  for f in ("binary", "nontarget", "full"))
        log.info("k'=%d: max |numba - numpy| = %.2e", k_prime, err)
        del reference
        timing = best_time(
            lambda kp=k_prime: numpy_buckets(target, topk, tail, kp, TEMPERATURE),
            max(1, min(repeats, 3)))
        entry = record("numpy", 1, k_prime, timing)
        headline[k_prime]["numpy_rows_per_s"] = entry["rows_per_s"]

    # TRKD and dual-group: on the buckets the DKD kernel gives at k' = k.
    buckets = teacher_probs(target, topk, tail, K, TEMPERATURE)
    cap = log_odds_at_entropy(DUALGROUP_ENTROPY)
    group: dict[str, dict] = {}
    rng = np.random.default_rng(seed + 1)
    draw_index = rng.integers(0, 5994, (rows, TAIL_DRAWS)).astype(np.int16)
    draw_logit = (tail[:, None] * TEMPERATURE - rng.exponential(3.0, (rows, TAIL_DRAWS))
                  ).astype(np.float16)
    for kind, call, out in (
            ("sampled", lambda o: sampled_tail_probs(buckets, tail, draw_logit, draw_index,
                                                     TEMPERATURE, out=o),
             SampledTail.empty(rows, TAIL_DRAWS)),
            ("trkd", lambda o: triage_probs(buckets, TRKD_TAU, out=o),
             TriageBuckets.empty(rows, K)),
            ("dualgroup", lambda o: dual_group_probs(buckets, cap, out=o),
             DualGroupBuckets.empty(rows, K))):
        call(out)  # compile / cache load
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            entry = record(f"numba-{kind}", n_threads, K,
                           best_time(lambda c=call, o=out: c(o), repeats),
                           nbytes=group_bytes_per_row(kind, K))
            if n_threads == threads:
                group[kind] = entry
        numba.set_num_threads(threads)
        del out

    main = headline[K]
    summary = dict(
        rows_per_s=round(main["rows_per_s"]),
        rows_per_cpu_s=round(main["rows_per_cpu_s"]),
        numpy_rows_per_s=round(main["numpy_rows_per_s"]),
        speedup_vs_numpy=round(main["rows_per_s"] / main["numpy_rows_per_s"], 2),
        bytes_per_row_touched=main["bytes_per_row"],
        threads=threads, k=K, k_prime=K, temperature=TEMPERATURE, rows=rows,
        rows_per_s_k_prime_32=round(headline[32]["rows_per_s"]),
        speedup_vs_numpy_k_prime_32=round(
            headline[32]["rows_per_s"] / headline[32]["numpy_rows_per_s"], 2),
        trkd_rows_per_s=round(group["trkd"]["rows_per_s"]),
        trkd_rows_per_cpu_s=round(group["trkd"]["rows_per_cpu_s"]),
        dualgroup_rows_per_s=round(group["dualgroup"]["rows_per_s"]),
        dualgroup_rows_per_cpu_s=round(group["dualgroup"]["rows_per_cpu_s"]),
        sampled_rows_per_s=round(group["sampled"]["rows_per_s"]), sampled_draws=TAIL_DRAWS,
        trkd_tau=TRKD_TAU, dualgroup_binary_entropy=DUALGROUP_ENTROPY,
    )
    settings = {
        "machine": f"{machine(np, numba)} (LLVM target {llvm.get_host_cpu_name()}, Numba "
                   f"threading layer {numba.threading_layer()})",
        "load average (1/5/15 min) at start": load_at_start,
        "rows per call": f"{rows:,}",
        "k / k' / T": f"{K} (float16) / {', '.join(map(str, K_PRIMES))} / {TEMPERATURE}",
        "numba": "preallocated outputs (`out=`), timed after the warm-up call",
        "numpy": "`numpy_buckets` (in the bench), float32 whole-array ops, single thread",
        "numba-trkd / numba-dualgroup": f"`triage_probs` at tau={TRKD_TAU} / "
                                         f"`dual_group_probs` with softening to "
                                         f"{DUALGROUP_ENTROPY} bit, on teacher_probs' k'={K} "
                                         "buckets, preallocated outputs",
        "numba-sampled": f"`sampled_tail_probs`, M = {TAIL_DRAWS} float16 draws per row "
                         f"(int16 ids), on the same buckets, preallocated outputs",
        "repeats": repeats,
    }
    write_report(out_path, table, summary, settings)
    log.info("wrote %s", out_path)
    click.echo(json.dumps(summary))
