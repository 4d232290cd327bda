"""A training manifest restricted to a share of the speakers (experiments.speaker_subset)."""

from experiments.speaker_subset import main
from store.cli import run

if __name__ == "__main__":
    run(main)
