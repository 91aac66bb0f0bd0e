"""Finding 3: Adam's pre-conditioned sharpness at init is above its stability threshold
38/eta at a practical eta; GI-Adam (v_0 = g_0^2) lowers it by more than 10x and, without
warmup, diverges only at larger eta.

Small version of sweeps/specs/findings-adam-giadam.yaml (FCN-4-128, 512 digits, xent).
"""

from __future__ import annotations

import pandas as pd
import pytest

from results import divergence_boundary
from tests.findings.conftest import small_config
from trials import run_trial
from trials.probe import probe
from warmup_core.stability import adam_threshold

PRACTICAL_ETA = 1e-3  # Adam's usual default
ETAS = tuple(1e-4 * 2**x for x in range(9, 14))  # 0.0512 ... 0.8192, the spec's upper grid


def _config(optimizer: str, eta: float = PRACTICAL_ETA, **fields):
    return small_config(
        loss="xent",
        parameterization="sp",
        optimizer={"name": optimizer, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        eta_trgt=eta,
        **fields,
    )


@pytest.mark.slow
def test_giadam_removes_the_initial_preconditioned_sharpness():
    adam, gi = probe(_config("adam")), probe(_config("gi-adam"))
    threshold = adam_threshold(PRACTICAL_ETA, beta1=0.9)  # 38 / eta

    assert adam["preconditioned_sharpness"] > threshold  # Adam starts unstable at 1e-3
    assert gi["preconditioned_sharpness"] < threshold  # GI-Adam starts stable
    assert adam["preconditioned_sharpness"] >= 10 * gi["preconditioned_sharpness"]


def _boundary_scan(optimizer: str) -> list[dict]:
    """Summaries of no-warmup trials from the smallest eta up to the first divergence
    (larger etas diverge too: the boundary needs only the first)."""
    rows = []
    for eta in ETAS:
        result = run_trial(_config(optimizer, eta, warmup_steps=1, num_steps=200))
        assert result.status != "error", result.summary["error"]
        rows.append(result.summary)
        if result.status == "diverged":
            break
    return rows


@pytest.mark.slow
def test_giadam_diverges_later_and_trains_no_worse_without_warmup():
    """Without warmup GI-Adam diverges at a larger eta than Adam, and by the paper's rule
    (stuck counts as failed) its largest trainable eta is at least Adam's. On this small
    config both are stuck from 0.2048 (the spec's larger one has GI-Adam learn at 0.2048
    too, barely), so a strictly larger trainable eta is not asserted."""
    trials = pd.DataFrame(_boundary_scan("adam") + _boundary_scan("gi-adam"))
    by_rule = {
        rule: divergence_boundary(trials, ["optimizer"], stuck_trainable=rule).set_index(
            "optimizer"
        )
        for rule in (False, True)
    }
    largest = by_rule[False]["max_trainable_eta"]
    not_diverged = by_rule[True]["max_trainable_eta"]  # stuck counts as trainable

    assert not by_rule[False]["non_monotone"].any(), by_rule[False]
    assert largest["gi-adam"] >= largest["adam"], by_rule[False].to_dict("index")
    assert not_diverged["gi-adam"] > not_diverged["adam"], by_rule[True].to_dict("index")
