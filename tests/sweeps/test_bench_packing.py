"""The packing benchmark: what its quick run measures and how its table reads the numbers.

The timings themselves are for people to read; what can be checked is the work the
bench counts, that packed and one-at-a-time runs of its half-diverging grid end alike,
and that every printed ratio is the quotient of the measured numbers it sits beside.
"""

import pytest

from sweeps.benchmarks.packing import format_table, run

# MLP 64-128-128-10 (the bench's small model on 8x8 digits) at batch 512: weights and
# biases of its three layers, and 6 x batch x parameters FLOPs per trial-step.
SMALL_PARAMETERS = (64 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
SMALL_FLOPS_PER_TRIAL_STEP = 6 * 512 * SMALL_PARAMETERS


@pytest.mark.slow  # trains 30-odd small trials: 10-20 s on 2 cores
def test_quick_packing_benchmark_counts_its_work_and_packed_runs_end_like_sequential():
    result = run(quick=True)

    (small,) = result["models"]  # --quick measures the small model only
    rows = small["rows"]
    assert [r["k"] for r in rows] == [1, 4]
    for r in rows:
        expected = SMALL_FLOPS_PER_TRIAL_STEP * max(r["batched"], r["vmap"])
        assert r["flops"] == pytest.approx(expected, rel=1e-12)

    half = result["half_diverging"]
    assert (half["trials"], half["steps"]) == (16, 3)
    assert sum(half["statuses"].values()) == 16
    assert half["statuses"]["diverged"] == 8  # eta_trgt 50 diverges within 3 steps
    assert sum(step > 0 for step in half["diverged_steps"]) == 8
    assert half["statuses_identical"] is True  # packed and sequential runs end alike
    assert result["end_to_end"] is None and result["quickstart"] is None


def test_table_prints_each_ratio_as_the_quotient_of_its_numbers():
    result = {
        "device": "cpu",
        "threads": 2,
        "matmul_flops": 1e11,
        "models": [
            {
                "name": "tiny",
                "steps": 5,
                "auto": 4,
                "rows": [
                    {"k": 1, "sequential": 10.0, "batched": 8.0, "vmap": 12.5, "flops": 1e9},
                    {"k": 4, "sequential": 20.0, "batched": 50.0, "vmap": 45.0, "flops": 5e9},
                ],
            }
        ],
        "half_diverging": {
            "trials": 16,
            "steps": 3,
            "sequential_s": 3.0,
            "packed_s": 1.2,
            "statuses": {"completed": 8, "diverged": 8},
            "statuses_identical": False,
        },
        "end_to_end": {
            "k": 16,
            "trials": 32,
            "steps": 50,
            "cpus": 2,
            "ray_per_config": 40.0,
            "ray_packed": 130.0,
        },
        "quickstart": {
            "cpus": 2,
            "pack_size": "auto",
            "seconds": {"bundled": 20.0, "1": 50.0, "16": 25.0},
        },
    }
    lines = format_table(result).splitlines()

    assert lines[0].endswith("matmul peak 100.0 GFLOP/s")
    assert "pack_size auto -> 4" in lines[2]
    # 8 / 10 = 0.80x and 12.5 / 10 = 1.25x; 50 / 20 = 2.50x and 45 / 20 = 2.25x; the
    # fraction of peak is flops / matmul_flops.
    assert lines[4].split() == ["1", "10.0", "8.0", "(0.80x)", "12.5", "(1.25x)", "1.0%"]
    assert lines[5].split() == ["4", "20.0", "50.0", "(2.50x)", "45.0", "(2.25x)", "5.0%"]
    text = "\n".join(lines)
    assert "one at a time 3.0 s, packed 1.2 s (2.50x); statuses DIFFER" in text
    assert "packs of 16" in text and "130.0 trial-steps/s  3.25x" in text
    assert "pack_size 1 50.0 s (2.50x the bundled time); pack_size 16 25.0 s (1.25x)" in text
