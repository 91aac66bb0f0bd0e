"""Parameterizations (SP, NTP, muP) as explicit per-layer rules.

A parameterization says, for each weight layer, given its role in the network
and its fan-in / fan-out:
- the standard deviation of the stored (trainable) weights at init,
- the forward multiplier applied to those weights (W_eff = multiplier * w),
- the learning-rate multiplier for SGD and for Adam.

Models consume these rules through `layer_rule`; no layer branches on the
parameterization's name. With s = `init_scale` (sigma_w^2, 2 for ReLU nets),
s_L = `last_init_scale`, and fan-in / fan-out counted as the layer sees them
(channels x kernel area for convolutions):

role     SP               NTP                          muP ("paper" constants)
input    var s/fan_in     var s, mult 1/sqrt(fan_in)   var s/fan_out, mult sqrt(fan_out/fan_in)
hidden   var s/fan_in     var s, mult 1/sqrt(fan_in)   var s/fan_out, mult sqrt(fan_out/fan_in)
output   var s_L/fan_in   var s_L, mult 1/sqrt(fan_in) var s_L/fan_in, mult 1/sqrt(fan_in)

The muP column is the official code of Kalra & Barkeshli (its `muLinear` and
`muReadout` layers): a layer's multiplier is relative to its own base shape, so
the input layer scales by sqrt(n/d) for width n and input dimension d. The
`unit` constants instead take every width relative to a base width of 1
(Yang & Hu's abc table as written): input var s/(fan_in*fan_out), mult
sqrt(fan_out); hidden var s/fan_in, mult 1; output as above. Both give the same
function at init and the same width scaling; they differ in how fast the
input layer (and non-square hidden layers) move, hence in lambda0 and eta_c.

Convolutions count fan-in as kernel area x input channels (k*k*C_in) and fan-out as
output channels. The official code's muP convolution (`muConv`) counts otherwise:
its multiplier is sqrt(C_out / (H*W*C_in)), fan-in from the whole input feature map
(H x W pixels), and it initializes with variance s / (k*k*C_out) (flax's fan-out of
a conv kernel). With `conv_fan_in = "feature_map"` muP convolutions follow it: in
the table's terms, fan_in = k*k*H*W*C_in and fan_out = k*k*C_out. The effective
weight variance is then SP's divided by H*W (the LayerNorm after each of the official
WideResNet's convolutions undoes most of that; its 1x1 shortcuts start that much
smaller). The default, "kernel", keeps this module's own convention. It changes muP
only; SP and NTP count k*k*C_in either way. The official runs set no per-layer
learning rates (`simple_mup`).

SGD learning-rate multipliers are 1 everywhere (muP's multipliers make a
single global SGD rate width-independent). Adam's are 1 for SP/NTP; for muP
they make each layer's effective per-entry update 1 (input) or 1/fan_in
(hidden, output): 1/mult and 1/(fan_in*mult). `simple_mup` (the paper's
choice with Adam) drops those per-layer rates and keeps 1 everywhere. Under
muP the readout starts at O(1/sqrt(n)), which is why muP networks start in
progressive sharpening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "CONV_FAN_INS",
    "MUP_CONSTANTS",
    "PARAMETERIZATIONS",
    "ROLES",
    "LayerRule",
    "Parameterization",
]

PARAMETERIZATIONS = ("sp", "ntp", "mup")
MUP_CONSTANTS = ("paper", "unit")
CONV_FAN_INS = ("kernel", "feature_map")
ROLES = ("input", "hidden", "output")


@dataclass(frozen=True)
class LayerRule:
    """How one weight layer is initialized, scaled in the forward pass and trained."""

    init_std: float
    multiplier: float
    lr_mult_sgd: float
    lr_mult_adam: float

    def lr_mult(self, optimizer_family: str) -> float:
        """Learning-rate multiplier for `optimizer_family` ('sgd' or 'adam')."""
        return self.lr_mult_adam if optimizer_family == "adam" else self.lr_mult_sgd


@dataclass(frozen=True)
class Parameterization:
    """A named parameterization with its init scales; produces per-layer rules."""

    name: str = "sp"
    init_scale: float = 2.0
    last_init_scale: float = 1.0
    simple_mup: bool = False
    mup_constants: str = "paper"
    conv_fan_in: str = "kernel"

    def __post_init__(self) -> None:
        if self.name not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization: unknown value {self.name!r}; "
                f"allowed: {', '.join(PARAMETERIZATIONS)}"
            )
        if self.mup_constants not in MUP_CONSTANTS:
            raise ValueError(
                f"mup_constants: unknown value {self.mup_constants!r}; "
                f"allowed: {', '.join(MUP_CONSTANTS)}"
            )
        if self.conv_fan_in not in CONV_FAN_INS:
            raise ValueError(
                f"mup_conv_fan_in: unknown value {self.conv_fan_in!r}; "
                f"allowed: {', '.join(CONV_FAN_INS)}"
            )
        for field in ("init_scale", "last_init_scale"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}: must be positive, got {getattr(self, field)!r}")

    def layer_rule(
        self, role: str, fan_in: int, fan_out: int, init_scale: float | None = None
    ) -> LayerRule:
        """The rule for a weight layer with this role and fan-in/fan-out. `init_scale`
        replaces the role's sigma_w^2 for this layer (e.g. a linear shortcut's 1)."""
        if role not in ROLES:
            raise ValueError(f"role: unknown value {role!r}; allowed: {', '.join(ROLES)}")
        scale = self.last_init_scale if role == "output" else self.init_scale
        scale = scale if init_scale is None else init_scale
        if self.name == "sp":
            return LayerRule(math.sqrt(scale / fan_in), 1.0, 1.0, 1.0)
        if self.name == "ntp":
            return LayerRule(math.sqrt(scale), 1.0 / math.sqrt(fan_in), 1.0, 1.0)
        if role == "output":
            init_var, mult = scale / fan_in, 1.0 / math.sqrt(fan_in)
        elif self.mup_constants == "paper":
            init_var, mult = scale / fan_out, math.sqrt(fan_out / fan_in)
        elif role == "input":
            init_var, mult = scale / (fan_in * fan_out), math.sqrt(fan_out)
        else:
            init_var, mult = scale / fan_in, 1.0
        if self.simple_mup:
            return LayerRule(math.sqrt(init_var), mult, 1.0, 1.0)
        # Adam moves each entry by about its rate: aim the effective update at 1 (input)
        # or 1/fan_in (hidden, output) entries of W_eff = mult * w.
        target = 1.0 if role == "input" else 1.0 / fan_in
        return LayerRule(math.sqrt(init_var), mult, 1.0, target / mult)

    def conv_rule(
        self,
        role: str,
        c_in: int,
        c_out: int,
        kernel: int,
        in_hw: tuple[int, int] | None = None,
        init_scale: float | None = None,
    ) -> LayerRule:
        """The rule for a `kernel` x `kernel` convolution from `c_in` to `c_out` channels on
        an input map of `in_hw` = (H, W) pixels (needed by muP's `feature_map` fan-in
        only); `init_scale` as in `layer_rule`."""
        area = kernel * kernel
        if self.name != "mup" or self.conv_fan_in == "kernel":
            return self.layer_rule(role, area * c_in, c_out, init_scale)
        if in_hw is None:
            raise ValueError("mup_conv_fan_in: 'feature_map' needs the input map's size")
        return self.layer_rule(role, area * in_hw[0] * in_hw[1] * c_in, area * c_out, init_scale)

    def attention_scale(self, head_dim: int) -> float:
        """Scale of attention logits q.k: 1/d under muP, 1/sqrt(d) otherwise."""
        return 1.0 / head_dim if self.name == "mup" else 1.0 / math.sqrt(head_dim)
