"""docs/models.md: size, MACs and CPU latency of every shipped architecture
(experiments.bench.models)."""

from experiments.bench.models import main
from store.cli import run

if __name__ == "__main__":
    run(main)
