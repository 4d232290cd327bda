"""`make results`: the paper's claims and the cache's worth, measured with seeds
(experiments.results)."""

from experiments.results.cli import main

if __name__ == "__main__":
    main()
