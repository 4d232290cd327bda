"""scripts/bench_store.py still runs (one small child measurement)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_store.py"


@pytest.mark.slow
def test_child_measurement(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # its sibling benchlib, as when run as a file
    spec = importlib.util.spec_from_file_location("bench_store", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run_child(20_000, tmp_path)
    assert result["rows"] == 20_000 and 0 < result["bytes_per_row"] < 200
    assert result["read_rows_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert not list(tmp_path.iterdir())  # the store is removed afterwards
