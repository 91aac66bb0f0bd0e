import pytest
import torch
from torch.func import functional_call

from warmup_core.models import MODELS, build_model

CASES = {
    "fcn": dict(in_shape=(3, 8, 8), out_dim=10, width=32, depth=3),
    "myrtle": dict(in_shape=(3, 16, 16), out_dim=10, width=8, depth=5),
    "wrn": dict(in_shape=(3, 16, 16), out_dim=10, depth=10, widen=1, base_channels=4),
    "transformer": dict(in_shape=(16,), out_dim=20, width=32, depth=2, heads=4),
}


def _inputs(name):
    gen = torch.Generator().manual_seed(1)
    if name == "transformer":
        return torch.randint(0, 20, (2, 16), generator=gen)
    return torch.randn(2, *CASES[name]["in_shape"], generator=gen)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("parameterization", ["sp", "ntp", "mup"])
def test_models_run_through_functional_call(name, parameterization):
    model = build_model(name, parameterization=parameterization, **CASES[name])
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _inputs(name)
    out = functional_call(model, params, (x,))
    assert torch.allclose(out, model(x))
    expected = (2, 16, 20) if name == "transformer" else (2, 10)
    assert out.shape == expected
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_init_other_seed_other_init(name):
    a = build_model(name, seed=3, **CASES[name]).state_dict()
    b = build_model(name, seed=3, **CASES[name]).state_dict()
    c = build_model(name, seed=4, **CASES[name]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", MODELS)
def test_lr_multipliers_cover_every_parameter(name):
    model = build_model(name, parameterization="mup", **CASES[name])
    names = {k for k, _ in model.named_parameters()}
    assert set(model.lr_multipliers("adam")) == names
    assert set(model.lr_multipliers("sgd").values()) == {1.0}


def test_truncated_normal_init_has_the_requested_variance():
    model = build_model("fcn", in_shape=(256,), out_dim=10, width=1024, depth=3, init_scale=2.0)
    hidden = model.layers[1].weight
    assert hidden.var().item() == pytest.approx(2.0 / 1024, rel=0.02)
    assert hidden.abs().max().item() <= 2 * (2.0 / 1024) ** 0.5 / 0.8796 + 1e-6
    readout = model.layers[-1].weight
    assert readout.var().item() == pytest.approx(1.0 / 1024, rel=0.1)
    assert all(layer.bias.abs().sum() == 0 for layer in model.layers)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(name="resnet"), "model.name"),
        (dict(name="fcn", width=0), "model.width"),
        (dict(name="fcn", depth=-2), "model.depth"),
        (dict(name="fcn", activation="swish"), "model.activation"),
        (dict(name="myrtle", depth=6), "model.depth"),
        (dict(name="wrn", depth=15), "model.depth"),
        (dict(name="fcn", parameterization="xp"), "parameterization"),
        (dict(name="fcn", banana=1), "model"),
    ],
)
def test_bad_model_options_name_the_field(kwargs, field):
    name = kwargs.pop("name")
    shape = (3, 8, 8)
    with pytest.raises(ValueError, match=field):
        build_model(name, in_shape=shape, out_dim=10, **kwargs)


def test_causal_attention_matches_torch_sdpa_and_ignores_the_future():
    from warmup_core.models import causal_attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert torch.allclose(causal_attention(q, k, v, 0.3), expected, atol=1e-12)
    v_changed = v.clone()
    v_changed[..., -1, :] += 1.0  # the last position is the future of every other one
    out, out_changed = causal_attention(q, k, v, 0.3), causal_attention(q, k, v_changed, 0.3)
    assert torch.equal(out[..., :-1, :], out_changed[..., :-1, :])


@pytest.mark.parametrize("parameterization", ["sp", "mup"])
def test_transformer_sharpness_matches_the_dense_hessian(parameterization):
    from warmup_core.curvature import sharpness

    model = build_model(
        "transformer",
        in_shape=(4,),
        out_dim=5,
        width=4,
        depth=1,
        heads=2,
        parameterization=parameterization,
        seed=0,
    ).double()
    tokens = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(2))
    targets = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(3))
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    names, shapes = list(params), [p.shape for p in params.values()]

    def loss_fn(p):
        logits = functional_call(model, p, (tokens,))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1))

    def flat_loss(theta):
        chunks = theta.split([s.numel() for s in shapes])
        return loss_fn({n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)})

    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])
    dense = torch.autograd.functional.hessian(flat_loss, theta)
    top = torch.linalg.eigvalsh(dense)[-1].item()
    assert sharpness(loss_fn, params, tol=1e-10, max_iter=400) == pytest.approx(top, rel=1e-6)
