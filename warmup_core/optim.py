"""Optimizers with explicit, inspectable state over dicts of tensors.

SGD (momentum, Nesterov), Adam, AdamW, GI-Adam, random-v0 Adam and RAdam. Each optimizer owns its
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
which acts as a built-in warmup `eta_t = eta * sqrt(1 - beta2^t)`. The paper's
official code also has a random-v0 Adam, its control: `v_0 = r * r` with
`r ~ N(0, I)` (seeded) rescaled to `||r|| = ||g_0||` over all parameters, so the
second moment starts at the size GI-Adam's does but in random directions.

RAdam (Liu et al. 2020) is torch.optim.RAdam's update rule: while the variance of
the adaptive rate is not tractable (rho_t <= 5, the first 5 updates at beta2 =
0.999) it is SGD with the bias-corrected EMA momentum, `theta -= lr * m_t / (1 -
beta1^t)`, so `P = 1 - beta1^t`; afterwards it is Adam with the rectification term
r_t in the pre-conditioner, `P = (1 - beta1^t)(sqrt(v_t) + eps) / (r_t sqrt(1 -
beta2^t))`. Both phases are an EMA-momentum step through a pre-conditioner, so
Adam's threshold on the pre-conditioned sharpness holds in both.
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
    "RAdam",
    "RandomV0Adam",
    "build_optimizer",
    "optimizer_defaults",
    "optimizer_family",
    "stability_threshold",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "gi-adam", "random-v0-adam", "radam")
ADAM_FAMILY = ("adam", "adamw", "gi-adam", "random-v0-adam", "radam")
# The Adam family's default betas and eps (torch.optim.Adam's), shared by every variant.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

Params = Mapping[str, torch.Tensor]


def optimizer_family(name: str) -> str:
    """'adam' for the Adam family, 'sgd' otherwise (selects parameterization lr rules)."""
    return "adam" if name in ADAM_FAMILY else "sgd"


def _clone_state(state: Mapping[str, Mapping[str, torch.Tensor]]) -> dict:
    return {name: {k: v.clone() for k, v in tensors.items()} for name, tensors in state.items()}


def _is_stacked(lr: float | torch.Tensor) -> bool:
    """Whether a step's `lr` is one rate per packed member (parameters then carry a
    leading member axis)."""
    return isinstance(lr, torch.Tensor) and lr.ndim > 0


def _lr_for(lr: float | torch.Tensor, param: torch.Tensor, mult: float) -> float | torch.Tensor:
    """The learning rate broadcast against `param` (member axis first when packed)."""
    if _is_stacked(lr):
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
        beta1: float = BETA1,
        beta2: float = BETA2,
        eps: float = EPS,
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

    def step(self, params: Params, grads: Params, lr: float | torch.Tensor) -> None:
        if not self.state:  # the first step: the moments start from v_0
            with torch.no_grad():
                v0 = self._initial_v(params, grads, _is_stacked(lr))
            self.state = {n: {"m": torch.zeros_like(v), "v": v} for n, v in v0.items()}
        super().step(params, grads, lr)

    def _update(self, name, p, g, lr) -> None:
        if self.weight_decay and self.decoupled:
            p.mul_(1 - lr * self.weight_decay)
        elif self.weight_decay:
            g = g + self.weight_decay * p
        st = self.state[name]
        st["m"].mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        st["v"].mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        denom = self._denominator(st["v"], self.t)
        p.sub_(lr * st["m"] / denom)

    def _step_gradients(self, params: Params, grads: Params) -> dict[str, torch.Tensor]:
        """The gradients the next step's moments take in (coupled L2 included)."""
        if not self.coupled_l2:
            return dict(grads)
        return {n: g + self.coupled_l2 * params[n].detach() for n, g in grads.items()}

    def _initial_v(self, params: Params, grads: Params, stacked: bool) -> dict[str, torch.Tensor]:
        """v_0 for every parameter: zeros for Adam, the squared first gradient for GI-Adam.
        `stacked`: the parameters carry a leading member axis."""
        return {
            n: g * g if self.gi else torch.zeros_like(g)
            for n, g in self._step_gradients(params, grads).items()
        }

    def _denominator(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """(1 - beta1^t) (sqrt(v_hat) + eps): the pre-conditioner P of update t."""
        bc1 = 1 - self.beta1**t
        bc2 = 1 - self.beta2**t
        return (v.sqrt() / bc2**0.5 + self.eps) * bc1

    def preconditioner(self) -> dict[str, torch.Tensor]:
        """Diagonal of `P / m` for the last step taken (theta -= lr * m * P^-1 m_t)."""
        if self.t == 0:
            raise RuntimeError("preconditioner: no step taken yet")
        return {
            name: self._denominator(st["v"], self.t) / self.mult(name)
            for name, st in self.state.items()
        }

    def peek_preconditioner(
        self, params: Params, grads: Params, stacked: bool = False
    ) -> dict[str, torch.Tensor]:
        """Diagonal of `P / m` that the next step from `params` with loss gradients `grads`
        would apply (no update): the pre-conditioner of the stability-relevant operator.
        `stacked`: the parameters carry a leading member axis (packed trials)."""
        t = self.t + 1
        step_grads = self._step_gradients(params, grads)
        initial = self._initial_v(params, grads, stacked) if not self.state else None
        out = {}
        for name, g in step_grads.items():
            v_prev = initial[name] if initial is not None else self.state[name]["v"]
            v = self.beta2 * v_prev + (1 - self.beta2) * g * g
            out[name] = self._denominator(v, t) / self.mult(name)
        return out


class RandomV0Adam(Adam):
    """Adam whose second moment starts at `v_0 = r * r`, `r ~ N(0, I)` drawn from
    `v0_seed` and rescaled so that `||r|| = ||g_0||` over all parameters (the official
    code's random-v0 control of GI-Adam); bias corrections as Adam's.

    `g_0` is the first step's gradient (coupled L2 included), as GI-Adam's (the official
    code takes it on a batch drawn before training and not trained on). Packed
    members each rescale to their own `||g_0||`; `r` is drawn in float64 on the CPU
    from `v0_seed` alone, so a member draws the same `r` packed or alone, on any device.
    """

    def __init__(
        self,
        beta1: float = BETA1,
        beta2: float = BETA2,
        eps: float = EPS,
        weight_decay: float = 0.0,
        v0_seed: int = 0,
        lr_multipliers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(beta1, beta2, eps, weight_decay, lr_multipliers=lr_multipliers)
        if v0_seed < 0:
            raise ValueError(f"optimizer.v0_seed: must be non-negative, got {v0_seed!r}")
        self.v0_seed = v0_seed

    def _initial_v(self, params: Params, grads: Params, stacked: bool) -> dict[str, torch.Tensor]:
        step_grads = self._step_gradients(params, grads)
        gen = torch.Generator().manual_seed(self.v0_seed)
        r = {
            n: torch.randn(g.shape[1:] if stacked else g.shape, generator=gen, dtype=torch.float64)
            for n, g in step_grads.items()
        }
        r_norm2 = sum(float(x.pow(2).sum()) for x in r.values())
        # ||g_0||^2 per member (stacked) or of the one set of parameters
        g_norm2 = sum(
            g.double().pow(2).flatten(1).sum(1) if stacked else g.double().pow(2).sum()
            for g in step_grads.values()
        )
        out = {}
        for n, g in step_grads.items():
            scale = g_norm2 / r_norm2
            scale = scale.view(-1, *([1] * (g.ndim - 1))) if stacked else scale
            out[n] = (r[n].to(g.device) * r[n].to(g.device) * scale).to(g.dtype)
        return out


class RAdam(Adam):
    """RAdam with torch.optim.RAdam's update rule (coupled L2 weight decay).

    rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t), rho_inf = 2 / (1 - beta2) - 1. While
    rho_t <= 5 the update is `theta -= lr * m_t / (1 - beta1^t)`; afterwards it is
    `theta -= lr * r_t sqrt(1 - beta2^t) / (sqrt(v_t) + eps) * m_t / (1 - beta1^t)` with
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)).
    """

    RECTIFY_ABOVE = 5.0  # torch's (and optax's) threshold on rho_t

    def __init__(
        self,
        beta1: float = BETA1,
        beta2: float = BETA2,
        eps: float = EPS,
        weight_decay: float = 0.0,
        lr_multipliers: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(beta1, beta2, eps, weight_decay, lr_multipliers=lr_multipliers)

    def rectification(self, t: int) -> float | None:
        """r_t of update t, or None while rho_t <= 5 (no adaptive rate yet)."""
        rho_inf = 2 / (1 - self.beta2) - 1
        rho = rho_inf - 2 * t * self.beta2**t / (1 - self.beta2**t)
        if not rho > self.RECTIFY_ABOVE:
            return None
        return ((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) ** 0.5

    def _denominator(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """P of update t: 1 - beta1^t before rectification, then
        (1 - beta1^t)(sqrt(v_t) + eps) / (r_t sqrt(1 - beta2^t))."""
        bc1 = 1 - self.beta1**t
        r = self.rectification(t)
        if r is None:
            return torch.full_like(v, bc1)
        return (v.sqrt() + self.eps) * (bc1 / (r * (1 - self.beta2**t) ** 0.5))


_CLASSES: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": Adam,
    "gi-adam": Adam,
    "random-v0-adam": RandomV0Adam,
    "radam": RAdam,
}
# Constructor flags that select a variant of Adam's class by name (not options).
_VARIANT_FLAGS = {"adamw": {"decoupled": True}, "gi-adam": {"gi": True}}


def optimizer_defaults(name: str) -> dict[str, Any]:
    """The hyperparameters optimizer `name` takes, with their defaults (from its class:
    the one place they are written)."""
    skip = {"self", "lr_multipliers", "decoupled", "gi"}
    params = inspect.signature(_CLASSES[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in skip}


def build_optimizer(
    name: str, lr_multipliers: Mapping[str, float] | None = None, **hyper: float
) -> Optimizer:
    """Optimizer `name` (one of `OPTIMIZERS`) with hyperparameters `hyper`."""
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer.name: unknown value {name!r}; allowed: {', '.join(OPTIMIZERS)}"
        )
    try:
        return _CLASSES[name](
            lr_multipliers=lr_multipliers, **_VARIANT_FLAGS.get(name, {}), **hyper
        )
    except TypeError as exc:
        raise ValueError(f"optimizer: bad option for {name!r}: {exc}") from None


def stability_threshold(name: str, eta, **hyper: float):
    """Stability threshold of optimizer `name` with hyperparameters `hyper` at rate `eta`."""
    return build_optimizer(name, **hyper).stability_threshold(eta)
