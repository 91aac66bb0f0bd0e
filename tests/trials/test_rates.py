"""The rate of each update of a trial: fixed schedules and adaptive warmup in the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trials import run_trial
from trials.config import TrialConfig
from trials.rates import TrialRates

TINY = {
    "model": {"name": "fcn", "width": 16, "depth": 3},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "num_steps": 40,
    "device": "cpu",
}


def _config(**fields) -> TrialConfig:
    return TrialConfig.model_validate({**TINY, **fields})


def test_a_fixed_schedule_gives_its_formula_and_ends_at_warmup_steps():
    config = _config(eta_trgt=0.8, warmup_steps=4, decay="linear", eta_min=0.0)
    rates = TrialRates(config, lambda0=10.0, eta_c=None)
    assert [rates.rate(t) for t in (1, 2, 4)] == pytest.approx([0.2, 0.4, 0.8])
    assert rates.rate(40) == pytest.approx(0.0)  # linear decay to eta_min at the last update
    assert rates.end_step == 4 and not rates.measures_at(1)


def test_adaptive_sgd_follows_the_sharpness_and_adam_the_preconditioned_one():
    # warmup_steps far beyond the run: the linear floor (t / 10^4) never binds here.
    fields = dict(eta_trgt=1.0, warmup_shape="adaptive", warmup_steps=10_000)
    sgd = TrialRates(_config(**fields), 10.0, None)
    adam_config = _config(**fields, optimizer={"name": "adam"})
    adam = TrialRates(adam_config, 10.0, None)
    assert sgd.measures_at(1) and adam.measures_at(1)
    # Safety 0.5 of the thresholds 2 / eta (GD) and 38 / eta (Adam, beta1 = 0.9).
    assert sgd.rate(1, sharpness=400.0, preconditioned_sharpness=None) == pytest.approx(
        0.5 * 2 / 400
    )
    assert adam.rate(1, sharpness=400.0, preconditioned_sharpness=1e4) == pytest.approx(
        0.5 * 38 / 1e4
    )


def test_relative_eta_trgt_is_resolved_before_adaptive_warmup():
    config = _config(
        eta_trgt=4.0, eta_trgt_relative_to="lambda0", warmup_shape="adaptive", warmup_steps=10
    )
    rates = TrialRates(config, lambda0=8.0, eta_c=None)
    assert rates.eta_trgt == 0.5
    assert rates.rate(1, sharpness=1.0) == 0.5 and rates.end_step == 1  # safe at once


# ------------------------------------------------------------------- in a real trial

SP = dict(
    dataset={"name": "digits", "train_size": 256, "test_size": 64},
    model={"name": "fcn", "width": 32, "depth": 4},
    loss="mse",
    parameterization="sp",
    eta_trgt=4.0,  # twice the GD limit at init, 2 / lambda0
    eta_trgt_relative_to="lambda0",
    num_steps=24,
)


def test_adaptive_warmup_in_a_trial_keeps_its_rules_and_records_its_end():
    safety, growth = 0.5, 0.1
    result = run_trial(
        _config(
            **SP,
            warmup_shape="adaptive",
            warmup_steps=10_000,  # the linear floor never binds
            adaptive_safety=safety,
            adaptive_growth=growth,
            adaptive_every=2,
        )
    )
    assert result.status == "completed", result.summary.get("error")
    lr, sharpness = (np.array(result.steps[k], dtype=float) for k in ("lr", "sharpness"))
    end, eta_trgt = result.summary["warmup_end_step"], result.summary["eta_trgt"]
    # SP flattens at once (sharpness reduction): the target is reached well before the end.
    assert end is not None and end < 24
    assert lr[end - 1] == eta_trgt and (lr[: end - 1] < eta_trgt).all()
    # Measured at updates 1, 3, 5, ... during warmup and never after.
    measured = ~np.isnan(sharpness)
    assert measured[: end - 1 : 2].all() and not measured[1 : end - 1 : 2].any()
    assert not measured[end:].any()
    # Wherever measured during warmup, rate x sharpness is at most safety x 2 (GD), and
    # the rate grows by at most 1 + growth per update.
    warm = measured & (np.arange(1, 25) < end)
    assert (lr[warm] * sharpness[warm] <= safety * 2 * (1 + 1e-9)).all()
    assert lr[0] * sharpness[0] == pytest.approx(safety * 2)  # the first rate is the safe one
    assert (lr[1:end] / lr[: end - 1] <= 1 + growth + 1e-12).all()


def test_linear_warmup_records_its_end_and_a_diverged_trial_before_it_none():
    done = run_trial(_config(eta_trgt=0.01, warmup_steps=8))
    assert done.status == "completed" and done.summary["warmup_end_step"] == 8
    diverged = run_trial(_config(eta_trgt=1e4, warmup_steps=30))
    assert diverged.status == "diverged" and diverged.summary.get("warmup_end_step") is None
    assert math.isfinite(diverged.steps["lr"][-1])
