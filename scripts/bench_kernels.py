"""Benchmark the teacher-bucket Numba kernel against numpy (experiments.bench.kernels)."""

from experiments.bench.kernels import cli
from store.cli import run

if __name__ == "__main__":
    run(cli)
