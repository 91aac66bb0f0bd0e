"""Learning-rate schedules: warmup from `eta_init` to `eta_trgt`, then decay.

Every schedule is a pure function of the step. `step` counts updates from 1:
the learning rate of the t-th update is `learning_rate(t, ...)`, so with
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
- cosine:   eta_min + (eta_trgt - eta_min) * (1 + cos(pi * s)) / 2
- linear:   eta_trgt + (eta_min - eta_trgt) * s
with s = (t - T) / (num_steps - T) in [0, 1].

The sharpness-adaptive warmup, whose rates depend on measurements, is
`warmup_core.adaptive`; it takes its floor and its decay from this module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "DECAYS",
    "WARMUP_SHAPES",
    "Schedule",
    "learning_rate",
    "warmup_end_step",
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


def learning_rate(
    step: ScalarOrTensor,
    *,
    eta_trgt: ScalarOrTensor,
    warmup_steps: ScalarOrTensor = 1,
    eta_init: ScalarOrTensor = 0.0,
    shape: str = "linear",
    power: float = 1.0,
    decay: str = "constant",
    num_steps: int | None = None,
    eta_min: ScalarOrTensor = 0.0,
) -> ScalarOrTensor:
    """Learning rate of the `step`-th update (1-based) under warmup then decay."""
    _check_choice("warmup_shape", shape, WARMUP_SHAPES)
    _check_choice("decay", decay, DECAYS)
    _check_positive("warmup_steps", warmup_steps)
    _check_positive("eta_trgt", eta_trgt, allow_zero=True)
    if decay != "constant" and num_steps is None:
        raise ValueError(f"num_steps: required for decay {decay!r}")

    tensor_mode = any(
        isinstance(v, torch.Tensor) for v in (step, eta_trgt, warmup_steps, eta_init, eta_min)
    )
    if tensor_mode:
        as64 = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
        step, eta_trgt, warmup_steps = as64(step), as64(eta_trgt), as64(warmup_steps)
        eta_init, eta_min = as64(eta_init), as64(eta_min)
        minimum, cos, where = torch.minimum, torch.cos, torch.where
    else:
        minimum, cos = min, math.cos
        where = lambda c, a, b: a if c else b  # noqa: E731

    if shape == "catapult":
        warm = minimum(eta_init + eta_trgt * (step / warmup_steps), eta_trgt)
    else:
        frac = warmup_fraction(step, warmup_steps, power if shape == "polynomial" else 1.0)
        warm = eta_init + (eta_trgt - eta_init) * frac

    if decay == "constant":
        return warm
    span = num_steps - warmup_steps
    # Guard the division when warmup fills the whole run; those steps never decay.
    span = where(span > 0, span, 1) if tensor_mode else max(span, 1)
    progress = (step - warmup_steps) / span
    progress = progress.clamp(0.0, 1.0) if tensor_mode else min(max(progress, 0.0), 1.0)
    if decay == "cosine":
        decayed = eta_min + (eta_trgt - eta_min) * (1 + cos(math.pi * progress)) / 2
    else:
        decayed = eta_trgt + (eta_min - eta_trgt) * progress
    return where(step > warmup_steps, decayed, warm)


def warmup_end_step(
    *,
    eta_trgt: float,
    warmup_steps: int = 1,
    eta_init: float = 0.0,
    shape: str = "linear",
) -> int:
    """The first update run at `eta_trgt`: `warmup_steps` for linear and polynomial
    warmup, earlier for the catapult ramp, which starts at `eta_init`."""
    _check_choice("warmup_shape", shape, WARMUP_SHAPES)
    if shape != "catapult":
        return warmup_steps
    return next(
        t
        for t in range(1, warmup_steps + 1)
        if learning_rate(
            t, eta_trgt=eta_trgt, warmup_steps=warmup_steps, eta_init=eta_init, shape=shape
        )
        >= eta_trgt
    )


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule with fixed hyperparameters: call it with a step."""

    eta_trgt: ScalarOrTensor
    warmup_steps: ScalarOrTensor = 1
    eta_init: ScalarOrTensor = 0.0
    shape: str = "linear"
    power: float = 1.0
    decay: str = "constant"
    num_steps: int | None = None
    eta_min: ScalarOrTensor = 0.0

    def __post_init__(self) -> None:
        # Validate once, where the schedule is made, not at every step.
        self(1)

    def __call__(self, step: ScalarOrTensor) -> ScalarOrTensor:
        return learning_rate(
            step,
            eta_trgt=self.eta_trgt,
            warmup_steps=self.warmup_steps,
            eta_init=self.eta_init,
            shape=self.shape,
            power=self.power,
            decay=self.decay,
            num_steps=self.num_steps,
            eta_min=self.eta_min,
        )
