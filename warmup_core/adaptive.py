"""Sharpness-adaptive warmup: raise the rate toward `eta_trgt` as fast as stability allows.

The paper's mechanism says what warmup is for: keep `eta_t` below the stability
threshold while training moves to flatter regions. Instead of a fixed ramp, this
controller reads the threshold-relevant curvature the trial measures (the sharpness
for SGD, the pre-conditioned sharpness for the Adam family) and sets the rate of
update t (1-based) by one rule:

    safe_t = largest stable rate at curvature c / safety      (c: last measurement)
    ctrl_t = min(safe_t, (1 + growth) * eta_{t-1})            (t = 1: safe_t alone)
    eta_t  = min(eta_trgt, max(floor_t, ctrl_t))

so that, as long as the floor does not bind, `c * eta_t` stays below `safety` times the
stability constant of the update rule (`c <= safety * threshold(eta_t)`), and the rate
grows by at most a factor `1 + growth` per update. The floor is the linear warmup from
`eta_init` over `warmup_steps` updates: adaptive warmup is never slower than the linear
warmup with the same `eta_init` and `warmup_steps`, so `warmup_steps` is the longest
warmup allowed (`warmup_steps: 1` is no warmup at all) and a grid over
`warmup_shape: [linear, adaptive] x warmup_steps` compares the two at equal budgets.
The rate may go down during warmup when the measured curvature rises (never below the
floor).

Warmup ends at the first update whose rate is `eta_trgt` (`end_step`); from then on the
controller measures nothing and the decay of `warmup_core.schedules` runs as if
warmup had lasted `end_step` updates. During warmup it wants a measurement at update 1
and then every `every` updates; between measurements the last one holds.

The state is explicit and small (`AdaptiveState`): `update` is a pure function of the
hyperparameters, the state, the step and the measurement, so checkpoints store it and
packed trials keep one per member.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from warmup_core.schedules import Schedule

__all__ = [
    "DEFAULT_EVERY",
    "DEFAULT_GROWTH",
    "DEFAULT_SAFETY",
    "AdaptiveState",
    "AdaptiveWarmup",
]

# Defaults of the config fields `adaptive_safety`, `adaptive_growth`, `adaptive_every`:
# half the threshold (the rate sits at half the largest stable one, e.g. 1/lambda for
# GD); at most 10% more per update (from a safe start, x16 takes 30 updates); a
# measurement every 5 updates during warmup.
DEFAULT_SAFETY = 0.5
DEFAULT_GROWTH = 0.1
DEFAULT_EVERY = 5


@dataclass(frozen=True)
class AdaptiveState:
    """Where the controller is: the rate of the last update (None before update 1), the
    safe rate from the last measurement, and the update that ended warmup (None while
    warming up)."""

    rate: float | None = None
    safe_rate: float = math.inf
    end_step: int | None = None


@dataclass(frozen=True)
class AdaptiveWarmup:
    """Hyperparameters of one adaptive warmup (rates absolute, steps 1-based).

    Args:
        schedule: the linear schedule it replaces: its `eta_trgt`, `eta_init` and
            `warmup_steps` make the floor, and its decay runs once warmup ends.
        largest_stable_rate: `c -> ` the largest rate at which the optimizer's update is
            stable at threshold-relevant curvature `c`, from the optimizer's stability rule
            (`warmup_core.optim.Optimizer.largest_stable_rate`).
        safety: the fraction of the stability constant the rate may use.
        growth: the rate grows by at most a factor `1 + growth` per update.
        every: updates between measurements during warmup.
    """

    schedule: Schedule
    largest_stable_rate: Callable[[float], float]
    safety: float = DEFAULT_SAFETY
    growth: float = DEFAULT_GROWTH
    every: int = DEFAULT_EVERY

    def __post_init__(self) -> None:
        eta_trgt, eta_init = self.schedule.eta_trgt, self.schedule.eta_init
        if not (math.isfinite(eta_trgt) and eta_trgt > 0):
            raise ValueError(f"eta_trgt: must be positive and finite, got {eta_trgt!r}")
        if not eta_init >= 0:  # at or above eta_trgt: the floor ends warmup at once
            raise ValueError(f"eta_init: must be non-negative, got {eta_init!r}")
        if self.schedule.shape != "linear":
            raise ValueError(
                f"schedule: adaptive warmup replaces a linear one, not {self.schedule.shape!r}"
            )
        if not 0 < self.safety <= 1:
            raise ValueError(f"adaptive_safety: must be in (0, 1], got {self.safety!r}")
        if not self.growth > 0:
            raise ValueError(f"adaptive_growth: must be positive, got {self.growth!r}")
        if self.every < 1:
            raise ValueError(f"adaptive_every: must be >= 1, got {self.every!r}")

    @property
    def eta_trgt(self) -> float:
        """The target rate."""
        return self.schedule.eta_trgt

    def init(self) -> AdaptiveState:
        """The state before update 1."""
        return AdaptiveState()

    def measures_at(self, state: AdaptiveState, t: int) -> bool:
        """Whether the controller wants the curvature at the start of update t."""
        return state.end_step is None and (t == 1 or (t - 1) % self.every == 0)

    def floor(self, t: int) -> float:
        """The linear warmup from `eta_init` over `warmup_steps`: the slowest allowed."""
        return float(replace(self.schedule, decay="constant")(t))

    def update(self, state: AdaptiveState, t: int, curvature: float | None) -> AdaptiveState:
        """The state after choosing the rate of update t (`.rate`), given the curvature
        measured at its start (None when not measured at t; a non-finite value is no
        information either)."""
        if state.end_step is not None:
            # The schedule's decay, as if warmup had lasted `end_step` updates.
            after = replace(self.schedule, warmup_steps=state.end_step, eta_init=self.eta_trgt)
            decayed = after(t)
            return AdaptiveState(float(decayed), state.safe_rate, state.end_step)
        safe = state.safe_rate
        if curvature is not None and math.isfinite(curvature):
            safe = self.largest_stable_rate(curvature / self.safety)
        ctrl = safe if state.rate is None else min(safe, (1 + self.growth) * state.rate)
        rate = min(self.eta_trgt, max(self.floor(t), ctrl))
        return AdaptiveState(rate, safe, t if rate >= self.eta_trgt else None)
