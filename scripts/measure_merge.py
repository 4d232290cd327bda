"""How far merging top-k caches is from merging full logits (experiments.bench.measure_merge)."""

from experiments.bench.measure_merge import main
from store.cli import run

if __name__ == "__main__":
    run(main)
