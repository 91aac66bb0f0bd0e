"""Stability thresholds, the catapult eta_c search, and regime detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from warmup_core.curvature import sharpness
from warmup_core.hvp import model_loss_fn
from warmup_core.optim import build_optimizer
from warmup_core.stability import (
    CatapultEvent,
    adam_threshold,
    catapult_search,
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


def test_nesterov_and_weight_decay_thresholds_have_closed_forms():
    # Torch-style Nesterov: (2 + 2 mu) / ((1 + 2 mu) eta) = 3.8 / 2.8 / eta at mu = 0.9.
    assert sgd_threshold(1.0, momentum=0.9, nesterov=True) == pytest.approx(1.357142857)
    assert sgd_threshold(0.1, weight_decay=0.5) == pytest.approx(19.5)


def _quadratic_run(
    optimizer, curvature: float, eta: float, steps: int, x0: float, idle: int = 0
) -> tuple[float, float]:
    """Largest and last |x| over `steps` updates of `optimizer` on curvature / 2 * x^2,
    after `idle` updates with zero gradient (they let Adam's bias correction settle)."""
    x = torch.tensor([x0], dtype=torch.float64)
    for _ in range(idle):
        optimizer.step({"x": x}, {"x": torch.zeros_like(x)}, eta)
    sizes = []
    for _ in range(steps):
        optimizer.step({"x": x}, {"x": curvature * x}, eta)
        sizes.append(float(x.abs()))
    return max(sizes), sizes[-1]


SGD_VARIANTS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.5, "nesterov": True},
    {"momentum": 0.9, "nesterov": True},
    {"weight_decay": 0.3},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.3},
]


@pytest.mark.parametrize("hyper", SGD_VARIANTS, ids=lambda h: ",".join(h) or "plain")
def test_sgd_threshold_is_where_a_quadratic_starts_to_diverge(hyper):
    eta = 0.1
    limit = build_optimizer("sgd", **hyper).stability_threshold(eta)
    # Just below the threshold the iterate shrinks, just above it blows up.
    _, below = _quadratic_run(build_optimizer("sgd", **hyper), 0.97 * limit, eta, 2000, 1.0)
    above, _ = _quadratic_run(build_optimizer("sgd", **hyper), 1.03 * limit, eta, 2000, 1.0)
    assert below < 1e-3
    assert above > 1e3


@pytest.mark.parametrize("beta1", [0.0, 0.5, 0.9])
def test_adam_threshold_is_where_a_quadratic_starts_to_diverge(beta1):
    # With |g| << eps, and once beta1^t has decayed (idle steps with zero gradient), the
    # pre-conditioner is P = eps: the pre-conditioned sharpness is curvature / eps.
    eps, eta, x0 = 1.0, 0.01, 1e-12
    limit = build_optimizer("adam", beta1=beta1, eps=eps).stability_threshold(eta) * eps
    runs = {
        factor: _quadratic_run(
            build_optimizer("adam", beta1=beta1, eps=eps), factor * limit, eta, 3000, x0, 300
        )
        for factor in (0.97, 1.03)
    }
    assert runs[0.97][1] < 1e-3 * x0  # shrinks below the threshold
    assert runs[1.03][0] > 1e3 * x0  # grows above it (until |g| ~ eps tames it)


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        # beta2 = 0.3: rho_inf = 2 / 0.7 - 1 < 5, never rectified: SGD on the bias-corrected
        # momentum, P = 1 - beta1^t -> 1 once beta1^t has decayed.
        ("radam", {"beta2": 0.3}),
        # beta2 = 0.9: rectified from update 6; with |g| << eps and beta2^t decayed,
        # P = (1 - beta1^t)(sqrt(v_t) + eps) / (r_t sqrt(1 - beta2^t)) -> eps.
        ("radam", {"beta2": 0.9}),
        ("random-v0-adam", {"v0_seed": 1}),
    ],
)
def test_adam_family_threshold_with_a_frozen_preconditioner(name, hyper):
    # The pre-conditioner the update applies (the optimizer's own `peek_preconditioner`)
    # is frozen over the run; the quadratic's pre-conditioned sharpness is curvature / P.
    eps, eta, x0, idle = 1.0, 0.01, 1e-12, 300
    runs, frozen = {}, []
    for factor in (0.97, 1.03):
        opt = build_optimizer(name, eps=eps, **hyper)
        x = torch.tensor([x0], dtype=torch.float64)
        for _ in range(idle):
            opt.step({"x": x}, {"x": torch.zeros_like(x)}, eta)
        p_start = float(opt.peek_preconditioner({"x": x}, {"x": torch.zeros_like(x)})["x"])
        curvature = factor * opt.stability_threshold(eta) * p_start
        sizes = [x0]
        for _ in range(3000):
            g = curvature * x
            if max(sizes) < 1e-10:  # P is checked until |g| nears eps (then v grows)
                p_now = float(opt.peek_preconditioner({"x": x}, {"x": g})["x"])
            opt.step({"x": x}, {"x": g}, eta)
            sizes.append(float(x.abs()))
        frozen.append(p_now / p_start)
        runs[factor] = max(sizes), sizes[-1]
    assert frozen == pytest.approx([1.0, 1.0], rel=1e-6)
    assert runs[0.97][1] < 1e-3 * x0  # shrinks below the threshold
    assert runs[1.03][0] > 1e3 * x0  # grows above it (until |g| ~ eps tames it)


# -- optimizer steps ------------------------------------------------------------------


def test_step_fn_replays_the_configured_optimizer_from_empty_state():
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([w], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    step, state, params = build_optimizer("adam").step_fn(), None, {"w": w.detach().clone()}
    for t in range(3):
        g = torch.tensor([0.3, -1.0, 0.2], dtype=torch.float64) * (t + 1)
        w.grad = g.clone()
        ref.step()
        params, state = step(params, {"w": g}, 0.05, state)
    torch.testing.assert_close(params["w"], w.detach())


def test_step_fn_applies_learning_rate_multipliers():
    params = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
    grads = {"w": torch.tensor([0.5, -4.0], dtype=torch.float64)}
    step = build_optimizer("adam", {"w": 0.25}, eps=0.0).step_fn()
    new, _ = step(params, grads, 0.1, None)  # Adam's first step: eta * m * sign(g)
    torch.testing.assert_close(new["w"], params["w"] - 0.1 * 0.25 * torch.sign(grads["w"]))
    new_gd, state = gd_step(params, grads, 0.1, None)
    torch.testing.assert_close(new_gd["w"], params["w"] - 0.1 * grads["w"])
    assert state is None


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
def test_eta_c_on_a_quadratic_is_the_one_step_crossing(top):
    loss_fn, params, a = quadratic(top)
    g = a @ params["x"]
    # One GD step raises 0.5 x^T A x  <=>  eta > 2 g.g / (g.A.g).
    expected = float(2 * (g @ g) / (g @ a @ g))
    info = catapult_search(loss_fn, params)
    assert expected <= info.eta_c <= expected * 1.01  # bracketed to eta_rtol = 1%
    assert info.tolerance_met and info.bracket[0] <= expected
    assert info.eta_c == pytest.approx(2.0 / top, rel=0.1)  # x lies mostly along the top


def test_eta_c_info_brackets_the_loss_rise_and_counts_evaluations():
    loss_fn, params, _ = quadratic()
    info = catapult_search(loss_fn, params, eta_rtol=1e-3)
    lo, hi = info.bracket
    ratios = dict(info.history)
    assert lo < hi == info.eta_c and hi / lo - 1 <= 1e-3
    assert ratios[hi] > 1.0
    assert lo not in ratios or ratios[lo] <= 1.0
    assert info.num_grad_evals == 1  # one-step probes reuse the initial gradient
    assert info.num_loss_evals == len(info.history) <= 25
    assert info.initial_loss == pytest.approx(float(loss_fn(params)))


def test_eta_c_check_flags_a_one_step_estimate_above_the_divergence_boundary():
    # Curvatures 100 and 1, start almost orthogonal to the top direction: one step
    # only sees the flat direction (eta_c ~ 2), but GD diverges above 2/100.
    a = torch.diag(torch.tensor([100.0, 1.0], dtype=torch.float64))
    params = {"x": torch.tensor([1e-4, 1.0], dtype=torch.float64)}
    g = a @ params["x"]
    info = catapult_search(lambda p: 0.5 * p["x"] @ a @ p["x"], params, check_steps=10)
    assert info.eta_c == pytest.approx(float(2 * (g @ g) / (g @ a @ g)), rel=0.01)
    assert info.eta_c > 50 * 2 / 100
    assert info.overshoots and info.check_ratio > 1e6
    # Along the top direction the estimate is the boundary, and the check passes.
    loss_fn, top_params, _ = quadratic()
    ok = catapult_search(loss_fn, top_params, check_steps=10)
    assert ok.overshoots is False and ok.check_ratio < 2.0


def test_eta_c_search_from_above_halves_down_to_the_same_answer():
    loss_fn, params, _ = quadratic()
    from_below = critical_learning_rate(loss_fn, params, eta_start=1e-3)
    from_above = critical_learning_rate(loss_fn, params, eta_start=50.0)
    assert from_above == pytest.approx(from_below, rel=0.01)


def test_eta_c_with_more_steps_uses_fresh_gradients_and_stays_near_threshold():
    loss_fn, params, _ = quadratic()
    info = catapult_search(loss_fn, params, num_steps=3)
    assert info.eta_c == pytest.approx(0.2, rel=0.1)
    assert info.num_grad_evals == 1 + 2 * info.num_loss_evals


def test_eta_c_for_adam_matches_the_sign_step_boundary():
    loss_fn, params, a = quadratic()
    g = a @ params["x"]
    s = torch.sign(g)
    # L(x - eta s) > L(x)  <=>  eta > 2 |g|_1 / (s^T A s): Adam's first step is eta * sign(g).
    expected = float(2 * g.abs().sum() / (s @ a @ s))
    adam = build_optimizer("adam", eps=0.0).step_fn()
    eta_adam = critical_learning_rate(loss_fn, params, optimizer=adam)
    assert expected <= eta_adam <= expected * 1.01
    gi_adam = build_optimizer("gi-adam", beta2=0.999, eps=0.0).step_fn()
    eta_gi = critical_learning_rate(loss_fn, params, optimizer=gi_adam)
    # GI-Adam's first step is sqrt(1 - beta2) times Adam's.
    assert eta_gi == pytest.approx(expected / math.sqrt(1 - 0.999), rel=0.01)


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
    info = catapult_search(loss_fn, params)
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
        ("check_limit", -0.1),
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
