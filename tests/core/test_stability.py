"""Stability thresholds, the catapult eta_c search, and regime detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from warmup_core.curvature import model_loss_fn, sharpness
from warmup_core.stability import (
    CatapultEvent,
    adam_first_step,
    adam_step,
    adam_threshold,
    classify_regime,
    critical_learning_rate,
    detect_catapults,
    gd_step,
    sgd_threshold,
    warmup_end_ratio,
)

# -- thresholds -----------------------------------------------------------------------


def test_thresholds_have_the_papers_values():
    assert sgd_threshold(0.1) == pytest.approx(20.0)
    assert sgd_threshold(0.1, momentum=0.9) == pytest.approx(38.0)
    assert adam_threshold(0.1) == pytest.approx(380.0)  # 38 / eta
    assert adam_threshold(1.0, beta1=0.0) == pytest.approx(2.0)  # RMSProp-like: 2 / eta


def test_thresholds_accept_arrays_and_tensors_and_zero_lr():
    np.testing.assert_allclose(sgd_threshold(np.array([1.0, 0.5])), [2.0, 4.0])
    assert sgd_threshold(np.array([0.0]))[0] == math.inf
    assert sgd_threshold(0.0) == math.inf
    torch.testing.assert_close(
        adam_threshold(torch.tensor([0.1, 0.2])), torch.tensor([380.0, 190.0])
    )


# -- optimizer steps ------------------------------------------------------------------


def test_adam_first_step_is_normalized_gradient_and_gi_adam_scales_it():
    params = {"w": torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)}
    grads = {"w": torch.tensor([0.5, -4.0, 1e-3], dtype=torch.float64)}
    new, _ = adam_step(eps=0.0)(params, grads, 0.1, None)
    torch.testing.assert_close(new["w"], params["w"] - 0.1 * torch.sign(grads["w"]))
    new_gi, _ = adam_first_step(beta2=0.99, eps=0.0, gi=True)(params, grads, 0.1, None)
    torch.testing.assert_close(new_gi["w"], params["w"] - 0.1 * 0.1 * torch.sign(grads["w"]))
    new_gd, state = gd_step(params, grads, 0.1, None)
    torch.testing.assert_close(new_gd["w"], params["w"] - 0.1 * grads["w"])
    assert state is None


def test_adam_step_matches_torch_adam_over_several_steps():
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([w], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    step, state, params = adam_step(), None, {"w": w.detach().clone()}
    for t in range(3):
        g = torch.tensor([0.3, -1.0, 0.2], dtype=torch.float64) * (t + 1)
        w.grad = g.clone()
        ref.step()
        params, state = step(params, {"w": g}, 0.05, state)
    torch.testing.assert_close(params["w"], w.detach())


# -- eta_c ----------------------------------------------------------------------------


def quadratic(top: float = 10.0, dim: int = 50, seed: int = 0):
    """0.5 x^T A x with eigenvalue `top` and the rest in [0, 1); x mostly along the top."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=gen))
    spectrum = torch.cat(
        [torch.tensor([top], dtype=torch.float64), torch.rand(dim - 1, generator=gen).double()]
    )
    a = q @ torch.diag(spectrum) @ q.T
    x0 = 3.0 * q[:, 0] + 0.1 * torch.randn(dim, dtype=torch.float64, generator=gen)
    return (lambda p: 0.5 * p["x"] @ a @ p["x"]), {"x": x0}, a


@pytest.mark.parametrize("top", [0.5, 10.0, 4000.0])
def test_eta_c_on_a_quadratic_is_near_two_over_lambda_max(top):
    loss_fn, params, _ = quadratic(top)
    eta_c = critical_learning_rate(loss_fn, params)
    assert eta_c == pytest.approx(2.0 / top, rel=0.1)


def test_eta_c_info_brackets_the_loss_rise_and_counts_evaluations():
    loss_fn, params, _ = quadratic()
    info = critical_learning_rate(loss_fn, params, return_info=True)
    lo, hi = info.bracket
    ratios = dict(info.history)
    assert lo < hi == info.eta_c
    assert ratios[hi] > 1.0 and ratios[hi] <= 1.1  # rose, by at most delta
    assert lo not in ratios or ratios[lo] <= 1.0
    assert info.num_grad_evals == 1  # one-step probes reuse the initial gradient
    assert info.num_loss_evals == len(info.history) <= 20
    assert info.initial_loss == pytest.approx(float(loss_fn(params)))


def test_eta_c_search_from_above_halves_down_to_the_same_answer():
    loss_fn, params, _ = quadratic()
    from_below = critical_learning_rate(loss_fn, params, eta_start=1e-3)
    from_above = critical_learning_rate(loss_fn, params, eta_start=50.0)
    assert from_above == pytest.approx(from_below, rel=0.06)


def test_eta_c_with_more_steps_uses_fresh_gradients_and_stays_near_threshold():
    loss_fn, params, _ = quadratic()
    info = critical_learning_rate(loss_fn, params, num_steps=3, return_info=True)
    assert info.eta_c == pytest.approx(0.2, rel=0.1)
    assert info.num_grad_evals == 1 + 2 * info.num_loss_evals


def test_eta_c_for_adam_matches_the_sign_step_boundary():
    loss_fn, params, a = quadratic()
    g = a @ params["x"]
    s = torch.sign(g)
    # L(x - eta s) > L(x)  <=>  eta > 2 |g|_1 / (s^T A s): Adam's first step is eta * sign(g).
    expected = float(2 * g.abs().sum() / (s @ a @ s))
    eta_adam = critical_learning_rate(loss_fn, params, optimizer=adam_step(eps=0.0), delta=0.01)
    assert eta_adam == pytest.approx(expected, rel=0.05)
    eta_gi = critical_learning_rate(
        loss_fn, params, optimizer=adam_step(beta2=0.999, eps=0.0, gi=True), delta=0.01
    )
    # GI-Adam's first step is sqrt(1 - beta2) times Adam's.
    assert eta_gi == pytest.approx(eta_adam / math.sqrt(1 - 0.999), rel=0.05)


@pytest.mark.parametrize("parameterization", ["sp", "mup"])
def test_eta_c_of_a_small_network_is_a_real_stability_boundary(parameterization, capsys):
    models = pytest.importorskip("warmup_core.models")
    model = models.build_model(
        "fcn", in_shape=(16,), out_dim=4, parameterization=parameterization, width=64, depth=3
    )
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 16, generator=gen), torch.randn(128, 4, generator=gen)
    loss_fn = model_loss_fn(model, lambda o, t: 0.5 * ((o - t) ** 2).sum(-1).mean(), x, y)
    params = {k: v.detach() for k, v in model.named_parameters()}
    info = critical_learning_rate(loss_fn, params, return_info=True)
    assert math.isfinite(info.eta_c) and info.eta_c > 0

    grads = torch.autograd.grad(
        loss_fn(leaves := {k: v.clone().requires_grad_() for k, v in params.items()}),
        list(leaves.values()),
    )
    grads = dict(zip(leaves, grads, strict=True))

    def loss_after(eta: float) -> float:
        return float(loss_fn(gd_step(params, grads, eta)[0]))

    loss0 = float(loss_fn(params))
    assert loss_after(info.eta_c) > loss0  # by construction: eta_c raised the loss
    assert loss_after(0.5 * info.eta_c) < loss0  # and half of it trains
    lam0 = sharpness(loss_fn, params, tol=1e-4)
    with capsys.disabled():
        print(f"\n[{parameterization}] eta_c * lambda_H(0) = {info.eta_c * lam0:.3f}")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("eta_start", 0.0),
        ("delta", -0.1),
        ("num_steps", 0),
        ("max_doublings", 1.5),
        ("eta_rtol", 0),
    ],
)
def test_eta_c_rejects_bad_options_naming_them(option, value):
    loss_fn, params, _ = quadratic()
    with pytest.raises(ValueError, match=option):
        critical_learning_rate(loss_fn, params, **{option: value})


def test_eta_c_rejects_non_scalar_loss_and_reports_a_flat_loss():
    params = {"x": torch.ones(3)}
    with pytest.raises(ValueError, match="loss_fn"):
        critical_learning_rate(lambda p: p["x"] ** 2, params)
    with pytest.raises(RuntimeError, match="max_doublings"):
        # Linear loss along a direction: it falls at every eta and never catapults.
        critical_learning_rate(lambda p: 10.0 - p["x"].sum() * 1e-6, params, max_doublings=5)


# -- regimes --------------------------------------------------------------------------


def test_classify_regime_on_rising_falling_and_flat_trajectories():
    t = np.arange(100.0)
    assert classify_regime(10 + 5 * (1 - np.exp(-t / 10))) == "sharpening"
    assert classify_regime(10 * np.exp(-t / 20) + 2) == "reduction"
    assert classify_regime(10 + 0.1 * np.sin(t)) == "flat"


def test_classify_regime_ignores_nans_and_uses_a_window_in_steps():
    # Measured every 10 steps; sharpening early, collapse much later (outside the window).
    steps = np.arange(0, 1000.0)
    s = np.where(steps % 10 == 0, np.where(steps < 200, 5 + steps / 50, 1.0), np.nan)
    assert classify_regime(s, steps, window=150) == "sharpening"
    assert classify_regime(s, steps, window=900) == "reduction"
    assert classify_regime([np.nan, 3.0]) == "flat"  # too little data to say anything


def test_detect_catapults_finds_a_spike_with_a_sharpness_drop():
    loss = np.array([1.0, 0.9, 0.8, 0.8, 3.0, 6.0, 2.0, 0.7, 0.6, 0.5])
    sharp = np.array([20.0, np.nan, 22.0, 23.0, np.nan, np.nan, np.nan, 9.0, np.nan, 8.0])
    steps = np.arange(10, 20.0)
    (event,) = detect_catapults(loss, sharp, steps=steps)
    assert event == CatapultEvent(
        start_step=14.0,
        peak_step=15.0,
        end_step=17.0,
        loss_ratio=pytest.approx(6.0 / 0.8),
        sharpness_before=23.0,
        sharpness_after=9.0,
    )


def test_detect_catapults_needs_sharpness_to_fall_when_given():
    loss = [1.0, 0.8, 4.0, 0.7, 0.6]
    rising = [10.0, 10.0, np.nan, 12.0, 12.0]
    assert detect_catapults(loss, rising) == []
    assert len(detect_catapults(loss, rising, require_sharpness_drop=False)) == 1
    (event,) = detect_catapults(loss)  # no sharpness: loss alone decides, NaN reported
    assert math.isnan(event.sharpness_before) and math.isnan(event.sharpness_after)


def test_detect_catapults_skips_divergence_and_small_bumps_and_finds_several():
    assert detect_catapults([1.0, 0.8, 5.0, 50.0, np.inf]) == []  # never came back
    assert detect_catapults([1.0, 0.8, 1.1, 0.7]) == []  # below spike_factor * min
    loss = [1.0, 0.5, 2.0, 0.4, np.nan, 0.3, 0.9, 0.25]
    events = detect_catapults(loss)
    assert [e.peak_step for e in events] == [2.0, 6.0]
    assert [e.loss_ratio for e in events] == pytest.approx([4.0, 3.0])


def test_warmup_end_ratio_is_sharpness_over_threshold_at_the_end_of_warmup():
    steps = np.arange(0, 200.0)
    lr = np.minimum(1.0, steps / 100) * 0.2
    sharp = np.where(steps % 25 == 0, 5.0 + steps / 100, np.nan)
    # Last measurement at or before step 110 is step 100: lambda = 6, eta = 0.2.
    assert warmup_end_ratio(sharp, lr, steps, 110) == pytest.approx(6.0 * 0.2 / 2)
    assert warmup_end_ratio(sharp, lr, steps, 110, threshold_fn=adam_threshold) == pytest.approx(
        6.0 * 0.2 / 38
    )
    assert math.isnan(warmup_end_ratio([np.nan] * 3, [0.1] * 3, [0, 1, 2], 1))
