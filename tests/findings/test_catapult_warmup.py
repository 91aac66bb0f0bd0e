"""Finding 4: warmup started at the catapult estimate eta_c reaches eta_trgt in fewer steps
than warmup from 0, with no loss of final performance.

Small version of sweeps/specs/findings-catapult-warmup.yaml (FCN-4-128, MSE, GD, SP).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.findings.conftest import columns, small_config
from trials import run_trial

ETA_TRGT = 16.0  # x 1/lambda_H(0): diverges without warmup at this scale
WARMUP = 64
LOSS_TOLERANCE = 1.10  # catapult start's final train loss at most 10% above eta_init = 0's


def _run(eta_init):
    config = small_config(
        loss="mse",
        parameterization="sp",
        optimizer={"name": "sgd"},
        eta_trgt=ETA_TRGT,
        eta_trgt_relative_to="lambda0",
        eta_init=eta_init,
        warmup_steps=WARMUP,
        num_steps=300,
    )
    result = run_trial(config)
    assert result.status == "completed", result.summary
    return result


def _steps_to_target(result) -> int:
    """First step whose learning rate equals eta_trgt (the warmup's end in practice)."""
    step, lr = columns(result, "step", "lr")
    reached = np.flatnonzero(lr >= result.summary["eta_trgt"] * (1 - 1e-9))
    return int(step[reached[0]])


@pytest.mark.slow
def test_catapult_start_reaches_target_sooner_at_no_loss():
    zero, catapult = _run(0.0), _run("catapult")
    eta_c = catapult.summary["eta_c"]
    assert 0 < eta_c < catapult.summary["eta_trgt"]

    assert _steps_to_target(zero) == WARMUP
    assert _steps_to_target(catapult) < WARMUP
    final_zero = zero.summary["final_train_loss"]
    final_catapult = catapult.summary["final_train_loss"]
    assert final_catapult <= LOSS_TOLERANCE * final_zero, (final_catapult, final_zero)
