"""Models of the paper: FCN, Myrtle CNN, WideResNet (LayerNorm), pre-LN Transformer.

Myrtle and WideResNet come in two variants (registry option `variant`): "ours", the
default, and "official", the architecture of Kalra & Barkeshli's own JAX code (see
the classes). "ours" stays the default so existing sweeps keep their ids and results.

Every weight layer takes its init, forward multiplier and learning-rate
multiplier from a `Parameterization` rule, so the same model code serves SP,
NTP and muP. All models are plain `nn.Module`s without buffers or in-place
ops, so `torch.func.functional_call` (and `vmap` over it) works on a dict of
parameters; curvature and packed trials rely on that.

Init follows the paper: truncated normal (at two standard deviations, rescaled
so the variance is exact), sigma_w^2 = `init_scale` for hidden layers,
`last_init_scale` for the readout, zero biases, unit norm gains.

Models are built by name through `MODEL_REGISTRY`, whose entries hold every
option's default (constructors take all options explicitly); installed
plugins add entries through the `warmup_sweeps.models` entry-point group.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from warmup_core.parameterization import PARAMETERIZATIONS, LayerRule, Parameterization
from warmup_core.registry import Entry, Option, Registry

__all__ = [
    "ACTIVATIONS",
    "FCN",
    "INPUT_KINDS",
    "MODELS",
    "MODEL_REGISTRY",
    "MODEL_VARIANTS",
    "PADDINGS",
    "ChannelLayerNorm",
    "ModelEntry",
    "Myrtle",
    "ParamConv2d",
    "ParamLinear",
    "Transformer",
    "WarmupModel",
    "WideResNet",
    "build_model",
    "causal_attention",
    "conv_output_size",
    "vmap_forward",
    "xla_same_padding",
]

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu, "linear": lambda x: x}

# Variance of a standard normal truncated at +-2: divide the std by its root so
# truncated init has exactly the variance the parameterization asks for.
_TRUNC_STD = 0.8796256610342398


def _trunc_normal_(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        nn.init.trunc_normal_(tensor, 0.0, 1.0, -2.0, 2.0, generator=generator)
        tensor.mul_(std / _TRUNC_STD)


class _ParamLayer(nn.Module):
    """A weight layer whose init and multiplier come from a parameterization rule.

    `scale_bias`: the multiplier scales the layer's output, bias included (the official
    code's muP layers multiply after adding the bias); otherwise the weights alone.
    """

    def __init__(self, role: str, rule: LayerRule, scale_bias: bool = False) -> None:
        super().__init__()
        self.role, self.rule, self.scale_bias = role, rule, scale_bias

    def _effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias the forward pass applies."""
        m = self.rule.multiplier
        bias = self.bias * m if self.scale_bias and self.bias is not None else self.bias
        return self.weight * m, bias

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        _trunc_normal_(self.weight, self.rule.init_std, generator)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ParamLinear(_ParamLayer):
    """Linear layer `y = multiplier * x W^T + b` under a parameterization (with
    `scale_bias`, `multiplier * (x W^T + b)`)."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        param: Parameterization,
        role: str,
        bias: bool = True,
        *,
        scale_bias: bool = False,
    ) -> None:
        super().__init__(role, param.layer_rule(role, d_in, d_out), scale_bias)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self._effective())


PADDINGS = ("torch", "xla")


def xla_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis under XLA's 'SAME' rule (the official
    JAX code's): the output has ceil(size / stride) positions and the odd pixel of an
    uneven total goes after, e.g. (0, 1) for a 3x3 stride-2 conv on 32 pixels."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ParamConv2d(_ParamLayer):
    """k x k 'same' convolution under a parameterization (`Parameterization.conv_rule`).

    `padding`: 'torch' pads k // 2 on every side; 'xla' follows XLA's 'SAME' rule, which
    pads strided convolutions asymmetrically (`xla_same_padding`). Both agree at stride 1.
    `in_hw` is the input map's size, which muP's `feature_map` fan-in needs; `init_scale`
    replaces the role's sigma_w^2 (a linear shortcut's 1); `scale_bias` as `ParamLinear`.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        param: Parameterization,
        role: str,
        kernel: int = 3,
        stride: int = 1,
        bias: bool = True,
        *,
        in_hw: tuple[int, int] | None = None,
        init_scale: float | None = None,
        padding: str = "torch",
        scale_bias: bool = False,
    ) -> None:
        if padding not in PADDINGS:
            raise ValueError(f"padding: unknown value {padding!r}; allowed: {', '.join(PADDINGS)}")
        rule = param.conv_rule(role, c_in, c_out, kernel, in_hw, init_scale)
        super().__init__(role, rule, scale_bias)
        self.stride, self.kernel, self.xla = stride, kernel, padding == "xla"
        self.padding = kernel // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (weight, bias), padding = self._effective(), self.padding
        if self.xla:
            (top, bottom), (left, right) = (
                xla_same_padding(n, self.kernel, self.stride) for n in x.shape[-2:]
            )
            x, padding = F.pad(x, (left, right, top, bottom)), 0
        return F.conv2d(x, weight, bias, self.stride, padding)


def conv_output_size(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size after a 'same' convolution with `stride` (either padding)."""
    return (-(-hw[0] // stride), -(-hw[1] // stride))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) map, eps 1e-6: flax's
    `nn.LayerNorm()` on the NHWC maps of the official code (not GroupNorm(1, C), which
    normalizes over channels and pixels together)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class WarmupModel(nn.Module):
    """Base class: parameterized init and per-parameter learning-rate multipliers."""

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialize every layer from `generator` (deterministic for a seed)."""
        for module in self.modules():
            if isinstance(module, _ParamLayer):
                module.reset_parameters(generator)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.Embedding)):
                module.reset_parameters()

    def lr_multipliers(self, optimizer_family: str) -> dict[str, float]:
        """Per-parameter learning-rate multipliers ('sgd' or 'adam' rules)."""
        mults = {}
        for mod_name, module in self.named_modules():
            for p_name, _ in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                is_weight = isinstance(module, _ParamLayer) and p_name == "weight"
                mults[full] = module.rule.lr_mult(optimizer_family) if is_weight else 1.0
        return mults

    def stacked_forward(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, per_member: bool = False
    ) -> torch.Tensor:
        """Logits (K, B, ...) of K copies of this model whose parameters are stacked on a
        leading member axis (K, ...), on a shared batch `x` (B, ...), or with
        `per_member` on each member's own batch `x` (K, B, ...)."""
        return vmap_forward(self, params, x, per_member)


def vmap_forward(
    model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, per_member: bool = False
) -> torch.Tensor:
    """`model`'s forward for parameters stacked on a leading member axis, by `vmap` over
    `functional_call` (any model), on a shared batch or (`per_member`) one batch per
    member; a single member is a plain call."""
    if next(iter(params.values())).shape[0] == 1:
        x = x[0] if per_member else x
        return functional_call(model, {k: v[0] for k, v in params.items()}, (x,))[None]
    in_dims = (0, 0 if per_member else None)
    return vmap(lambda p, xb: functional_call(model, p, (xb,)), in_dims=in_dims)(params, x)


# Constructors take every option explicitly and trust them: defaults and checks live in
# the registry entries below, which validate a config before any model is built.


class FCN(WarmupModel):
    """Fully connected net: `depth` weight layers of `width` units (FCN-4-512 = depth 4)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        param: Parameterization,
        *,
        width: int,
        depth: int,
        activation: str,
        bias: bool,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        roles = ["input"] + ["hidden"] * (depth - 2) + ["output"] if depth > 1 else ["output"]
        self.layers = nn.ModuleList(
            ParamLinear(a, b, param, role, bias)
            for a, b, role in zip(dims[:-1], dims[1:], roles, strict=True)
        )
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def stacked_forward(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, per_member: bool = False
    ) -> torch.Tensor:
        """Logits (K, B, out) of K FCNs stacked on a leading member axis, on a shared batch
        or (`per_member`) one batch per member, by batched matrix products (measured
        faster than `vmap` on CPU)."""
        h, k = x.flatten(2 if per_member else 1), next(iter(params.values())).shape[0]
        for i, layer in enumerate(self.layers):
            w = params[f"layers.{i}.weight"] * layer.rule.multiplier
            b = params.get(f"layers.{i}.bias")
            if h.ndim == 2:  # shared input: one (B, in) x (in, K*out) product for all members
                h = (h @ w.reshape(-1, w.shape[-1]).T).view(len(h), k, -1).transpose(0, 1)
                h = h if b is None else h + b[:, None, :]
            elif b is None:
                h = torch.bmm(h, w.transpose(1, 2))
            else:
                h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


MODEL_VARIANTS = ("ours", "official")


class Myrtle(WarmupModel):
    """Myrtle CNN (Shankar et al. 2020) with 5, 7 or 10 layers and `width` channels.

    `variant` "ours": 2x2 average pools after the first two of its three stages, every
    layer under the parameterization. "official", the Myrtle of Kalra & Barkeshli's code
    (`Myrtle5/7/10`): a pool after each of the three stages (32 -> 4 pixels), and muP on
    the readout only (its `Myrtle_mup` builds the convolutions with the standard `Conv`),
    so its convolutions are standard-parameterized whatever the parameterization, and
    the readout's multiplier scales its bias too (as `muReadout`). Both have 3x3
    convolutions with biases at a constant width.
    """

    STAGES: ClassVar[dict[int, tuple[int, int, int]]] = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_dim: int,
        param: Parameterization,
        *,
        depth: int,
        width: int,
        variant: str,
    ) -> None:
        super().__init__()
        official = variant == "official"
        conv_param = dataclasses.replace(param, name="sp") if official else param
        convs, c_in, hw = [], in_shape[0], (in_shape[1], in_shape[2])
        for stage, count in enumerate(self.STAGES[depth]):
            for _ in range(count):
                role = "input" if not convs else "hidden"
                convs.append(ParamConv2d(c_in, width, conv_param, role, in_hw=hw))
                c_in = width
            convs[-1].pool_after = stage < 2 or official  # 2x2 average pools
            if convs[-1].pool_after:
                hw = (hw[0] // 2, hw[1] // 2)
        self.convs = nn.ModuleList(convs)
        self.readout = ParamLinear(width, out_dim, param, "output", scale_bias=official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
            if getattr(conv, "pool_after", False):
                x = F.avg_pool2d(x, 2)
        return self.readout(x.mean(dim=(2, 3)))


class _WRNBlock(nn.Module):
    """Pre-activation residual block with LayerNorm (GroupNorm of one group) for BatchNorm."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, param: Parameterization, in_hw: tuple[int, int]
    ) -> None:
        super().__init__()
        out_hw = conv_output_size(in_hw, stride)
        self.norm1 = nn.GroupNorm(1, c_in)
        self.conv1 = ParamConv2d(
            c_in, c_out, param, "hidden", stride=stride, bias=False, in_hw=in_hw
        )
        self.norm2 = nn.GroupNorm(1, c_out)
        self.conv2 = ParamConv2d(c_out, c_out, param, "hidden", bias=False, in_hw=out_hw)
        needs_proj = stride != 1 or c_in != c_out
        self.shortcut = (
            ParamConv2d(
                c_in, c_out, param, "hidden", kernel=1, stride=stride, bias=False, in_hw=in_hw
            )
            if needs_proj
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + skip


class _OfficialWRNBlock(nn.Module):
    """The official code's post-activation block: conv -> LN -> relu -> conv -> LN, plus
    the shortcut (a biased 1x1 conv, variance 1 / fan_in, when the shape changes), relu."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, param: Parameterization, in_hw: tuple[int, int]
    ) -> None:
        super().__init__()
        out_hw = conv_output_size(in_hw, stride)
        conv = functools.partial(
            ParamConv2d, param=param, role="hidden", padding="xla", scale_bias=True
        )
        self.conv1 = conv(c_in, c_out, stride=stride, in_hw=in_hw)
        self.norm1 = ChannelLayerNorm(c_out)
        self.conv2 = conv(c_out, c_out, in_hw=out_hw)
        self.norm2 = ChannelLayerNorm(c_out)
        needs_proj = stride != 1 or c_in != c_out
        # The shortcut is linear (no relu after it): sigma_w^2 = 1, as the official varw=1.0.
        self.shortcut = (
            conv(c_in, c_out, kernel=1, stride=stride, in_hw=in_hw, init_scale=1.0)
            if needs_proj
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class WideResNet(WarmupModel):
    """WRN-depth-k (Zagoruyko & Komodakis) with LayerNorm in place of BatchNorm.

    `variant` "ours": pre-activation blocks normalized by GroupNorm(1, C) (over channels
    and pixels together), convolutions without biases, a bare conv stem and a final
    norm before pooling (2,748,890 parameters as WRN-16-4 on CIFAR-10). "official": the
    WideResNet of Kalra & Barkeshli's code (`WideResNet16_sp` / `_mup`): post-activation
    blocks (`_OfficialWRNBlock`), LayerNorm over the channels of each pixel
    (`ChannelLayerNorm`), biases on every conv, a conv -> LN -> relu stem, XLA 'SAME'
    padding, no final norm (2,751,146 parameters as WRN-16-4 on CIFAR-10, the
    `num_params` of the official tables). Under muP every conv follows the
    parameterization (the official `muConv`, with `mup_conv_fan_in: feature_map`), and
    every multiplier scales its layer's bias too, as the official muP layers do.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_dim: int,
        param: Parameterization,
        *,
        depth: int,
        widen: int,
        base_channels: int,
        variant: str,
    ) -> None:
        super().__init__()
        official = variant == "official"
        blocks_per_stage = (depth - 4) // 6
        hw = (in_shape[1], in_shape[2])
        self.stem = ParamConv2d(
            in_shape[0],
            base_channels,
            param,
            "input",
            bias=official,
            in_hw=hw,
            padding="xla" if official else "torch",
            scale_bias=official,
        )
        self.stem_norm = ChannelLayerNorm(base_channels) if official else None
        block = _OfficialWRNBlock if official else _WRNBlock
        blocks, c_in = [], base_channels
        for stage in range(3):
            c_out = base_channels * widen * 2**stage
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block(c_in, c_out, stride, param, hw))
                hw = conv_output_size(hw, stride)
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.norm = None if official else nn.GroupNorm(1, c_in)
        self.readout = ParamLinear(c_in, out_dim, param, "output", scale_bias=official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.stem_norm is not None:
            x = F.relu(self.stem_norm(x))
        x = self.blocks(x)
        if self.norm is not None:
            x = F.relu(self.norm(x))
        return self.readout(x.mean(dim=(2, 3)))


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + causal mask) v over (..., T, head_dim) tensors.

    Written out rather than calling `F.scaled_dot_product_attention`: its fused
    kernels (CPU flash, CUDA flash and memory-efficient) have no double backward,
    and every curvature measurement needs one (Hessian-vector products).
    """
    t = q.shape[-2]
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = (q @ k.transpose(-2, -1)) * scale
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


class _TransformerBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, param: Parameterization) -> None:
        super().__init__()
        self.heads = heads
        self.attn_scale = param.attention_scale(d_model // heads)
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = ParamLinear(d_model, 3 * d_model, param, "hidden")
        self.proj = ParamLinear(d_model, d_model, param, "hidden")
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = ParamLinear(d_model, 4 * d_model, param, "hidden")
        self.fc_out = ParamLinear(4 * d_model, d_model, param, "hidden")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = causal_attention(q, k, v, self.attn_scale)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class Transformer(WarmupModel):
    """Pre-LN decoder-only Transformer for character-level language modelling."""

    def __init__(
        self,
        vocab_size: int,
        context: int,
        param: Parameterization,
        *,
        width: int,
        depth: int,
        heads: int,
    ) -> None:
        super().__init__()
        # Token and position embeddings act on one-hot inputs: the input layer of muP.
        self.tok = ParamLinear(vocab_size, width, param, "input", bias=False)
        self.pos = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.ModuleList(_TransformerBlock(width, heads, param) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.readout = ParamLinear(width, vocab_size, param, "output", bias=False)
        self.vocab_size = vocab_size

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        super().reset_parameters(generator)
        _trunc_normal_(self.pos, 0.02, generator)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        # One-hot times weight = embedding lookup, so muP's input-layer rule applies as is.
        x = F.embedding(tokens, self.tok.weight.t() * self.tok.rule.multiplier) + self.pos[:t]
        for block in self.blocks:
            x = block(x)
        return self.readout(self.ln_f(x))


# ----------------------------------------------------------------------------- registry

INPUT_KINDS = ("vector", "image", "text")


@dataclass(frozen=True)
class ModelEntry(Entry):
    """A model: `builder(param, in_shape, out_dim, **options) -> WarmupModel`.

    `param` is the `Parameterization` whose per-layer rules the model's weight
    layers (`ParamLinear`, `ParamConv2d`) take; `in_shape` is one example's shape
    without the batch axis; `out_dim` the number of classes (vocabulary size for
    text). `inputs` are the data kinds it accepts ('vector' (D,), 'image'
    (C, H, W), 'text' (T,) token ids); `parameterizations` those it supports.
    """

    inputs: frozenset[str] = frozenset({"vector", "image"})
    parameterizations: tuple[str, ...] = PARAMETERIZATIONS

    def __post_init__(self) -> None:
        if not self.inputs or not set(self.inputs) <= set(INPUT_KINDS):
            raise ValueError(f"model {self.name!r}: inputs must be among {INPUT_KINDS}")
        if not set(self.parameterizations) <= set(PARAMETERIZATIONS):
            raise ValueError(
                f"model {self.name!r}: parameterizations must be among {PARAMETERIZATIONS}"
            )


MODEL_REGISTRY: Registry[ModelEntry] = Registry("model", "warmup_sweeps.models", ModelEntry)


def _positive(default: int, help: str = "") -> Option:
    return Option(int, default, minimum=1, help=help)


def _variant(help: str) -> Option:
    return Option(str, "ours", choices=MODEL_VARIANTS, help=help, omit_default=True)


def _check_wrn(options: dict[str, Any]) -> None:
    depth = options["depth"]
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"model.depth: WideResNet depth must be 6n+4 >= 10, got {depth!r}")


def _check_transformer(options: dict[str, Any]) -> None:
    if options["width"] % options["heads"]:
        raise ValueError(
            f"model.heads: must divide model.width ({options['width']}), got {options['heads']}"
        )


def _builder(cls: type, first: Callable[[tuple[int, ...], int], tuple]) -> Callable[..., Any]:
    def build(param: Parameterization, in_shape: tuple[int, ...], out_dim: int, **options: Any):
        return cls(*first(in_shape, out_dim), param, **options)

    return build


MODEL_REGISTRY.register(
    ModelEntry(
        "fcn",
        _builder(FCN, lambda shape, out: (math.prod(shape), out)),
        {
            "width": _positive(512),
            "depth": _positive(4, "weight layers; FCN-4-512 is depth 4"),
            "activation": Option(str, "relu", choices=tuple(ACTIVATIONS)),
            "bias": Option(bool, True),
        },
        description="fully connected net (flattens its input)",
    )
)
MODEL_REGISTRY.register(
    ModelEntry(
        "myrtle",
        _builder(Myrtle, lambda shape, out: (tuple(shape), out)),
        {
            "depth": Option(int, 5, choices=tuple(Myrtle.STAGES)),
            "width": _positive(64),
            "variant": _variant(
                "ours (default, so existing sweeps keep their ids and results): two 2x2 "
                "average pools, every layer under the parameterization; official: the "
                "official code's Myrtle, three pools and muP on the readout only"
            ),
        },
        description="Myrtle CNN with 2x2 average pools (official variant: three)",
        inputs=frozenset({"image"}),
    )
)
MODEL_REGISTRY.register(
    ModelEntry(
        "wrn",
        _builder(WideResNet, lambda shape, out: (tuple(shape), out)),
        {
            "depth": _positive(16),
            "widen": _positive(4),
            "base_channels": _positive(16),
            "variant": _variant(
                "ours (default, so existing sweeps keep their ids and results): "
                "pre-activation blocks, GroupNorm(1, C), no conv biases; official: the "
                "official code's post-activation WRN, LayerNorm over each pixel's "
                "channels, conv biases (WRN-16-4: 2,751,146 parameters on CIFAR-10)"
            ),
        },
        check=_check_wrn,
        description="WideResNet with LayerNorm, strides 2 in stages 2 and 3",
        inputs=frozenset({"image"}),
    )
)
MODEL_REGISTRY.register(
    ModelEntry(
        "transformer",
        _builder(Transformer, lambda shape, out: (out, shape[0])),
        {"width": _positive(128), "depth": _positive(4), "heads": _positive(4)},
        check=_check_transformer,
        description="pre-LN decoder-only transformer (character LM)",
        inputs=frozenset({"text"}),
    )
)
MODELS: tuple[str, ...] = MODEL_REGISTRY.names(plugins=False)


def build_model(
    name: str,
    *,
    in_shape: Sequence[int],
    out_dim: int,
    parameterization: str | Parameterization = "sp",
    init_scale: float = 2.0,
    last_init_scale: float = 1.0,
    seed: int = 0,
    **options: Any,
) -> WarmupModel:
    """Build and initialize model `name` for inputs of `in_shape` (no batch axis).

    `in_shape` is (D,) or (C, H, W) for fcn, (C, H, W) for the CNNs, (context,)
    for the transformer, whose `out_dim` is the vocabulary size. Unset options
    take their registry defaults. The same `seed` gives the same weights.
    """
    entry = MODEL_REGISTRY.get(name)
    resolved = MODEL_REGISTRY.resolve(name, options)
    param = (
        parameterization
        if isinstance(parameterization, Parameterization)
        else Parameterization(parameterization, init_scale, last_init_scale)
    )
    if param.name not in entry.parameterizations:
        raise ValueError(
            f"parameterization: model {name!r} supports {', '.join(entry.parameterizations)}, "
            f"not {param.name!r}"
        )
    in_shape = tuple(in_shape)
    if "vector" not in entry.inputs and "image" in entry.inputs and len(in_shape) != 3:
        raise ValueError(f"dataset: model {name!r} needs (C, H, W) image inputs, got {in_shape}")
    # Layers a builder initializes on its own (plain torch modules) draw from the global
    # generator: seed it here, without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder(param, in_shape, out_dim, **resolved)
    if not isinstance(model, WarmupModel):
        raise TypeError(
            f"model {name!r} ({entry.source}): the builder returned {type(model).__name__}, "
            "not a warmup_core.models.WarmupModel"
        )
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model
