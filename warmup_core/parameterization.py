"""Parameterizations (SP, NTP, muP) as explicit per-layer rules.

A parameterization says, for each weight layer, given its role in the network
and its fan-in / fan-out:
- the standard deviation of the stored (trainable) weights at init,
- the forward multiplier applied to those weights (W_eff = multiplier * w),
- the learning-rate multiplier for SGD and for Adam.

Models consume these rules through `layer_rule`; no layer branches on the
parameterization's name. The table follows the abc-parameterization of
Yang & Hu (Tensor Programs IV/V) with `n` the layer's width (fan-in for hidden
and output layers, fan-out for the input layer) divided by `base_width`:

role     SP                     NTP                       muP
input    var s/fan_in           var s, mult 1/sqrt(fan_in)   var s/(fan_in*n), mult sqrt(n)
hidden   var s/fan_in           var s, mult 1/sqrt(fan_in)   var s/fan_in
output   var s_L/fan_in         var s_L, mult 1/sqrt(fan_in) var s_L/fan_in, mult 1/sqrt(n)

SGD learning-rate multipliers are 1 everywhere (muP's multipliers make a
single global SGD rate width-independent). Adam's are 1 for SP/NTP; for muP
they are 1/sqrt(n) (input, output) and 1/n (hidden), unless `simple` muP is
asked for (the paper's choice with Adam: no per-layer rate scaling).
Here s = `init_scale` (sigma_w^2, 2 for ReLU nets) and s_L = `last_init_scale`.
Under muP the readout starts at O(1/sqrt(n)), which is why muP networks start
in progressive sharpening.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PARAMETERIZATIONS = ("sp", "ntp", "mup")
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
    base_width: float = 1.0
    simple_mup: bool = False

    def __post_init__(self) -> None:
        if self.name not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization: unknown value {self.name!r}; "
                f"allowed: {', '.join(PARAMETERIZATIONS)}"
            )
        for field in ("init_scale", "last_init_scale", "base_width"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field}: must be positive, got {getattr(self, field)!r}")

    def layer_rule(self, role: str, fan_in: int, fan_out: int) -> LayerRule:
        """The rule for a weight layer with this role and fan-in/fan-out."""
        if role not in ROLES:
            raise ValueError(f"role: unknown value {role!r}; allowed: {', '.join(ROLES)}")
        scale = self.last_init_scale if role == "output" else self.init_scale
        if self.name == "sp":
            return LayerRule(math.sqrt(scale / fan_in), 1.0, 1.0, 1.0)
        if self.name == "ntp":
            return LayerRule(math.sqrt(scale), 1.0 / math.sqrt(fan_in), 1.0, 1.0)
        # muP: the width that grows is fan_out for the input layer, fan_in otherwise.
        n = (fan_out if role == "input" else fan_in) / self.base_width
        if role == "input":
            rule = LayerRule(math.sqrt(scale / (fan_in * n)), math.sqrt(n), 1.0, 1 / math.sqrt(n))
        elif role == "hidden":
            rule = LayerRule(math.sqrt(scale / fan_in), 1.0, 1.0, 1.0 / n)
        else:
            rule = LayerRule(math.sqrt(scale / fan_in), 1.0 / math.sqrt(n), 1.0, 1 / math.sqrt(n))
        if self.simple_mup:
            rule = LayerRule(rule.init_std, rule.multiplier, 1.0, 1.0)
        return rule

    def attention_scale(self, head_dim: int) -> float:
        """Scale of attention logits q.k: 1/d under muP, 1/sqrt(d) otherwise."""
        return 1.0 / head_dim if self.name == "mup" else 1.0 / math.sqrt(head_dim)
