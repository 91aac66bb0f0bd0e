"""Smoke tests of the tracking, orchestration and GPU benchmarks in their quick forms:
the structure of what they return, and that every printed ratio is the quotient of the
printed times (the numbers themselves are for people to read)."""

from __future__ import annotations

import pytest

from sweeps.benchmarks import gpu, orchestration, tracking


def test_quick_tracking_benchmark_prints_its_ratios_of_its_times():
    result = tracking.run(quick=True)
    p, q = result["protocol"], result["quickstart"]
    assert set(p["seconds"]) == set(tracking.EVERY) and all(t > 0 for t in p["seconds"].values())
    for every, seconds in p["seconds"].items():
        assert p["ratio"][every] == pytest.approx(seconds / p["seconds"][0])
    assert p["max_rel_diff_every_10_vs_1"] <= p["tol"]  # every-10 values are exact too
    assert q["ratio"] == pytest.approx(q["seconds"]["tracked"] / q["seconds"]["untracked"])
    table = tracking.format_table(result)
    assert f"{p['ratio'][10]:5.2f}x" in table and f"{q['ratio']:5.2f}x" in table
    assert "load average" in table


@pytest.mark.slow
@pytest.mark.integration
def test_quick_orchestration_benchmark_prints_its_ratios_of_its_times():
    result = orchestration.run(quick=True)
    q, h = result["quickstart"], result["half_diverging"]
    assert q["trials"] == 4 and h["trials"] == 4
    assert q["ideal_s"] == pytest.approx(q["serial_s"] / result["cpus"])
    assert q["shipped_over_ideal"] == pytest.approx(q["shipped_s"] / q["ideal_s"])
    assert q["packing_speedup"] == pytest.approx(q["pack_size_1_s"] / q["shipped_s"])
    assert h["packing_speedup"] == pytest.approx(h["pack_size_1_s"] / h["pack_size_16_s"])
    table = orchestration.format_table(result)
    assert f"{q['shipped_over_ideal']:.2f}x the ideal" in table
    assert f"{h['packing_speedup']:.2f}x the speed of pack_size 1" in table


def test_gpu_benchmark_runs_on_cpu_in_quick_mode():
    result = gpu.run(quick=True, device="cpu")
    p, q = result["packed"], result["peak"]
    assert p["k"] == 4 and p["alone"] > 0 and p["packed"] > 0
    assert q["pack_size"] >= 1 and q["why"] and q["flops"] > 0
    assert q["flops"] == pytest.approx(6.0 * 1024 * 42_634 * q["packed"])  # FCN-4-128 on digits
    table = gpu.format_table(result)
    assert f"{p['packed'] / p['alone']:.1f}x" in table
    assert f"{q['flops'] / result['matmul_flops']:.1%} of the matmul peak" in table
