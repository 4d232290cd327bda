"""Benchmark a stage-2 epoch: cached DKD, CE and online DKD (experiments.bench.stage2)."""

from experiments.bench.stage2 import cli
from store.cli import run

if __name__ == "__main__":
    run(cli)
