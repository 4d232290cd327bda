"""docs/models.md, the table users choose a model from: every architecture at the widths
entkd ships (the demo's students and teacher, the paper's widths), with parameters, MACs
per second of audio, one-thread batch-1 CPU latency (2-s and 10-s utterances) under torch
eager, TorchScript and ONNX Runtime, and peak memory (speaker.models.profile does the work).

Example::

    python scripts/bench_models.py              # ~2-3 minutes on 2 cores -> docs/models.md
    python scripts/bench_models.py --repeats 5 --report /tmp/models.md
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import torch

from experiments.machine import cores, cpu_name, load_average
from experiments.markdown import write_atomic
from experiments.paths import DOCS
from experiments.recipes import RECIPES
from speaker.models.__main__ import VARIANTS
from speaker.models.profile import Variant, markdown_table, profile_variant
from stage1_teacher.train import PRESETS
from store.cli import parse_options

REPORT = DOCS / "models.md"


def variants() -> list[Variant]:
    """The demo's students and teacher (experiments.recipes, the demo preset), then the
    paper's widths (speaker.models' table); WavLM Large is counted, not timed."""
    out = [Variant(f"demo student: {r.width}", r.arch, parse_options(r.opts))
           for r in RECIPES.values()]
    demo = PRESETS["demo"]
    out.append(Variant(f"demo teacher: ECAPA C={demo.arch_kwargs['channels']}", demo.arch,
                       dict(demo.arch_kwargs)))
    out += [Variant(f"paper: {name}", arch, dict(kwargs), timed=arch != "wavlm_ecapa")
            for name, (arch, kwargs, _) in VARIANTS.items() if name != "campp_e512"]
    return out


@click.command(epilog="""\b
Examples:
  python scripts/bench_models.py
  python scripts/bench_models.py --repeats 5 --report /tmp/models.md
""")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed calls per runtime and length (the median is reported).")
@click.option("--report", type=click.Path(path_type=Path), default=REPORT, show_default=True)
def main(repeats: int, report: Path) -> None:
    """Profile every shipped architecture and width; write the table."""
    load, t0 = load_average(), time.monotonic()
    rows = []
    for v in variants():
        rows.append(profile_variant(v, repeats))
        click.echo(f"{v.name}: {json.dumps(rows[-1].get('latency_ms', {}))}", err=True)
    lines = [
        "# Models: accuracy's price in size and speed",
        "",
        f"`python scripts/bench_models.py --repeats {repeats}` on {datetime.now(UTC):%Y-%m-%d}: "
        f"{cpu_name()}, {cores()} cores, torch {torch.__version__}; load average {load} at the "
        "start (other jobs shared the cores: latencies are upper bounds); the script took "
        f"{time.monotonic() - t0:.0f} s.",
        "",
        "Parameters exclude the classifier. MACs: `torch.utils.flop_counter.FlopCounterMode` "
        "over a 10-s input (matrix products and convolutions), FLOPs / 2, per second of audio. "
        f"Latency: one thread, batch 1, median of {repeats} calls after a warm-up, fbank input "
        "(feature extraction not included); TorchScript and ONNX files as "
        "`python -m stage2_student.export` writes them. Peak MB: the process's resident-set "
        "growth during one eager 10-s forward. WavLM-ECAPA (WavLM Large + ECAPA C=512) is "
        "counted but not timed: a 10-s forward alone takes longer than this page's budget. "
        "For accuracy see docs/demo.md (demo widths) and docs/RESULTS.md.",
        "",
        *markdown_table(rows),
        "",
    ]
    write_atomic(report, lines, {r["name"]: r.get("latency_ms", {}).get("onnx") for r in rows})
    click.echo("\n".join(lines))
