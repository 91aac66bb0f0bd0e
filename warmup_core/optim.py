"""Optimizers with explicit, inspectable state over dicts of tensors.

SGD (momentum, Nesterov), Adam, AdamW and GI-Adam. Each optimizer owns its
state (`.state`, one dict of tensors per parameter name) and updates the
parameter tensors in place with `step(params, grads, lr)`; the learning rate
is passed at every step, so any schedule drives it. `lr` is a number or a
tensor of shape (K,) for K packed trials whose parameters carry a leading
member axis. Per-parameter learning-rate multipliers (from a
parameterization) are applied on top.

Adam exposes the diagonal pre-conditioner its update applies: with
`P = (1 - beta1^t) (sqrt(v_hat) + eps)` and learning-rate multipliers `m`, the
update reads `theta -= lr * m * P^-1 m_t`, so the pre-conditioner is `P / m` and the
pre-conditioned sharpness is the top eigenvalue of `(P / m)^-1 H`. Each optimizer
knows its stability threshold (`stability_threshold`), from the formulas in
`warmup_core.stability`: the one place every threshold comes from; its inverse,
the largest stable rate at a measured curvature (`largest_stable_rate`), is read
off that rule.

GI-Adam (Kalra & Barkeshli 2024) initializes the second moment with the
squared first gradient, `v_0 = g_0^2`, and keeps the usual bias correction,
which acts as a built-in warmup `eta_t = eta * sqrt(1 - beta2^t)`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from warmup_core import stability

__all__ = [
    "ADAM_FAMILY",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "Optimizer",
    "build_optimizer",
    "optimizer_defaults",
    "optimizer_family",
    "stability_threshold",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "gi-adam")
ADAM_FAMILY = ("adam", "adamw", "gi-adam")

Params = Mapping[str, torch.Tensor]


def optimizer_family(name: str) -> str:
    """'adam' for the Adam family, 'sgd' otherwise (selects parameterization lr rules)."""
    return "adam" if name in ADAM_FAMILY else "sgd"


def _clone_state(state: Mapping[str, Mapping[str, torch.Tensor]]) -> dict:
    return {name: {k: v.clone() for k, v in tensors.items()} for name, tensors in state.items()}


def _lr_for(lr: float | torch.Tensor, param: torch.Tensor, mult: float) -> float | torch.Tensor:
    """The learning rate broadcast against `param` (member axis first when packed)."""
    if isinstance(lr, torch.Tensor) and lr.ndim > 0:
        return (lr * mult).to(param.dtype).view(-1, *([1] * (param.ndim - 1)))
    return float(lr) * mult


class Optimizer:
    """Shared bookkeeping: per-parameter lr multipliers and a step counter."""

    def __init__(self, lr_multipliers: Mapping[str, float] | None = None) -> None:
        self.lr_multipliers = dict(lr_multipliers or {})
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.t = 0

    def mult(self, name: str) -> float:
        return self.lr_multipliers.get(name, 1.0)

    def stability_threshold(self, eta):
        """Curvature above which this update rule is unstable at learning rate `eta`.

        For SGD a bound on the Hessian's top eigenvalue, for the Adam family on the
        pre-conditioned sharpness (see `warmup_core.stability`).
        """
        raise NotImplementedError

    def largest_stable_rate(self, curvature: float) -> float:
        """Largest learning rate at which this update rule is stable at `curvature` (the
        quantity `stability_threshold` bounds); inf when no rate is unstable there.

        The inverse of `stability_threshold`: every threshold has the form `a / eta - b`
        (the rule's stability constant over the rate, less the curvature the update adds,
        e.g. coupled weight decay), so `a` and `b` are read off the rule itself.
        """
        b = -float(self.stability_threshold(math.inf))
        a = float(self.stability_threshold(1.0)) + b
        return a / (curvature + b) if curvature + b > 0 else math.inf

    def fresh(self) -> Optimizer:
        """The same optimizer (hyperparameters, multipliers) with empty state."""
        new = copy.copy(self)
        new.state, new.t = {}, 0
        return new

    def step_fn(self) -> stability.StepFn:
        """This optimizer, from empty state, as a pure `StepFn` for the eta_c search."""

        def step(params, grads, eta, state):
            opt = state or self.fresh()
            new = {k: p.detach().clone() for k, p in params.items()}
            opt.step(new, grads, eta)
            return new, opt

        return step

    def step(self, params: Params, grads: Params, lr: float | torch.Tensor) -> None:
        """Update `params` in place from `grads` with learning rate `lr`."""
        self.t += 1
        with torch.no_grad():
            for name, p in params.items():
                self._update(name, p, grads[name], _lr_for(lr, p, self.mult(name)))

    def _update(self, name: str, p: torch.Tensor, g: torch.Tensor, lr) -> None:
        raise NotImplementedError

    def keep_members(self, rows: torch.Tensor) -> None:
        """Keep only members `rows` (indices on the leading member axis) of a packed state."""
        self.state = {n: {k: v[rows] for k, v in st.items()} for n, st in self.state.items()}

    def state_dict(self) -> dict:
        """A copy of the state for checkpoints: step count and per-parameter tensors."""
        return {"t": self.t, "state": _clone_state(self.state)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state made by `state_dict` (copied, so the source stays untouched)."""
        self.t = state["t"]
        self.state = _clone_state(state["state"])


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD."""

    def __init__(
        self,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        lr_multipliers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(lr_multipliers)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"optimizer.momentum: must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("optimizer.nesterov: needs optimizer.momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def stability_threshold(self, eta):
        """Heavy-ball or Nesterov threshold on lambda_H, less the coupled weight decay."""
        return stability.sgd_threshold(eta, self.momentum, self.nesterov, self.weight_decay)

    def _update(self, name, p, g, lr) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = self.state.setdefault(name, {}).get("momentum")
            if buf is None:
                buf = self.state[name]["momentum"] = g.clone()
            else:
                buf.mul_(self.momentum).add_(g)
            g = g + self.momentum * buf if self.nesterov else buf
        p.sub_(lr * g)


class Adam(Optimizer):
    """Adam / AdamW / GI-Adam with torch.optim.Adam's arithmetic when extras are off."""

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
        gi: bool = False,
        lr_multipliers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(lr_multipliers)
        for field, beta in (("optimizer.beta1", beta1), ("optimizer.beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{field}: must be in [0, 1), got {beta!r}")
        if eps < 0:
            raise ValueError(f"optimizer.eps: must be non-negative, got {eps!r}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay, self.decoupled, self.gi = weight_decay, decoupled, gi

    def stability_threshold(self, eta):
        """Adam's threshold (2 + 2 beta1)/((1 - beta1) eta) on the pre-conditioned sharpness."""
        return stability.adam_threshold(eta, self.beta1)

    @property
    def coupled_l2(self) -> float:
        """L2 weight decay inside the gradient (0 when decoupled, as AdamW): the update's
        operator is then `(P / m)^-1 (H + coupled_l2 I)`."""
        return 0.0 if self.decoupled else self.weight_decay

    def _update(self, name, p, g, lr) -> None:
        if self.weight_decay and self.decoupled:
            p.mul_(1 - lr * self.weight_decay)
        elif self.weight_decay:
            g = g + self.weight_decay * p
        st = self.state.get(name)
        if st is None:
            st = self.state[name] = {"m": torch.zeros_like(g), "v": self._initial_v(g)}
        st["m"].mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        st["v"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        denom = self._denominator(st["v"])
        p.sub_(lr * st["m"] / denom)

    def _initial_v(self, g: torch.Tensor) -> torch.Tensor:
        """v_0: zeros for Adam, the squared first gradient for GI-Adam."""
        return g * g if self.gi else torch.zeros_like(g)

    def _denominator(self, v: torch.Tensor) -> torch.Tensor:
        """(1 - beta1^t) (sqrt(v_hat) + eps): the pre-conditioner P."""
        bc1 = 1 - self.beta1**self.t
        bc2 = 1 - self.beta2**self.t
        return (v.sqrt() / bc2**0.5 + self.eps) * bc1

    def preconditioner(self) -> dict[str, torch.Tensor]:
        """Diagonal of `P / m` for the last step taken (theta -= lr * m * P^-1 m_t)."""
        if self.t == 0:
            raise RuntimeError("preconditioner: no step taken yet")
        return {
            name: self._denominator(st["v"]) / self.mult(name) for name, st in self.state.items()
        }

    def peek_preconditioner(self, params: Params, grads: Params) -> dict[str, torch.Tensor]:
        """Diagonal of `P / m` that the next step from `params` with loss gradients `grads`
        would apply (no update): the pre-conditioner of the stability-relevant operator."""
        t, out = self.t + 1, {}
        bc1, bc2 = 1 - self.beta1**t, 1 - self.beta2**t
        for name, g in grads.items():
            if self.coupled_l2:  # the step's gradient carries the L2 term
                g = g + self.coupled_l2 * params[name].detach()
            st = self.state.get(name)
            v_prev = self._initial_v(g) if st is None else st["v"]
            v = self.beta2 * v_prev + (1 - self.beta2) * g * g
            out[name] = (v.sqrt() / bc2**0.5 + self.eps) * bc1 / self.mult(name)
        return out


def optimizer_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters optimizer `name` takes, with their defaults (from its class:
    the one place they are written)."""
    cls = SGD if name == "sgd" else Adam
    skip = {"self", "lr_multipliers", "decoupled", "gi"}
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in skip}


def build_optimizer(
    name: str, lr_multipliers: Mapping[str, float] | None = None, **hyper: float
) -> Optimizer:
    """Optimizer `name` ('sgd', 'adam', 'adamw', 'gi-adam') with hyperparameters `hyper`."""
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer.name: unknown value {name!r}; allowed: {', '.join(OPTIMIZERS)}"
        )
    try:
        if name == "sgd":
            return SGD(lr_multipliers=lr_multipliers, **hyper)
        return Adam(
            lr_multipliers=lr_multipliers,
            decoupled=name == "adamw",
            gi=name == "gi-adam",
            **hyper,
        )
    except TypeError as exc:
        raise ValueError(f"optimizer: bad option for {name!r}: {exc}") from None


def stability_threshold(name: str, eta, **hyper: float):
    """Stability threshold of optimizer `name` with hyperparameters `hyper` at rate `eta`."""
    return build_optimizer(name, **hyper).stability_threshold(eta)
