"""experiments.bench.store still runs (one small child measurement)."""

from __future__ import annotations

import pytest

from experiments.bench.store import run_child


@pytest.mark.slow
def test_child_measurement(tmp_path):
    result = run_child(20_000, tmp_path)
    assert result["rows"] == 20_000 and 0 < result["bytes_per_row"] < 200
    assert result["read_rows_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert not list(tmp_path.iterdir())  # the store is removed afterwards
