"""Benchmarks: `make bench` runs every bench/bench_*.py module.

Each module has `run(quick=False) -> list of tables`, a table being
`{"title": str, "columns": [str], "rows": [[...]], "notes": str}`. The runner
prints every table and writes them all to bench/results/results.md and .json.
"""
