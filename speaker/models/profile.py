"""What a model costs to run: parameters, MACs per second of audio, one-thread batch-1 CPU
latency under torch eager, TorchScript and ONNX Runtime, and peak memory.

* MACs: :class:`torch.utils.flop_counter.FlopCounterMode` over a 10-s input, FLOPs / 2,
  divided by 10 (it counts matrix products and convolutions, the bulk of these models);
* latency: median of ``repeats`` timed calls after one warm-up, one intra-op thread,
  batch 1, for each input length, per runtime (:mod:`speaker.models.export` makes the
  TorchScript and ONNX files);
* peak memory: the process's resident-set high-water mark during one eager 10-s forward,
  less its resident set before it (each model is profiled in a fresh process, so the mark
  is that forward's).

Example::

    row = profile_variant(Variant("x-vector 128", "xvector", {"channels": 128,
                                                               "embed_dim": 128}))
    row["params"], row["macs_per_s"], row["latency_ms"]["onnx"]["2s"]
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from speaker.models import build, count_parameters
from speaker.models.export import example_input, export_model, export_settings, load_exported

LENGTHS = (2.0, 10.0)  # seconds of audio timed
MAC_SECONDS = 10.0
RUNTIMES = ("eager", "torchscript", "onnx")


@dataclass(frozen=True)
class Variant:
    """One architecture at one width: what the table calls it, and how to build it;
    ``timed=False`` for models too slow for the table's time budget (counted only)."""

    name: str
    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    timed: bool = True


def macs_per_second(model: torch.nn.Module, input_kind: str) -> float:
    """Multiply-accumulates per second of audio (FLOPs / 2 over a 10-s input / 10)."""
    x = example_input(input_kind, MAC_SECONDS)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 2 / MAC_SECONDS


def median_ms(fn, x: torch.Tensor, repeats: int) -> float:
    """Median wall milliseconds of ``fn(x)`` over ``repeats`` calls after one warm-up."""
    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _profile(variant: Variant, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(variant.arch, **variant.kwargs).eval()
    kind = model.input_kind
    row: dict[str, Any] = {"name": variant.name, "arch": variant.arch, "kwargs": variant.kwargs,
                           "params": count_parameters(model)}
    inputs = {f"{s:g}s": example_input(kind, s) for s in LENGTHS}
    if variant.timed:  # first: no forward has raised the process's high-water mark yet
        before = _rss_bytes()
        with torch.no_grad():
            model(inputs[f"{LENGTHS[-1]:g}s"])
        # ru_maxrss is in KiB on Linux
        row["peak_mb"] = max(0.0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                                   - before) / 2**20)
    row["macs_per_s"] = macs_per_second(model, kind)
    if not variant.timed:
        return row
    runtimes = {"eager": model}
    with tempfile.TemporaryDirectory() as tmp:
        settings = export_settings(kind, 16000)
        for fmt, runtime, suffix in (("torchscript", "torchscript", ".ts"),
                                     ("onnx", "onnx", ".onnx")):
            path = export_model(model, Path(tmp) / f"m{suffix}", fmt, settings)
            runtimes[runtime] = load_exported(path, threads=1)
        row["latency_ms"] = {name: {length: median_ms(fn, x, repeats)
                                    for length, x in inputs.items()}
                             for name, fn in runtimes.items()}
    return row


def profile_variant(variant: Variant, repeats: int = 5) -> dict[str, Any]:
    """Profile ``variant`` in a fresh process (see the module doc) -> its table row."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_profile, (variant, repeats))


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as Markdown: one line per variant, latencies per runtime and length."""
    head = "| model | params (M) | GMACs / s audio | peak MB (10 s) | " + " | ".join(
        f"{r} {s:g} s (ms)" for r in RUNTIMES for s in LENGTHS) + " |"
    lines = [head, "|---" * (4 + len(RUNTIMES) * len(LENGTHS)) + "|"]
    for row in rows:
        lat = row.get("latency_ms")
        cells = [f"{lat[r][f'{s:g}s']:.1f}" if lat else "-" for r in RUNTIMES for s in LENGTHS]
        peak = f"{row['peak_mb']:.0f}" if "peak_mb" in row else "-"
        lines.append(f"| {row['name']} | {row['params'] / 1e6:.2f} | "
                     f"{row['macs_per_s'] / 1e9:.2f} | {peak} | " + " | ".join(cells) + " |")
    return lines
