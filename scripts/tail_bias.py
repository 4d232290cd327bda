"""Sampled tail vs a longer exact head at equal bytes per row (experiments.bench.tail_bias)."""

from experiments.bench.tail_bias import cli
from store.cli import run

if __name__ == "__main__":
    run(cli)
