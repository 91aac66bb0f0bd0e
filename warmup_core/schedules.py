"""Learning-rate schedules: warmup from `eta_init` to `eta_trgt`, then decay.

Every schedule is a pure function of the step. `step` counts updates from 1:
the learning rate of the t-th update is `Schedule(...)(t)`, so with
`warmup_steps = T` the T-th update is the first to use `eta_trgt`, and
`warmup_steps = 1` means no warmup at all.

Arguments may be Python numbers or tensors (e.g. one `eta_trgt` per packed
trial); tensors broadcast against each other and against a tensor `step`,
and the result is then a float64 tensor.

Warmup shapes (Kalra & Barkeshli 2024):
- linear:     eta_init + (eta_trgt - eta_init) * min(1, t / T)
- polynomial: eta_init + (eta_trgt - eta_init) * min(1, t / T) ** power
- catapult:   min(eta_init + eta_trgt * t / T, eta_trgt)   (warmup started at eta_c)

Decays (after warmup, over the remaining `num_steps - T` updates):
- constant: eta_trgt
- cosine:   eta_min + (eta_trgt - eta_min) * ((1 + cos(pi * s)) / 2) ** p
- linear:   eta_trgt + (eta_min - eta_trgt) * s
with s = (t - T) / (num_steps - T) in [0, 1], and p = `decay_power` (the official code's
cosine exponent: 1 is the plain cosine, 0 keeps the rate at eta_trgt). `eta_min` is an
absolute rate, or with `eta_min_relative` a fraction of `eta_trgt` (the official
`lr_min = lr_trgt / 10` is `eta_min=0.1, eta_min_relative=True`), so a grid over
`eta_trgt` keeps the ratio.

The official code (Kalra & Barkeshli's `schedules_utils`) runs the same warmup, update
for update: its step s = t - 1 gets `eta_init + (eta_trgt - eta_init) * (s + 1) / T`.
Its cosine is one step ahead: it evaluates the decay at s' = (t - T + 1) / (N - T + 1)
(N = `num_steps`) where this module uses s = (t - T) / (N - T). Both end at eta_min on
update N; in between s' - s = (N - t) / ((N - T + 1)(N - T)) < 1 / (N - T + 1), less
than one update's worth of progress, so for p >= 1 the rates differ by less than
(eta_trgt - eta_min) * p * pi / (2 (N - T + 1)) (1.5e-5 of eta_trgt at the paper's
100k updates with p = 1; not at all with p = 0). It is not matched: one formula serves
every schedule, and existing sweeps keep their rates.

The sharpness-adaptive warmup, whose rates depend on measurements, is
`warmup_core.adaptive`; it takes its floor and its decay from this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DECAYS",
    "WARMUP_SHAPES",
    "Schedule",
    "learning_rate",
    "warmup_fraction",
]

Number = int | float
ScalarOrTensor = Number | torch.Tensor

WARMUP_SHAPES = ("linear", "polynomial", "catapult")
DECAYS = ("constant", "cosine", "linear")


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _check_positive(field: str, value: ScalarOrTensor, *, allow_zero: bool = False) -> None:
    bad = (value < 0) if allow_zero else (value <= 0)
    if bool(torch.as_tensor(bad).any()):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{field}: must be {kind}, got {value!r}")


def warmup_fraction(
    step: ScalarOrTensor, warmup_steps: ScalarOrTensor, power: float = 1.0
) -> ScalarOrTensor:
    """Fraction of warmup done at update `step`: min(1, step / warmup_steps) ** power."""
    if isinstance(step, torch.Tensor) or isinstance(warmup_steps, torch.Tensor):
        frac = torch.clamp(torch.as_tensor(step, dtype=torch.float64) / warmup_steps, max=1.0)
        return frac**power
    return min(1.0, step / warmup_steps) ** power


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: its hyperparameters, and the rate of update `step` when
    called (`schedule(t)`, t >= 1; a tensor of steps gives a float64 tensor of rates).

    Args:
        eta_trgt: the target rate (absolute), reached when warmup ends.
        warmup_steps: T, the update that first runs at `eta_trgt` (1: no warmup).
        eta_init: the rate warmup starts from (absolute).
        shape: `linear`, `polynomial` (with `power`) or `catapult` (see the module).
        power: exponent of the polynomial warmup.
        decay: `constant`, `cosine` or `linear`, over updates T+1 .. `num_steps`.
        num_steps: the last update (needed by the decays).
        eta_min: the rate the decay ends at (absolute, or a fraction of `eta_trgt`
            with `eta_min_relative`).
        eta_min_relative: `eta_min` is a fraction of `eta_trgt`.
        decay_power: the cosine decay's exponent p (cosine decay only; 0: no decay).
    """

    eta_trgt: ScalarOrTensor
    warmup_steps: ScalarOrTensor = 1
    eta_init: ScalarOrTensor = 0.0
    shape: str = "linear"
    power: float = 1.0
    decay: str = "constant"
    num_steps: int | None = None
    eta_min: ScalarOrTensor = 0.0
    eta_min_relative: bool = False
    decay_power: float = 1.0

    def __post_init__(self) -> None:
        # Validated once, where the schedule is made, not at every step.
        _check_choice("warmup_shape", self.shape, WARMUP_SHAPES)
        _check_choice("decay", self.decay, DECAYS)
        _check_positive("warmup_steps", self.warmup_steps)
        _check_positive("eta_trgt", self.eta_trgt, allow_zero=True)
        if self.decay != "constant" and self.num_steps is None:
            raise ValueError(f"num_steps: required for decay {self.decay!r}")
        _check_positive("decay_power", self.decay_power, allow_zero=True)
        if self.decay_power != 1.0 and self.decay != "cosine":
            raise ValueError(f"decay_power: applies to decay 'cosine' only, not {self.decay!r}")

    def __call__(self, step: ScalarOrTensor) -> ScalarOrTensor:
        """The rate of update `step` (1-based)."""
        values = (step, self.eta_trgt, self.warmup_steps, self.eta_init, self.eta_min)
        if any(isinstance(v, torch.Tensor) for v in values):
            step, eta_trgt, warmup_steps, eta_init, eta_min = (
                torch.as_tensor(v, dtype=torch.float64) for v in values
            )
            ops = _TENSOR_OPS
        else:
            step, eta_trgt, warmup_steps, eta_init, eta_min = values
            ops = _SCALAR_OPS
        warm = self._warm(step, eta_trgt, warmup_steps, eta_init, ops)
        if self.decay == "constant":
            return warm
        span = self.num_steps - warmup_steps
        # Guard the division when warmup fills the whole run; those steps never decay.
        progress = ops.clip((step - warmup_steps) / ops.where(span > 0, span, 1))
        if self.eta_min_relative:
            eta_min = eta_min * eta_trgt
        if self.decay == "cosine":
            cosine = (1 + ops.cos(math.pi * progress)) / 2
            if self.decay_power != 1.0:  # 1 keeps the plain cosine's arithmetic exactly
                cosine = cosine**self.decay_power
            decayed = eta_min + (eta_trgt - eta_min) * cosine
        else:
            decayed = eta_trgt + (eta_min - eta_trgt) * progress
        return ops.where(step > warmup_steps, decayed, warm)

    def _warm(self, step, eta_trgt, warmup_steps, eta_init, ops: _Ops) -> ScalarOrTensor:
        """The warmup part of the rate (before any decay)."""
        if self.shape == "catapult":
            return ops.minimum(eta_init + eta_trgt * (step / warmup_steps), eta_trgt)
        power = self.power if self.shape == "polynomial" else 1.0
        return eta_init + (eta_trgt - eta_init) * warmup_fraction(step, warmup_steps, power)

    @property
    def end_step(self) -> int:
        """The first update run at `eta_trgt`: `warmup_steps` for linear and polynomial
        warmup, earlier for the catapult ramp, which starts at `eta_init`."""
        if self.shape != "catapult":
            return int(self.warmup_steps)
        warmup = dataclasses.replace(self, decay="constant")
        return next(t for t in range(1, int(self.warmup_steps) + 1) if warmup(t) >= self.eta_trgt)


@dataclass(frozen=True)
class _Ops:
    """The elementwise operations a schedule needs, for Python numbers or tensors."""

    minimum: Callable
    cos: Callable
    where: Callable
    clip: Callable  # to [0, 1]


_SCALAR_OPS = _Ops(
    minimum=min,
    cos=math.cos,
    where=lambda c, a, b: a if c else b,
    clip=lambda x: min(max(x, 0.0), 1.0),
)
_TENSOR_OPS = _Ops(
    minimum=torch.minimum,
    cos=torch.cos,
    where=torch.where,
    clip=lambda x: x.clamp(0.0, 1.0),
)


def learning_rate(step: ScalarOrTensor, **hyperparameters: Any) -> ScalarOrTensor:
    """The rate of update `step` under `Schedule(**hyperparameters)` (same arguments)."""
    return Schedule(**hyperparameters)(step)
