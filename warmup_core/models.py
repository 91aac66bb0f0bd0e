"""Models of the paper: FCN, Myrtle CNN, WideResNet (LayerNorm), pre-LN Transformer.

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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from warmup_core.parameterization import PARAMETERIZATIONS, Parameterization
from warmup_core.registry import Entry, Option, Registry

__all__ = [
    "ACTIVATIONS",
    "FCN",
    "INPUT_KINDS",
    "MODELS",
    "MODEL_REGISTRY",
    "ModelEntry",
    "Myrtle",
    "ParamConv2d",
    "ParamLinear",
    "Transformer",
    "WarmupModel",
    "WideResNet",
    "build_model",
    "causal_attention",
    "vmap_forward",
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
    """A weight layer whose init and multiplier come from a parameterization rule."""

    def __init__(self, param: Parameterization, role: str, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.role = role
        self.rule = param.layer_rule(role, fan_in, fan_out)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        _trunc_normal_(self.weight, self.rule.init_std, generator)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class ParamLinear(_ParamLayer):
    """Linear layer `y = multiplier * x W^T + b` under a parameterization."""

    def __init__(
        self, d_in: int, d_out: int, param: Parameterization, role: str, bias: bool = True
    ) -> None:
        super().__init__(param, role, d_in, d_out)
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.rule.multiplier, self.bias)


class ParamConv2d(_ParamLayer):
    """3x3 (or kxk) 'same' convolution under a parameterization."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        param: Parameterization,
        role: str,
        kernel: int = 3,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(param, role, c_in * kernel * kernel, c_out)
        self.stride, self.padding = stride, kernel // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.rule.multiplier, self.bias, self.stride, self.padding)


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


class Myrtle(WarmupModel):
    """Myrtle CNN (Shankar et al. 2020) with 5, 7 or 10 layers and `width` channels."""

    STAGES: ClassVar[dict[int, tuple[int, int, int]]] = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        param: Parameterization,
        *,
        depth: int,
        width: int,
    ) -> None:
        super().__init__()
        convs, c_in = [], in_channels
        for stage, count in enumerate(self.STAGES[depth]):
            for _ in range(count):
                role = "input" if not convs else "hidden"
                convs.append(ParamConv2d(c_in, width, param, role))
                c_in = width
            convs[-1].pool_after = stage < 2  # 2x2 average pools after stages 1 and 2
        self.convs = nn.ModuleList(convs)
        self.readout = ParamLinear(width, out_dim, param, "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
            if getattr(conv, "pool_after", False):
                x = F.avg_pool2d(x, 2)
        return self.readout(x.mean(dim=(2, 3)))


class _WRNBlock(nn.Module):
    """Pre-activation residual block with LayerNorm (GroupNorm of one group) for BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int, param: Parameterization) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, c_in)
        self.conv1 = ParamConv2d(c_in, c_out, param, "hidden", stride=stride, bias=False)
        self.norm2 = nn.GroupNorm(1, c_out)
        self.conv2 = ParamConv2d(c_out, c_out, param, "hidden", bias=False)
        needs_proj = stride != 1 or c_in != c_out
        self.shortcut = (
            ParamConv2d(c_in, c_out, param, "hidden", kernel=1, stride=stride, bias=False)
            if needs_proj
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + skip


class WideResNet(WarmupModel):
    """WRN-depth-k (Zagoruyko & Komodakis) with LayerNorm in place of BatchNorm."""

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        param: Parameterization,
        *,
        depth: int,
        widen: int,
        base_channels: int,
    ) -> None:
        super().__init__()
        blocks_per_stage = (depth - 4) // 6
        self.stem = ParamConv2d(in_channels, base_channels, param, "input", bias=False)
        blocks, c_in = [], base_channels
        for stage in range(3):
            c_out = base_channels * widen * 2**stage
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(_WRNBlock(c_in, c_out, stride, param))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(1, c_in)
        self.readout = ParamLinear(c_in, out_dim, param, "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
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
        _builder(Myrtle, lambda shape, out: (shape[0], out)),
        {"depth": Option(int, 5, choices=tuple(Myrtle.STAGES)), "width": _positive(64)},
        description="Myrtle CNN with two 2x2 average pools",
        inputs=frozenset({"image"}),
    )
)
MODEL_REGISTRY.register(
    ModelEntry(
        "wrn",
        _builder(WideResNet, lambda shape, out: (shape[0], out)),
        {"depth": _positive(16), "widen": _positive(4), "base_channels": _positive(16)},
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
