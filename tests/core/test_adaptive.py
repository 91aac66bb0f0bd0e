"""Sharpness-adaptive warmup on problems whose safe rate is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmup_core.adaptive import AdaptiveWarmup
from warmup_core.optim import SGD, Adam
from warmup_core.schedules import Schedule


def _run(controller: AdaptiveWarmup, curvature_at, steps: int) -> tuple[list[float], list]:
    """Rates of updates 1..steps and the states, feeding `curvature_at(t)` where measured."""
    state, rates, states = controller.init(), [], []
    for t in range(1, steps + 1):
        c = curvature_at(t) if controller.measures_at(state, t) else None
        state = controller.update(state, t, c)
        rates.append(state.rate)
        states.append(state)
    return rates, states


CONTROL = ("growth", "every")


def _gd(safety: float = 0.5, **fields) -> AdaptiveWarmup:
    """A GD controller; `fields` are schedule hyperparameters and `growth`, `every`."""
    control = {k: fields.pop(k) for k in CONTROL if k in fields}
    return AdaptiveWarmup(Schedule(**fields), SGD().largest_stable_rate, safety=safety, **control)


# --------------------------------------------------------------- a 1-D quadratic


def test_on_a_quadratic_the_rate_stops_at_the_safe_fraction_of_2_over_lambda():
    lam, safety = 8.0, 0.5
    # Target above the stability limit 2/lam = 0.25: only the floor could ever reach it.
    controller = _gd(safety, eta_trgt=1.0, warmup_steps=10_000, growth=0.1, every=1)
    rates, states = _run(controller, lambda t: lam, 200)
    assert max(rates) <= safety * 2 / lam * (1 + 1e-12)
    assert rates[-1] == pytest.approx(safety * 2 / lam)
    assert states[-1].end_step is None  # never safe: still warming up


def test_the_first_rate_is_the_safe_rate_at_initialization():
    controller = _gd(0.25, eta_trgt=1.0, warmup_steps=1000)
    rates, _ = _run(controller, lambda t: 5.0, 1)
    assert rates[0] == pytest.approx(0.25 * 2 / 5.0)


def test_a_safe_target_ends_warmup_at_the_first_update():
    controller = _gd(eta_trgt=0.01, warmup_steps=100)
    rates, states = _run(controller, lambda t: 1.0, 5)
    assert rates == [0.01] * 5
    assert states[0].end_step == 1


def test_the_growth_per_update_is_capped():
    growth = 0.05
    # The curvature collapses from 100 to 1 at update 3: the safe rate jumps 100x.
    controller = _gd(eta_trgt=0.9, warmup_steps=10_000, growth=growth, every=1)
    rates, states = _run(controller, lambda t: 100.0 if t < 3 else 1.0, 200)
    ratios = np.array(rates[1:]) / np.array(rates[:-1])
    assert ratios.max() <= 1 + growth + 1e-12
    # From 0.01 at the cap, 0.9 takes ceil(log(90) / log(1.05)) = 93 updates after update 2.
    end = states[-1].end_step
    assert end == 2 + math.ceil(math.log(0.9 / 0.01) / math.log(1 + growth))


def test_warmup_ends_exactly_when_the_rate_reaches_the_target_then_measures_nothing():
    controller = _gd(eta_trgt=0.5, warmup_steps=10_000, growth=0.2, every=1)
    rates, states = _run(controller, lambda t: 10.0 if t < 3 else 1.0, 60)
    end = states[-1].end_step
    assert end == 2 + math.ceil(math.log(0.5 / 0.1) / math.log(1.2))  # from 0.1, x1.2 per update
    assert rates[end - 1] == 0.5 and rates[end - 2] < 0.5  # update `end` is the first at eta_trgt
    assert all(s.end_step is None for s in states[: end - 1])
    assert rates[end - 1 :] == [0.5] * (60 - end + 1)
    assert not any(controller.measures_at(states[-1], t) for t in range(end + 1, 80))


def test_the_rate_comes_down_when_the_curvature_rises():
    controller = _gd(eta_trgt=1.0, warmup_steps=10_000, every=1)
    rates, _ = _run(controller, lambda t: 1.0 + t, 30)  # progressive sharpening
    assert rates == pytest.approx([0.5 * 2 / (1.0 + t) for t in range(1, 31)])


def test_between_measurements_the_last_one_holds():
    controller = _gd(eta_trgt=1.0, warmup_steps=10_000, every=5, growth=10.0)
    seen = []
    rates, _ = _run(controller, lambda t: seen.append(t) or 40.0 / t, 12)
    assert seen == [1, 6, 11]
    assert rates[:5] == pytest.approx([0.5 * 2 / 40.0] * 5)
    assert rates[5:10] == pytest.approx([0.5 * 2 / (40.0 / 6)] * 5)  # the t = 6 measurement


def test_warmup_never_runs_slower_than_linear_over_warmup_steps():
    # An unsafe target: the controller alone would hold 0.1; the linear floor lifts it.
    controller = _gd(eta_trgt=1.0, warmup_steps=20, eta_init=0.0, every=1)
    rates, states = _run(controller, lambda t: 10.0, 25)
    linear = [min(1.0, t / 20) for t in range(1, 26)]
    assert rates == pytest.approx([max(0.1, rate) for rate in linear])
    assert states[-1].end_step == 20


def test_eta_init_is_the_lowest_first_rate():
    controller = _gd(eta_trgt=1.0, warmup_steps=100, eta_init=0.3)
    rates, _ = _run(controller, lambda t: 1000.0, 1)
    assert rates[0] == pytest.approx(0.3 + 0.7 / 100)  # the linear warmup's first rate


def test_eta_init_at_or_above_the_target_means_no_warmup():
    controller = _gd(eta_trgt=1.0, warmup_steps=100, eta_init=1.5)
    rates, states = _run(controller, lambda t: 1000.0, 3)
    assert rates == [1.0] * 3 and states[0].end_step == 1


def test_the_decay_runs_from_the_update_that_ended_warmup():
    controller = _gd(eta_trgt=0.5, warmup_steps=10_000, decay="cosine", num_steps=100, every=1)
    rates, states = _run(controller, lambda t: 0.01, 100)
    end = states[0].end_step
    assert end == 1
    expected = [0.5 * (1 + math.cos(math.pi * (t - end) / (100 - end))) / 2 for t in range(2, 101)]
    assert rates[1:] == pytest.approx(expected)


# --------------------------------------------------------------- a 2-D problem that flattens


def _loss(theta):
    x, y = theta
    return 0.5 * (1 + y * y) * x * x + 0.5 * y * y


def _grad(theta):
    x, y = theta
    return np.array([(1 + y * y) * x, y * x * x + y])


def _sharpness(theta) -> float:
    """Top eigenvalue of the Hessian, in closed form for 2x2."""
    x, y = theta
    a, b, d = 1 + y * y, 2 * x * y, 1 + x * x
    return (a + d) / 2 + math.sqrt(((a - d) / 2) ** 2 + b * b)


def _train(rate_of, steps: int = 150):
    """GD from (1, 3), where the sharpness is 13.2 and falls to 1 at the minimum."""
    theta, history = np.array([1.0, 3.0]), []
    for t in range(1, steps + 1):
        eta = rate_of(t, theta)
        history.append((eta, _sharpness(theta)))
        theta = theta - eta * _grad(theta)
        if not np.isfinite(theta).all() or _loss(theta) > 1e6:
            return "diverged", history
    return _loss(theta), history


def test_a_target_that_diverges_without_warmup_trains_with_adaptive_warmup():
    eta_trgt = 0.9  # below 2 / 1 at the minimum, far above 2 / 13.2 at the start
    assert _train(lambda t, theta: eta_trgt)[0] == "diverged"

    safety = 0.5
    controller = _gd(safety, eta_trgt=eta_trgt, warmup_steps=10_000, every=1)
    box = {"state": controller.init()}

    def adaptive(t, theta):
        c = _sharpness(theta) if controller.measures_at(box["state"], t) else None
        box["state"] = controller.update(box["state"], t, c)
        return box["state"].rate

    final, history = _train(adaptive)
    assert final != "diverged" and final < 1e-8
    end = box["state"].end_step
    assert end is not None and history[end - 1][0] == eta_trgt
    # Throughout warmup, eta_t * lambda(theta_{t-1}) <= safety * 2 (the GD threshold).
    assert all(eta * lam <= safety * 2 * (1 + 1e-12) for eta, lam in history[: end - 1])


def test_adam_uses_its_own_threshold_constant():
    beta1, safety = 0.9, 0.5
    adam = AdaptiveWarmup(
        Schedule(eta_trgt=1.0, warmup_steps=1000),
        Adam(beta1=beta1).largest_stable_rate,
        safety=safety,
    )
    rates, _ = _run(adam, lambda t: 1e4, 1)
    assert rates[0] == pytest.approx(safety * (2 + 2 * beta1) / ((1 - beta1) * 1e4))


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        (dict(safety=0.0), "adaptive_safety"),
        (dict(safety=1.5), "adaptive_safety"),
        (dict(growth=0.0), "adaptive_growth"),
        (dict(every=0), "adaptive_every"),
        (dict(warmup_steps=0), "warmup_steps"),
        (dict(eta_init=-1.0), "eta_init"),
        (dict(decay="cosine"), "num_steps"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        _gd(**{"eta_trgt": 1.0, **fields})
