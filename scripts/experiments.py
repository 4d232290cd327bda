"""`make results`: the paper's claims and the cache's worth, measured with seeds
(experiments.results).

Run as a file, a script's own folder comes first on the module path, so ``import
experiments`` in any script here finds this file rather than the package: its ``__path__``
makes it stand for the package, whose modules are read from the repository's experiments/.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().parents[1] / "experiments")]

if __name__ == "__main__":
    from experiments.results.cli import main

    main()
