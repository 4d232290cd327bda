"""Batched evaluation against batch 1 on a finished demo (experiments.bench.eval)."""

from experiments.bench.eval import main
from store.cli import run

if __name__ == "__main__":
    run(main)
