import math

import pytest
import torch

from warmup_core.optim import SGD, Adam, RAdam, build_optimizer


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(5, 3, generator=gen), "b": torch.randn(5, generator=gen)}
    x = torch.randn(16, 3, generator=gen)
    return params, x


def _loss(params, x):
    return ((x.to(params["w"].dtype) @ params["w"].T + params["b"]).tanh() ** 2).mean()


def _grads(params, x):
    leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
    return dict(
        zip(leaves, torch.autograd.grad(_loss(leaves, x), list(leaves.values())), strict=True)
    )


@pytest.mark.parametrize(
    "name, ours, theirs",
    [
        ("sgd", {}, lambda p: torch.optim.SGD(p, lr=0.1)),
        ("sgd", {"momentum": 0.9}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        (
            "sgd",
            {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        ),
        ("adam", {}, lambda p: torch.optim.Adam(p, lr=0.1)),
        (
            "adam",
            {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
            lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.8, 0.99), eps=1e-6),
        ),
        ("adamw", {"weight_decay": 0.1}, lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.1)),
        ("radam", {}, lambda p: torch.optim.RAdam(p, lr=0.1)),
        (
            "radam",
            {"beta2": 0.99, "weight_decay": 0.1},
            lambda p: torch.optim.RAdam(p, lr=0.1, betas=(0.9, 0.99), weight_decay=0.1),
        ),
    ],
)
def test_matches_torch_optim_step_for_step(name, ours, theirs):
    params, x = _problem()
    ref = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    ref_opt = theirs(list(ref.values()))
    opt = build_optimizer(name, **ours)
    for step in range(1, 21):
        lr = 0.1 * min(1.0, step / 5)  # a warmup: the rate changes every step
        for group in ref_opt.param_groups:
            group["lr"] = lr
        ref_opt.zero_grad()
        _loss(ref, x).backward()
        ref_opt.step()
        opt.step(params, _grads(params, x), lr)
        for k in params:
            assert torch.allclose(params[k], ref[k].detach(), atol=1e-6, rtol=0), (step, k)


def test_gi_adam_starts_with_squared_first_gradient():
    params, x = _problem()
    g0 = _grads(params, x)
    opt = build_optimizer("gi-adam")
    opt.step(params, g0, 1e-3)
    # v_1 = beta2 * g0^2 + (1 - beta2) * g0^2 = g0^2
    for k in params:
        assert torch.allclose(opt.state[k]["v"], g0[k] ** 2)


def test_gi_adam_acts_as_a_builtin_warmup_on_a_constant_gradient():
    p = {"w": torch.zeros(3)}
    g = {"w": torch.tensor([1.0, -2.0, 0.5])}
    adam, gi = Adam(eps=0.0), Adam(eps=0.0, gi=True)
    gi_p = {"w": torch.zeros(3)}
    for t in range(1, 6):
        before_a, before_g = p["w"].clone(), gi_p["w"].clone()
        adam.step(p, g, 1.0)
        gi.step(gi_p, g, 1.0)
        step_a = (p["w"] - before_a).abs()
        step_g = (gi_p["w"] - before_g).abs()
        # Adam moves by eta per coordinate; GI-Adam by eta * sqrt(1 - beta2^t).
        assert torch.allclose(step_a, torch.ones(3), atol=1e-6)
        assert torch.allclose(step_g, torch.full((3,), (1 - 0.999**t) ** 0.5), atol=1e-6)


@pytest.mark.parametrize(("name", "steps"), [("adam", 3), ("radam", 3), ("radam", 8)])
def test_preconditioner_reproduces_the_update_with_its_multiplier(name, steps):
    params, x = _problem()
    params = {k: v.double() for k, v in params.items()}
    opt = build_optimizer(name, {"w": 0.5})  # theta -= lr * (P / m)^-1 m_t
    for _ in range(steps):
        before = {k: v.clone() for k, v in params.items()}
        opt.step(params, _grads(params, x), 0.01)
    P = opt.preconditioner()
    for k in params:
        torch.testing.assert_close(before[k] - params[k], 0.01 * opt.state[k]["m"] / P[k])


def test_radam_steps_by_hand_against_torch_optim_radam():
    # A constant gradient g: m_t = (1 - b1^t) g and v_t = (1 - b2^t) g^2, so m_hat = g.
    # rho_t = rho_inf - 2 t b2^t / (1 - b2^t) with rho_inf = 2 / (1 - b2) - 1 = 1999 stays
    # <= 5 for t <= 5: those updates are -lr * g. At t = 6, rho = 5.9942 and the update is
    # -lr * r_6 * sqrt(1 - b2^6) / (sqrt(v_6) + eps) * g = -lr * r_6 * g / (|g| + eps').
    b2, lr, eps = 0.999, 0.01, 1e-8
    g = torch.tensor([0.3, -2.0, 1e-3], dtype=torch.float64)
    rho_inf = 2 / (1 - b2) - 1
    rho6 = rho_inf - 2 * 6 * b2**6 / (1 - b2**6)
    r6 = ((rho6 - 4) * (rho6 - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho6)) ** 0.5
    assert rho6 == pytest.approx(5.9942, abs=1e-4) and r6 == pytest.approx(0.0258, abs=1e-4)
    by_hand = -5 * lr * g - lr * r6 * g / (g.abs() + eps / (1 - b2**6) ** 0.5)

    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.RAdam([w], lr=lr)
    ours, opt = {"w": torch.zeros(3, dtype=torch.float64)}, build_optimizer("radam")
    for t in range(1, 7):
        w.grad = g.clone()
        ref.step()
        opt.step(ours, {"w": g}, lr)
        assert (opt.rectification(t) is None) == (t <= 5)
    torch.testing.assert_close(w.detach(), by_hand, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours["w"], by_hand, rtol=1e-12, atol=0)


def test_radam_without_rectification_is_sgd_on_the_bias_corrected_momentum():
    # beta2 = 0.3: rho_inf = 2 / 0.7 - 1 < 5, so the variance never becomes tractable.
    opt, p = RAdam(beta1=0.5, beta2=0.3), {"w": torch.zeros(2, dtype=torch.float64)}
    grads = [torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5]), torch.tensor([-1.0, 1.0])]
    m, expected = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        m = 0.5 * m + 0.5 * g.double()
        expected -= 0.1 * m / (1 - 0.5**t)
        opt.step(p, {"w": g.double()}, 0.1)
    torch.testing.assert_close(p["w"], expected, rtol=1e-14, atol=0)
    assert opt.preconditioner()["w"].tolist() == pytest.approx([1 - 0.5**3] * 2)


def _initial_v(opt, params, grads):
    """v_0 read back from the state after one step: v_1 = b2 v_0 + (1 - b2) g^2."""
    opt.step({k: v.clone() for k, v in params.items()}, grads, 1e-3)
    return {
        k: (st["v"] - (1 - opt.beta2) * grads[k] ** 2) / opt.beta2 for k, st in opt.state.items()
    }


def test_random_v0_adam_starts_at_the_first_gradients_norm_in_random_directions():
    params, x = _problem()
    params = {k: v.double() for k, v in params.items()}
    g0 = _grads(params, x)
    v0 = _initial_v(build_optimizer("random-v0-adam", v0_seed=7), params, g0)
    # sum v_0 = ||r||^2 = ||g_0||^2 over all parameters together
    total = sum(float(v.sum()) for v in v0.values())
    assert total == pytest.approx(sum(float((g**2).sum()) for g in g0.values()), rel=1e-10)
    assert all((v >= 0).all() for v in v0.values())
    assert not torch.allclose(v0["w"], g0["w"] ** 2, rtol=0.1)  # not GI-Adam's directions
    again = _initial_v(build_optimizer("random-v0-adam", v0_seed=7), params, g0)
    other = _initial_v(build_optimizer("random-v0-adam", v0_seed=8), params, g0)
    assert all(torch.equal(v0[k], again[k]) for k in v0)
    assert not torch.allclose(v0["w"], other["w"])


def test_random_v0_adam_packed_members_each_scale_to_their_own_gradient():
    params, x = _problem()
    singles = [{k: v.double() * scale for k, v in params.items()} for scale in (1.0, 3.0)]
    grads = [_grads(p, x) for p in singles]
    stacked = {k: torch.stack([p[k] for p in singles]) for k in params}
    stacked_grads = {k: torch.stack([g[k] for g in grads]) for k in params}
    opt = build_optimizer("random-v0-adam", v0_seed=2)
    opt.step(stacked, stacked_grads, torch.tensor([1e-3, 1e-3], dtype=torch.float64))
    for i, (p, g) in enumerate(zip(singles, grads, strict=True)):
        alone = build_optimizer("random-v0-adam", v0_seed=2)
        alone.step({k: v.clone() for k, v in p.items()}, g, 1e-3)
        for k in params:
            torch.testing.assert_close(opt.state[k]["v"][i], alone.state[k]["v"])


@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("adam", {}),
        ("gi-adam", {}),
        ("adam", {"weight_decay": 0.3}),
        ("random-v0-adam", {"v0_seed": 3}),
        ("radam", {}),  # updates 1-5 un-rectified, 6-9 rectified
        ("radam", {"weight_decay": 0.3}),
    ],
)
def test_peeked_preconditioner_is_the_one_the_next_step_uses(name, hyper):
    params, x = _problem()
    opt = build_optimizer(name, {"w": 0.25}, **hyper)
    for _ in range(9):
        grads = _grads(params, x)
        predicted = opt.peek_preconditioner(params, grads)
        opt.step(params, grads, 1e-2)
        for k, v in opt.preconditioner().items():
            assert torch.allclose(predicted[k], v, rtol=1e-5)


def test_gi_adam_first_preconditioner_is_larger_by_inverse_root_one_minus_beta2():
    params, x = _problem()
    grads = _grads(params, x)
    ratio = (
        build_optimizer("gi-adam", eps=0.0).peek_preconditioner(params, grads)["w"]
        / (build_optimizer("adam", eps=0.0).peek_preconditioner(params, grads)["w"])
    )
    assert torch.allclose(ratio, torch.full_like(ratio, (1 / (1 - 0.999)) ** 0.5), rtol=1e-4)


def test_per_layer_lr_multipliers_scale_each_update():
    params = {"a": torch.zeros(2), "b": torch.zeros(2)}
    grads = {"a": torch.ones(2), "b": torch.ones(2)}
    build_optimizer("sgd", lr_multipliers={"a": 0.5}).step(params, grads, 1.0)
    assert params["a"].tolist() == [-0.5, -0.5]
    assert params["b"].tolist() == [-1.0, -1.0]


def test_tensor_lr_updates_each_packed_member_with_its_own_rate():
    params = {"w": torch.zeros(3, 4, 2)}  # 3 members
    grads = {"w": torch.ones(3, 4, 2)}
    build_optimizer("sgd").step(params, grads, torch.tensor([0.1, 0.2, 0.0]))
    assert torch.allclose(params["w"][:, 0, 0], torch.tensor([-0.1, -0.2, 0.0]))


@pytest.mark.parametrize(
    "name, kwargs, field",
    [
        ("lion", {}, "optimizer.name"),
        ("sgd", {"momentum": 1.5}, "optimizer.momentum"),
        ("sgd", {"nesterov": True}, "optimizer.nesterov"),
        ("adam", {"beta1": 1.0}, "optimizer.beta1"),
        ("adam", {"eps": -1e-8}, "optimizer.eps"),
        ("adam", {"momentum": 0.9}, "optimizer"),
    ],
)
def test_bad_optimizer_options_name_the_field(name, kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_optimizer(name, **kwargs)


@pytest.mark.parametrize(
    ("optimizer", "closed_form"),
    [
        (SGD(), lambda c: 2 / c),
        (SGD(momentum=0.9), lambda c: (2 + 2 * 0.9) / c),
        (SGD(momentum=0.9, nesterov=True), lambda c: (2 + 2 * 0.9) / ((1 + 2 * 0.9) * c)),
        (SGD(weight_decay=0.5), lambda c: 2 / (c + 0.5)),
        (Adam(beta1=0.9), lambda c: (2 + 2 * 0.9) / ((1 - 0.9) * c)),
        (Adam(beta1=0.5, weight_decay=0.5, decoupled=True), lambda c: (2 + 2 * 0.5) / (0.5 * c)),
    ],
    ids=["gd", "heavy-ball", "nesterov", "sgd-l2", "adam", "adamw"],
)
@pytest.mark.parametrize("curvature", [0.1, 3.0, 250.0])
def test_largest_stable_rate_is_the_closed_form_inverse_of_the_threshold(
    optimizer, closed_form, curvature
):
    rate = optimizer.largest_stable_rate(curvature)
    assert rate == pytest.approx(closed_form(curvature), rel=1e-12)
    assert optimizer.stability_threshold(rate) == pytest.approx(curvature, rel=1e-12)


def test_no_rate_is_unstable_at_non_positive_curvature():
    assert SGD().largest_stable_rate(0.0) == math.inf
    assert SGD(weight_decay=0.1).largest_stable_rate(-0.5) == math.inf
