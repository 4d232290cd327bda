"""The benchmarks and measurements behind docs/bench_*.md and the other measured pages: one
module per ``scripts/bench_*.py`` (and ``topk_coverage``, ``measure_merge``,
``sweep_recipe``, ``check_wespeaker``) entry point."""
