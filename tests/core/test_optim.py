import math

import pytest
import torch

from warmup_core.optim import SGD, Adam, build_optimizer


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(5, 3, generator=gen), "b": torch.randn(5, generator=gen)}
    x = torch.randn(16, 3, generator=gen)
    return params, x


def _loss(params, x):
    return ((x @ params["w"].T + params["b"]).tanh() ** 2).mean()


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


def test_preconditioner_reproduces_the_update_with_its_multiplier():
    params, x = _problem()
    opt = build_optimizer("adam", {"w": 0.5})  # theta -= lr * (P / m)^-1 m_t
    for _ in range(3):
        before = {k: v.clone() for k, v in params.items()}
        opt.step(params, _grads(params, x), 0.01)
    P = opt.preconditioner()
    for k in params:
        assert torch.allclose(before[k] - params[k], 0.01 * opt.state[k]["m"] / P[k], atol=1e-7)


@pytest.mark.parametrize(
    ("name", "hyper"), [("adam", {}), ("gi-adam", {}), ("adam", {"weight_decay": 0.3})]
)
def test_peeked_preconditioner_is_the_one_the_next_step_uses(name, hyper):
    params, x = _problem()
    opt = build_optimizer(name, {"w": 0.25}, **hyper)
    for _ in range(3):
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
