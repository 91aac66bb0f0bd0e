"""Smoke test of the store benchmark through the CLI (the numbers are for people to read)."""

import json

import pytest

from sweeps.cli import main

pytestmark = pytest.mark.slow  # a benchmark run: not in the fast tier


def test_quick_store_benchmark_prints_json_with_every_measurement(capsys):
    assert main(["bench", "store", "--trials", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["sizes"]
    assert (row["trials"], row["planned"], row["steps_per_trial"]) == (30, 60, 200)
    for key in (
        "write_ms_first",
        "write_ms_last",
        "load_s",
        "plain_load_s",
        "statuses_s",
        "resume_planning_cold_s",
        "resume_planning_s",
    ):
        assert row[key] > 0, key
    assert row["write_window"] == 10


def test_trials_option_is_for_the_store_benchmark_only(capsys):
    assert main(["bench", "packing", "--trials", "10"]) == 2
    assert "--trials applies to bench store only" in capsys.readouterr().err
