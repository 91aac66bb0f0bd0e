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
    assert p["hvp_s"] > 0 and p["gradient_s"] > 0
    for every, products in tracking.FLOOR_PRODUCTS.items():
        measurements = p["steps"] // every
        spent = p["seconds"][every] - p["seconds"][0]
        assert p["floor"][every] == pytest.approx(
            1 + measurements * products * p["hvp_s"] / p["seconds"][0]
        )
        assert p["products_per_measurement"][every] == pytest.approx(
            spent / (measurements * p["hvp_s"])
        )
    assert q["ratio"] == pytest.approx(q["seconds"]["tracked"] / q["seconds"]["untracked"])
    # 2 quick trials of 10 updates, measured at updates 1, 6 (every 5), unless diverged.
    assert 2 <= q["measurements"] <= 4
    assert q["floor"] == pytest.approx(
        1 + q["measurements"] * 2 * q["hvp_s"] / q["seconds"]["untracked"]
    )
    table = tracking.format_table(result)
    assert f"{p['ratio'][10]:5.2f}x" in table and f"{q['ratio']:5.2f}x" in table
    assert "load average" in table
    assert f"{p['floor'][1]:5.2f}x at 1 product per measurement" in table


@pytest.mark.slow
@pytest.mark.integration
def test_quick_orchestration_benchmark_prints_its_ratios_of_its_times():
    result = orchestration.run(quick=True)
    q = result["quickstart"]
    assert q["trials"] == 4 and result["half_diverging"] is None  # --quick: quickstart only
    assert q["ideal_s"] == pytest.approx(q["serial_s"] / result["cpus"])
    assert q["shipped_over_ideal"] == pytest.approx(q["shipped_s"] / q["ideal_s"])
    assert q["packing_speedup"] == pytest.approx(q["pack_size_1_s"] / q["shipped_s"])
    assert q["floor_over_ideal"] == pytest.approx((q["ideal_s"] + q["fixed_s"]) / q["ideal_s"])
    table = orchestration.format_table(result)
    assert f"{q['shipped_over_ideal']:.2f}x the ideal" in table
    assert "half diverging" not in table


def test_the_orchestration_table_prints_each_ratio_beside_its_times():
    result = {
        "quick": False,
        "cpus": 2,
        "load_average": [0.5, 1.25],
        "quickstart": {
            "trials": 36,
            "pack_size": "auto",
            "serial_s": 30.0,
            "ideal_s": 15.0,
            "shipped_s": 30.0,
            "pack_size_1_s": 27.0,
            "shipped_over_ideal": 2.0,
            "packing_speedup": 0.9,
            "fixed_s": 12.0,
            "floor_over_ideal": 1.8,
        },
        "half_diverging": {
            "trials": 24,
            "pack_size_16_s": 12.0,
            "pack_size_1_s": 15.0,
            "packing_speedup": 1.25,
        },
    }
    lines = orchestration.format_table(result).splitlines()

    assert (
        lines[0]
        == "sweep orchestration on 2 CPUs, best of 2 (load average 0.50 before, 1.25 after)"
    )
    assert lines[3].split() == ["ideal", "(that", "/", "2", "CPUs)", "15.0", "s", "1.00x"]
    assert lines[4].endswith("30.0 s  2.00x the ideal")
    assert lines[5].endswith("27.0 s  pack_size auto: 0.90x the speed of pack_size 1")
    assert lines[6].endswith("12.0 s  fixed cost: no sweep through Ray here goes below 1.80x")
    assert lines[7] == "24 small-MLP trials, half diverging early, warmup-sweep run:"
    assert lines[8].endswith("12.0 s  1.25x the speed of pack_size 1")


def test_gpu_benchmark_runs_on_cpu_in_quick_mode():
    result = gpu.run(quick=True, device="cpu")
    p, q = result["packed"], result["peak"]
    assert p["k"] == 4 and p["alone"] > 0 and p["packed"] > 0
    assert q["pack_size"] >= 1 and q["why"] and q["flops"] > 0
    assert q["flops"] == pytest.approx(6.0 * 1024 * 42_634 * q["packed"])  # FCN-4-128 on digits
    table = gpu.format_table(result)
    assert f"{p['packed'] / p['alone']:.1f}x" in table
    assert f"{q['flops'] / result['matmul_flops']:.1%} of the matmul peak" in table
