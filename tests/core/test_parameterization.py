import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from warmup_core.models import build_model
from warmup_core.optim import build_optimizer, optimizer_family
from warmup_core.parameterization import Parameterization

WIDTHS = (64, 128, 256, 512, 1024)


def test_sp_hidden_rule_is_fan_in_init_with_unit_multipliers():
    rule = Parameterization("sp", init_scale=2.0).layer_rule("hidden", 512, 512)
    assert rule.init_std == pytest.approx(math.sqrt(2 / 512))
    assert (rule.multiplier, rule.lr_mult_sgd, rule.lr_mult_adam) == (1.0, 1.0, 1.0)


def test_mup_readout_is_scaled_down_by_root_width():
    rule = Parameterization("mup", last_init_scale=1.0).layer_rule("output", 1024, 10)
    assert rule.multiplier == pytest.approx(1 / 32)
    assert rule.lr_mult_adam == pytest.approx(1 / 32)
    assert Parameterization("mup").layer_rule("hidden", 1024, 1024).lr_mult_adam == 1 / 1024


def test_simple_mup_drops_per_layer_learning_rates():
    rule = Parameterization("mup", simple_mup=True).layer_rule("hidden", 1024, 1024)
    assert rule.lr_mult_adam == 1.0


def test_paper_mup_constants_are_the_official_mulinear_and_mureadout():
    mup = Parameterization("mup", init_scale=2.0, last_init_scale=1.0)
    first = mup.layer_rule("input", 64, 128)  # d = 64 inputs, width n = 128
    assert first.init_std == pytest.approx(math.sqrt(2 / 128))  # var s / fan_out
    assert first.multiplier == pytest.approx(math.sqrt(2))  # sqrt(n / d)
    assert first.lr_mult_adam == pytest.approx(1 / math.sqrt(2))
    widen = mup.layer_rule("hidden", 128, 512)
    assert (widen.init_std, widen.multiplier) == pytest.approx((math.sqrt(2 / 512), 2.0))
    assert widen.lr_mult_adam == pytest.approx(1 / (128 * 2))
    readout = mup.layer_rule("output", 128, 10)
    assert (readout.init_std, readout.multiplier) == pytest.approx(
        (math.sqrt(1 / 128), 1 / 128**0.5)
    )


def test_unit_mup_constants_take_widths_relative_to_one():
    first = Parameterization("mup", mup_constants="unit").layer_rule("input", 64, 128)
    assert first.init_std == pytest.approx(math.sqrt(2 / (64 * 128)))
    assert first.multiplier == pytest.approx(math.sqrt(128))
    assert first.lr_mult_adam == pytest.approx(1 / math.sqrt(128))


def test_mup_constants_give_one_function_at_init_and_input_rates_d_apart():
    """Same effective weights at init; an SGD step moves the input layer's effective
    weights d = fan_in times further with unit constants (mult^2 = n vs n / d)."""
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    moves, outputs = [], []
    for constants in ("paper", "unit"):
        param = Parameterization("mup", mup_constants=constants)
        model = build_model(
            "fcn", in_shape=(32,), out_dim=10, width=64, depth=3, parameterization=param
        )
        layer = model.layers[0]
        out = model(x)
        outputs.append(out.detach())
        (grad,) = torch.autograd.grad(out.pow(2).sum(), layer.weight)
        moves.append(layer.rule.multiplier * grad)  # d W_eff per unit SGD rate
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6)
    assert torch.allclose(moves[1], 32 * moves[0], rtol=1e-4, atol=1e-6 * moves[1].abs().max())


def test_effective_init_variance_is_the_same_for_input_layers_across_parameterizations():
    for name in ("sp", "ntp", "mup"):
        rule = Parameterization(name, init_scale=2.0).layer_rule("input", 32, 256)
        assert (rule.init_std * rule.multiplier) ** 2 == pytest.approx(2.0 / 32)


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("parameterization", dict(name="mu-p")),
        ("init_scale", dict(init_scale=0.0)),
        ("last_init_scale", dict(last_init_scale=-1.0)),
        ("mup_constants", dict(mup_constants="base-1")),
    ],
)
def test_bad_parameterization_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        Parameterization(**kwargs)


def _coordinate_check(parameterization: str, optimizer: str, lr: float) -> dict[str, list[float]]:
    """Scales of hidden activations at init and of their one-step updates, per width."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 32, generator=gen), torch.randn(128, 10, generator=gen)
    scales = {"h0": [], "dh": [], "df": []}
    for width in WIDTHS:
        model = build_model(
            "fcn",
            in_shape=(32,),
            out_dim=10,
            width=width,
            depth=4,
            parameterization=parameterization,
            seed=0,
        )
        params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}

        def last_hidden(p, model=model):
            h = x
            for i, layer in enumerate(model.layers[:-1]):
                sub = {k.split(".", 2)[2]: v for k, v in p.items() if k.startswith(f"layers.{i}.")}
                h = F.relu(functional_call(layer, sub, (h,)))
            return h

        h0, f0 = last_hidden(params), functional_call(model, params, (x,))
        grads = torch.autograd.grad(F.mse_loss(f0, y), list(params.values()))
        opt = build_optimizer(optimizer, model.lr_multipliers(optimizer_family(optimizer)))
        opt.step(params, dict(zip(params, grads, strict=True)), lr)
        with torch.no_grad():
            scales["h0"].append(h0.abs().mean().item())
            scales["dh"].append((last_hidden(params) - h0).abs().mean().item())
            scales["df"].append((functional_call(model, params, (x,)) - f0).abs().mean().item())
    return scales


def _growth(values: list[float]) -> float:
    return values[-1] / values[0]


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 1e-3)])
def test_coordinate_check_mup_stays_flat_and_sp_drifts_with_width(optimizer, lr):
    mup = _coordinate_check("mup", optimizer, lr)
    sp = _coordinate_check("sp", optimizer, lr)
    for scales in (mup, sp):  # activations at init are O(1) in both
        assert 0.5 < _growth(scales["h0"]) < 2
    # muP: one-step updates of features and outputs do not grow with width (64 -> 1024).
    assert 0.4 < _growth(mup["dh"]) < 2.5
    assert 0.4 < _growth(mup["df"]) < 2.5
    # SP at a fixed learning rate: the output update blows up with width.
    assert _growth(sp["df"]) > 4
    assert _growth(sp["dh"]) > 2


def test_mup_feature_map_fan_in_is_the_official_mu_conv():
    # Official muConv, 3x3 from 64 to 128 channels on a 16x16 map: variance varw / (9 * 128)
    # (flax's fan_out of a conv kernel), output times sqrt(128 / (16 * 16 * 64)).
    official = Parameterization("mup", conv_fan_in="feature_map")
    rule = official.conv_rule("hidden", 64, 128, 3, (16, 16))
    assert rule.init_std == pytest.approx(math.sqrt(2.0 / (9 * 128)), rel=1e-12)
    assert rule.multiplier == pytest.approx(math.sqrt(128 / (16 * 16 * 64)), rel=1e-12)
    shortcut = official.conv_rule("hidden", 64, 128, 1, (16, 16), init_scale=1.0)
    assert shortcut.init_std == pytest.approx(math.sqrt(1.0 / 128), rel=1e-12)
    # the kernel convention: fan_in 9 * 64, fan_out 128
    kernel = Parameterization("mup").conv_rule("hidden", 64, 128, 3, (16, 16))
    assert kernel.init_std == pytest.approx(math.sqrt(2.0 / 128), rel=1e-12)
    assert kernel.multiplier == pytest.approx(math.sqrt(128 / (9 * 64)), rel=1e-12)
    # SP counts k*k*C_in whatever the convention
    sp = Parameterization("sp", conv_fan_in="feature_map").conv_rule("hidden", 64, 128, 3, (16, 16))
    assert sp.init_std == pytest.approx(math.sqrt(2.0 / (9 * 64)), rel=1e-12)
    with pytest.raises(ValueError, match="mup_conv_fan_in"):
        official.conv_rule("hidden", 64, 128, 3, None)
    with pytest.raises(ValueError, match="mup_conv_fan_in"):
        Parameterization("mup", conv_fan_in="map")
