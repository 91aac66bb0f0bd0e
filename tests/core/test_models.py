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
