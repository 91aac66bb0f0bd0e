"""The official variants of WideResNet and Myrtle against the official code's formulas.

The expected numbers are written out here from the official JAX code of Kalra &
Barkeshli (`vision/phase-diagrams/utils/model_utils.py`): its parameter count
(`num_params` = 2,751,146 in every result table), flax's `variance_scaling(varw,
'fan_in', 'truncated_normal')` for `Conv` and `nn.Dense`, and `muConv` / `muReadout`.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from warmup_core.models import (
    ChannelLayerNorm,
    ParamConv2d,
    build_model,
    xla_same_padding,
)
from warmup_core.parameterization import Parameterization

CIFAR = dict(in_shape=(3, 32, 32), out_dim=10)
TRUNC = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (jax's constant)

# The official WRN-16-4 on 32x32x3: every conv as (name, C_in, C_out, kernel, H_in, varw).
# Stages of widths 64, 128, 256, two blocks each; the first block of stages 1 and 2 has
# stride 2, so its conv1 and shortcut see the larger map.
WRN_CONVS = [
    ("stem", 3, 16, 3, 32, 2.0),
    ("blocks.0.conv1", 16, 64, 3, 32, 2.0),
    ("blocks.0.conv2", 64, 64, 3, 32, 2.0),
    ("blocks.0.shortcut", 16, 64, 1, 32, 1.0),
    ("blocks.1.conv1", 64, 64, 3, 32, 2.0),
    ("blocks.1.conv2", 64, 64, 3, 32, 2.0),
    ("blocks.2.conv1", 64, 128, 3, 32, 2.0),
    ("blocks.2.conv2", 128, 128, 3, 16, 2.0),
    ("blocks.2.shortcut", 64, 128, 1, 32, 1.0),
    ("blocks.3.conv1", 128, 128, 3, 16, 2.0),
    ("blocks.3.conv2", 128, 128, 3, 16, 2.0),
    ("blocks.4.conv1", 128, 256, 3, 16, 2.0),
    ("blocks.4.conv2", 256, 256, 3, 8, 2.0),
    ("blocks.4.shortcut", 128, 256, 1, 16, 1.0),
    ("blocks.5.conv1", 256, 256, 3, 8, 2.0),
    ("blocks.5.conv2", 256, 256, 3, 8, 2.0),
]


def _official_wrn(name: str = "sp", **rules) -> torch.nn.Module:
    param = Parameterization(name, **rules)
    return build_model("wrn", variant="official", parameterization=param, **CIFAR)


def _check_truncated_normal(w: torch.Tensor, variance: float, label: str) -> None:
    """Sample variance within 6 standard errors, and no value beyond 2 pre-scaling stds."""
    n = w.numel()
    assert w.var().item() == pytest.approx(variance, rel=6 * math.sqrt(2 / n)), label
    assert w.abs().max().item() <= 2 * math.sqrt(variance) / TRUNC * (1 + 1e-6), label


def test_official_wrn_16_4_has_the_official_tables_parameter_count():
    model = _official_wrn()
    assert sum(p.numel() for p in model.parameters()) == 2_751_146
    # ours differs by exactly the 2,256 conv biases (same norm parameter total)
    ours = build_model("wrn", **CIFAR)
    assert sum(p.numel() for p in ours.parameters()) == 2_751_146 - 2_256
    mup = _official_wrn("mup", conv_fan_in="feature_map")
    assert sum(p.numel() for p in mup.parameters()) == 2_751_146


def test_official_wrn_sp_init_follows_the_official_variances():
    model = _official_wrn()
    modules = dict(model.named_modules())
    for name, c_in, _c_out, k, _h, varw in WRN_CONVS:
        conv = modules[name]
        assert conv.rule.multiplier == 1.0
        _check_truncated_normal(conv.weight, varw / (k * k * c_in), name)  # flax fan_in
        assert conv.bias is not None and not conv.bias.any(), name
    _check_truncated_normal(model.readout.weight, 1.0 / 256, "readout")
    assert not model.readout.bias.any()
    norms = [m for m in model.modules() if isinstance(m, ChannelLayerNorm)]
    assert len(norms) == 1 + 2 * 6  # stem, two per block
    assert all(n.eps == 1e-6 and (n.weight == 1).all() and not n.bias.any() for n in norms)


def test_official_mup_wrn_is_mu_conv_everywhere_and_mu_readout():
    model = _official_wrn("mup", conv_fan_in="feature_map", simple_mup=True)
    modules = dict(model.named_modules())
    for name, c_in, c_out, k, h, varw in WRN_CONVS:
        conv = modules[name]
        # muConv: kernel_init variance_scaling(varw, 'fan_out') -> varw / (k*k*C_out); output
        # times sqrt(C_out / (H_in * W_in * C_in)).
        _check_truncated_normal(conv.weight, varw / (k * k * c_out), name)
        assert conv.rule.multiplier == pytest.approx(math.sqrt(c_out / (h * h * c_in)), rel=1e-12)
    assert modules["stem"].rule.multiplier == pytest.approx(0.0722, abs=1e-4)  # sqrt(16/3072)
    assert modules["blocks.0.conv2"].rule.multiplier == pytest.approx(1 / 32, rel=1e-12)
    # muReadout: variance 1 / fan_in, output times 1 / sqrt(fan_in)
    _check_truncated_normal(model.readout.weight, 1.0 / 256, "readout")
    assert model.readout.rule.multiplier == pytest.approx(1 / 16, rel=1e-12)


def test_mup_kernel_convention_is_unchanged_by_the_option():
    ours = _official_wrn("mup")
    conv = dict(ours.named_modules())["blocks.2.conv2"]
    # "kernel": fan_in = 9 * 128, fan_out = 128: variance 2 / 128, multiplier 1 / 3
    assert conv.rule.init_std == pytest.approx(math.sqrt(2 / 128), rel=1e-12)
    assert conv.rule.multiplier == pytest.approx(1 / 3, rel=1e-12)
    sp = _official_wrn("sp", conv_fan_in="feature_map")  # SP ignores the convention
    assert dict(sp.named_modules())["stem"].rule.init_std == pytest.approx(math.sqrt(2 / 27))


def test_channel_layer_norm_normalizes_each_pixels_channels():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64) * 3 + 1
    norm = ChannelLayerNorm(5).double()
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    torch.testing.assert_close(norm(x), (x - mean) / torch.sqrt(var + 1e-6))


def test_xla_same_padding_is_asymmetric_for_strided_convs():
    assert xla_same_padding(32, 3, 2) == (0, 1)  # jax 'SAME' for the stride-2 3x3 conv
    assert xla_same_padding(32, 3, 1) == (1, 1)
    assert xla_same_padding(32, 1, 2) == (0, 0)
    assert xla_same_padding(7, 3, 2) == (1, 1)
    conv = ParamConv2d(4, 6, Parameterization("sp"), "hidden", stride=2, padding="xla").double()
    conv.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(2, 4, 32, 32, dtype=torch.float64)
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), want)
    assert want.shape[-2:] == (16, 16)


def test_official_wrn_block_is_post_activation():
    model = _official_wrn().double()
    block = model.blocks[2]  # 64 -> 128, stride 2, with a 1x1 shortcut
    x = torch.randn(2, 64, 32, 32, dtype=torch.float64)
    padded = F.pad(x, (0, 1, 0, 1))
    y = F.conv2d(padded, block.conv1.weight, block.conv1.bias, stride=2)
    y = F.relu(block.norm1(y))
    y = block.norm2(F.conv2d(y, block.conv2.weight, block.conv2.bias, padding=1))
    skip = F.conv2d(x, block.shortcut.weight, block.shortcut.bias, stride=2)
    torch.testing.assert_close(block(x), F.relu(y + skip))


def test_official_myrtle_has_three_pools_and_mup_on_the_readout_only():
    for depth, convs in ((5, 4), (7, 6), (10, 9)):
        model = build_model("myrtle", variant="official", depth=depth, width=64, **CIFAR)
        assert len(model.convs) == convs
        assert sum(bool(getattr(c, "pool_after", False)) for c in model.convs) == 3
        # 28w + (L - 1)(9w^2 + w) + 10w + 10 for width w and L convs (official Myrtle)
        w = 64
        assert (
            sum(p.numel() for p in model.parameters())
            == 28 * w + (convs - 1) * (9 * w * w + w) + 10 * w + 10
        )
    ours = build_model("myrtle", depth=5, width=64, **CIFAR)
    assert sum(bool(getattr(c, "pool_after", False)) for c in ours.convs) == 2

    mup = build_model("myrtle", variant="official", parameterization="mup", width=64, **CIFAR)
    for i, conv in enumerate(mup.convs):  # the standard `Conv`: varw 2 / (9 C_in), multiplier 1
        c_in = 3 if i == 0 else 64
        assert conv.rule.multiplier == 1.0
        _check_truncated_normal(conv.weight, 2.0 / (9 * c_in), f"conv {i}")
        assert conv.bias is not None
    assert mup.readout.rule.multiplier == pytest.approx(1 / 8, rel=1e-12)  # muReadout
    _check_truncated_normal(mup.readout.weight, 1.0 / 64, "readout")


def test_official_myrtle_pools_to_four_by_four_before_the_mean():
    model = build_model("myrtle", variant="official", width=8, **CIFAR).double()
    seen = []
    model.readout.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    model(x)
    h = x
    for i, conv in enumerate(model.convs):  # conv, relu; pools after convs 1, 2 and 3
        h = F.relu(conv(h))
        if i in (1, 2, 3):
            h = F.avg_pool2d(h, 2)
    assert h.shape[-2:] == (4, 4)
    torch.testing.assert_close(seen[0], h.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("name", "options"), [("wrn", dict(depth=10, widen=1)), ("myrtle", dict(width=4))]
)
def test_official_variants_run_packed_and_take_small_images(name, options):
    model = build_model(name, variant="official", in_shape=(1, 8, 8), out_dim=10, **options)
    params = {k: torch.stack([v.detach()] * 2) for k, v in model.named_parameters()}
    out = model.stacked_forward(params, torch.randn(3, 1, 8, 8))
    assert out.shape == (2, 3, 10) and torch.isfinite(out).all()


def test_official_mup_multipliers_scale_the_bias_too():
    # muConv and muReadout multiply the layer's output, bias included: x * sqrt(...) after
    # nn.Conv / nn.Dense with their biases.
    model = _official_wrn("mup", conv_fan_in="feature_map").double()
    gen = torch.Generator().manual_seed(0)
    conv = model.blocks[2].conv1  # 64 -> 128, stride 2, on 32 x 32
    with torch.no_grad():
        conv.bias.copy_(torch.randn(128, generator=gen, dtype=torch.float64))
        model.readout.bias.copy_(torch.randn(10, generator=gen, dtype=torch.float64))
    x = torch.randn(2, 64, 32, 32, generator=gen, dtype=torch.float64)
    mult = math.sqrt(128 / (32 * 32 * 64))
    want = mult * F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), want)
    h = torch.randn(3, 256, generator=gen, dtype=torch.float64)
    readout = model.readout
    torch.testing.assert_close(readout(h), (h @ readout.weight.T + readout.bias) / 16)
