"""Benchmark the stage-1 dump (experiments.bench.dump)."""

from experiments.bench.dump import main
from store.cli import run

if __name__ == "__main__":
    run(main)
