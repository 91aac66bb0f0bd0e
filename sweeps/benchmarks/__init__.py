"""Benchmarks users run: each prints a table of ratios and has a --json form."""

# Nothing to import from the package itself: each benchmark is a module with `run` and
# `format_table`, run by name (`warmup-sweep bench NAME`).
__all__: list[str] = []
