"""EER per epoch of a few optimizer recipes on a short CPU run (experiments.bench.sweep_recipe)."""

from experiments.bench.sweep_recipe import main
from store.cli import run

if __name__ == "__main__":
    run(main)
