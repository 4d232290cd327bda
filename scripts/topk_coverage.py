"""What the top-k cache keeps of a trained teacher (experiments.bench.topk_coverage)."""

from experiments.bench.topk_coverage import cli
from store.cli import run

if __name__ == "__main__":
    run(cli)
