"""Check --teacher wespeaker:DIR against wespeaker's own model code (experiments.bench.check_wespeaker)."""

from experiments.bench.check_wespeaker import main
from store.cli import run

if __name__ == "__main__":
    run(main)
