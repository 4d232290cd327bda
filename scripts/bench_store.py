"""Benchmark the cache store on a VoxCeleb2-shaped cache (experiments.bench.store)."""

from experiments.bench.store import main
from store.cli import run

if __name__ == "__main__":
    run(main)
