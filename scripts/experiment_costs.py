"""A teacher forward against a student step, timed side by side (experiments.experiment_costs)."""

from experiments.experiment_costs import main

if __name__ == "__main__":
    main()
