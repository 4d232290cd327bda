"""Choose the recipes' settings on the dev split (experiments.tuning)."""

from experiments.tuning.cli import main

if __name__ == "__main__":
    main()
