"""Fixtures shared by the store tests: small synthetic specs and stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from store import StoreSpec, StoreWriter
from store.synthetic import synthetic_rows, synthetic_spec

# Small enough to write in ~0.1 s, big enough for several shards and partial last ones.
SMALL = {
    "num_rows": 1000,
    "num_classes": 50,
    "k": 8,
    "temperatures": (1.0, 2.0),
    "num_utterances": 120,
    "chunk_rows": 64,
    "shard_rows": 256,
}


def _make_spec(**overrides: Any) -> StoreSpec:
    return synthetic_spec(**{**SMALL, **overrides})


def _write_store(path: Path, spec: StoreSpec, seed: int = 0) -> Path:
    writer = StoreWriter.create(path, spec)
    for shard in writer.missing_shards():
        start, stop = writer.shard_rows_range(shard)
        writer.write_shard(shard, synthetic_rows(spec, start, stop, seed))
    return path


@pytest.fixture
def make_spec() -> Callable[..., StoreSpec]:
    """``make_spec(k=4)``: the SMALL synthetic spec with overrides."""
    return _make_spec


@pytest.fixture
def write_store() -> Callable[..., Path]:
    """``write_store(path, spec, seed=0)``: create and fill a store with synthetic rows."""
    return _write_store


@pytest.fixture
def small_store(tmp_path: Path) -> tuple[Path, StoreSpec]:
    spec = _make_spec()
    return _write_store(tmp_path / "small.zarr", spec), spec
