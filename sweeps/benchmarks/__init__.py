"""Benchmarks users run: each prints a table of ratios and has a --json form."""
