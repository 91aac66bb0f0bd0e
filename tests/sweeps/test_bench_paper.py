"""`warmup-sweep bench paper --quick`: the paper spec's three optimizers run on CIFAR-shaped
data when no archives are found, and the table's figures are quotients of the result's."""

from __future__ import annotations

import pytest

from sweeps.benchmarks.paper import FULL_STEPS, format_table, run


@pytest.mark.slow  # three tiny WRN trials, one at a time and packed
def test_quick_paper_benchmark_runs_the_specs_optimizers_and_prints_its_ratios(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WARMUP_SWEEPS_DATA", str(tmp_path))  # no archives: Gaussian images
    result = run(quick=True, data_dir=str(tmp_path))

    assert result["trials"] == ["adam", "gi-adam", "radam"]  # the spec's optimizer axis
    assert result["data"].startswith("gaussian 3x32x32")
    assert (result["steps"], result["batch_size"]) == (3, 16)
    assert result["one_at_a_time"] > 0 and result["packed"] > 0
    assert result["hours_per_full_trial"] == pytest.approx(
        FULL_STEPS / result["one_at_a_time"] / 3600
    )
    table = format_table(result)
    assert f"({result['packed'] / result['one_at_a_time']:.2f}x)" in table
    assert f"{result['num_params']:,} parameters" in table
