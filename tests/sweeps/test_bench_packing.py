"""Smoke test of the packing benchmark (the numbers themselves are for people to read)."""

from sweeps.benchmarks.packing import format_table, run


def test_quick_packing_benchmark_runs_and_prints_ratios():
    result = run(quick=True)
    rows = result["models"][0]["rows"]
    assert [r["k"] for r in rows] == [1, 4]
    assert all(r["sequential"] > 0 and r["batched"] > 0 and r["vmap"] > 0 for r in rows)
    table = format_table(result)
    assert "packed bmm" in table and "x)" in table
