"""Finding 2: warmup raises the largest trainable eta_trgt (the divergence boundary), and
less for muP than for SP.

Small version of sweeps/specs/findings-warmup-boundary.yaml (FCN-4-128, MSE, GD), scanned
per warmup length from small eta upward until the first divergence, then read with
`results.divergence_boundary` like a sweep.
"""

from __future__ import annotations

import pandas as pd
import pytest

from results import divergence_boundary
from tests.findings.conftest import small_config
from trials import run_trial

ETAS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # multiples of 1 / lambda_H(0)
WARMUPS = (1, 16, 64)


def _boundary(parameterization: str, warmups=WARMUPS) -> pd.Series:
    """Largest trainable eta_trgt * lambda0 per warmup length, scanned from small eta
    upward until the first divergence (larger etas diverge too)."""
    rows = []
    for warmup in warmups:
        for eta in ETAS:
            config = small_config(
                loss="mse",
                parameterization=parameterization,
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
                break
    boundary = divergence_boundary(pd.DataFrame(rows)).set_index("warmup_steps")
    assert not boundary["non_monotone"].any(), boundary
    assert boundary["max_trainable_eta"].notna().all(), boundary
    return boundary["max_trainable_eta"]


@pytest.mark.slow
def test_divergence_boundary_rises_with_warmup():
    largest = _boundary("sp")

    assert largest.is_monotonic_increasing, largest.to_dict()
    assert largest[WARMUPS[-1]] > largest[WARMUPS[0]], largest.to_dict()


@pytest.mark.slow
def test_warmup_raises_the_mup_boundary_less_than_the_sp_one():
    """muP (small last-layer init, the sharpening regime) gains less from warmup: on the
    bundled spec's boundary search nothing at all from T_wrm 1 to 1024."""
    sp, mup = _boundary("sp", (1, 64)), _boundary("mup", (1, 64))

    assert mup[64] / mup[1] < sp[64] / sp[1], {"sp": sp.to_dict(), "mup": mup.to_dict()}
