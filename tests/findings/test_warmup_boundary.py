"""Finding 2: warmup raises the largest trainable eta_trgt (the divergence boundary).

Small version of the quickstart spec's SP facet (FCN-4-128, MSE, GD), scanned per warmup
length from small eta upward until the first divergence, then read with
`results.divergence_boundary` like a sweep.
"""

from __future__ import annotations

import pandas as pd
import pytest

from results import divergence_boundary
from tests.findings.conftest import small_config
from trials import run_trial

ETAS = (4.0, 8.0, 16.0, 32.0, 64.0)  # multiples of 1 / lambda_H(0)
WARMUPS = (1, 16, 64)


@pytest.mark.slow
def test_divergence_boundary_rises_with_warmup():
    rows = []
    for warmup in WARMUPS:
        for eta in ETAS:
            config = small_config(
                loss="mse",
                parameterization="sp",
                optimizer={"name": "sgd"},
                eta_trgt=eta,
                eta_trgt_relative_to="lambda0",
                warmup_steps=warmup,
                num_steps=200,
            )
            result = run_trial(config)
            assert result.status != "error", result.summary["error"]
            rows.append(result.summary)
            if result.status == "diverged":
                break  # larger etas diverge too; the boundary needs only the first
    boundary = divergence_boundary(pd.DataFrame(rows)).set_index("warmup_steps")
    largest = boundary["max_trainable_eta"]

    assert not boundary["non_monotone"].any()
    assert largest.notna().all(), boundary
    assert largest.is_monotonic_increasing, largest.to_dict()
    assert largest[WARMUPS[-1]] > largest[WARMUPS[0]], largest.to_dict()
