"""The packing benchmark in quick mode: what it measures and prints is consistent (the
speeds themselves are for people to read, never asserted)."""

import re

import pytest

from sweeps.benchmarks.packing import format_table, run

pytestmark = pytest.mark.slow  # a few seconds of training, twice


@pytest.fixture(scope="module")
def quick():
    return run(quick=True)


def test_half_diverging_trials_end_the_same_packed_and_one_at_a_time(quick):
    half = quick["half_diverging"]
    assert half["statuses_identical"] is True
    # Every other trial runs at eta 50 and diverges within its 3 steps; the rest do not.
    assert half["statuses"].get("diverged") == half["trials"] // 2
    diverged_at = [s for s in half["diverged_steps"] if s]
    assert len(diverged_at) == half["trials"] // 2 and max(diverged_at) <= half["steps"]


def test_the_table_prints_the_quotients_of_the_measured_rates(quick):
    table = format_table(quick)
    (model,) = quick["models"]
    assert [r["k"] for r in model["rows"]] == [1, 4]
    assert f"pack_size auto -> {model['auto']}" in table
    for row in model["rows"]:
        line = next(
            ln
            for ln in table.splitlines()
            if re.match(rf"\s+{row['k']}\s+{row['sequential']:.1f}", ln)
        )
        printed = [float(x) for x in re.findall(r"\(\s*([\d.]+)x\)", line)]
        assert printed == [
            round(row["batched"] / row["sequential"], 2),
            round(row["vmap"] / row["sequential"], 2),
        ]
