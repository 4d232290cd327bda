"""What ``make demo`` and ``make results`` share, and the benchmarks: recipes and sizes, the
run plan and its one scheduler, evaluation, the reports, the machine description.

The entry points are the files in scripts/ (each one a short shim over a module here).
"""
