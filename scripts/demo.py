"""`make demo`: the whole pipeline on the synthetic corpus (experiments.demo)."""

from experiments.demo.cli import main

if __name__ == "__main__":
    main()
