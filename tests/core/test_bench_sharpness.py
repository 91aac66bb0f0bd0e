"""Smoke test of the sharpness benchmark in quick mode (structure, not speed)."""

from __future__ import annotations

import pytest

from sweeps.benchmarks.sharpness import format_table, run
from warmup_core.hvp import HVP_METHODS

pytestmark = pytest.mark.slow  # a benchmark run: not in the fast tier


@pytest.mark.slow  # a benchmark, not a unit test
def test_quick_benchmark_reports_positive_numbers_for_every_section():
    result = run(quick=True, seed=0)
    assert set(result["models"]) == {"mlp", "cnn"}
    for name, m in result["models"].items():
        assert m["num_params"] > 0 and m["batch_size"] > 0
        assert result["models"][name]["hvp"]["gradient_s"] > 0
        assert set(m["hvp"]["methods"]) == set(HVP_METHODS)
        for r in m["hvp"]["methods"].values():
            assert r["hvp_s"] > 0 and r["hvp_over_gradient"] > 0
        top = m["top_eigenvalue"]
        assert top["reference"] > 0
        for solver in ("lanczos", "power"):
            assert top[solver]["time_s"] > 0 and top[solver]["num_hvps"] > 0
        assert top["lanczos"]["converged"] and top["lanczos"]["rel_error"] < 1e-3
        assert "available" in top["pyhessian"] and "reason" in top["pyhessian"]
        warm = m["warm_start"]
        assert len(warm["warm_hvps"]) == len(warm["cold_hvps"]) == warm["steps"] > 0
        assert min(warm["warm_hvps"]) > 0 and warm["warm_over_cold"] > 0
        assert warm["max_rel_disagreement"] < 1e-2
    table = format_table(result)
    assert "mlp" in table and "cnn" in table and "HVP/grad" in table
