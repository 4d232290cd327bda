"""speaker.models.profile: MACs per second of audio against a hand count, and the table
(no timing is asserted)."""

from __future__ import annotations

from torch import nn

from speaker.features.fbank import num_frames
from speaker.models.profile import LENGTHS, RUNTIMES, macs_per_second, markdown_table


def test_macs_are_half_the_counted_flops_per_second() -> None:
    model = nn.Linear(80, 10)  # per frame: 80 x 10 multiply-accumulates
    frames = num_frames(10 * 16000)
    assert macs_per_second(model, "fbank") == frames * 80 * 10 / 10.0


def test_table_rows() -> None:
    timed = {"name": "a", "params": 1.5e6, "macs_per_s": 2.5e9, "peak_mb": 12.3,
             "latency_ms": {r: {f"{s:g}s": 7.0 for s in LENGTHS} for r in RUNTIMES}}
    counted = {"name": "b", "params": 3e8, "macs_per_s": 1.8e10}
    lines = markdown_table([timed, counted])
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2].startswith("| a | 1.50 | 2.50 | 12 | 7.0 |")
    assert lines[3].startswith("| b | 300.00 | 18.00 | - | - |")
