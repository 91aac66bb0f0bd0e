"""The learning rate of each update of one trial: its fixed schedule, or the
sharpness-adaptive warmup (`warmup_core.adaptive`) fed the trial's own measurements.

The loop asks `measures_at(t)` before update t (adaptive warmup wants the curvature
at update 1 and every `adaptive_every` updates until warmup ends), then calls
`rate(t, ...)` once per update, in order, with what it measured at the start of
update t: the sharpness, and for the Adam family the pre-conditioned sharpness, the
quantity its stability threshold bounds. `end_step` is the first update run at
`eta_trgt` once it is chosen (for fixed schedules, known from the start).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from trials.config import TrialConfig
from warmup_core.adaptive import AdaptiveState, AdaptiveWarmup
from warmup_core.optim import build_optimizer
from warmup_core.schedules import Schedule

__all__ = ["TrialRates", "resolve_etas", "schedule_of"]


def resolve_etas(config: TrialConfig, lambda0: float, eta_c: float | None) -> tuple[float, float]:
    """Absolute eta_trgt and eta_init, from lambda0 and eta_c."""
    eta_trgt = (
        config.eta_trgt / lambda0 if config.eta_trgt_relative_to == "lambda0" else config.eta_trgt
    )
    eta_init = eta_c if config.eta_init == "catapult" else config.eta_init
    if not (math.isfinite(eta_trgt) and eta_trgt > 0):
        raise ValueError(f"eta_trgt: resolved to {eta_trgt} (lambda0 = {lambda0})")
    return eta_trgt, eta_init


def schedule_of(config: TrialConfig, eta_trgt: float, eta_init: float) -> Schedule:
    """The config's schedule at absolute `eta_trgt` and `eta_init` (for adaptive warmup,
    the linear schedule it replaces: its floor and its decay)."""
    adaptive = config.warmup_shape == "adaptive"
    return Schedule(
        eta_trgt=eta_trgt,
        warmup_steps=config.warmup_steps,
        eta_init=eta_init,
        shape="linear" if adaptive else config.resolved_warmup_shape,
        power=config.warmup_power,
        decay=config.decay,
        num_steps=config.num_steps,
        eta_min=config.eta_min,
        eta_min_relative=config.eta_min_relative_to == "eta_trgt",
        decay_power=config.decay_power,
    )


class TrialRates:
    """The rates of one trial, from its config, lambda0 and eta_c (absolute values)."""

    def __init__(self, config: TrialConfig, lambda0: float, eta_c: float | None) -> None:
        self.adaptive = config.warmup_shape == "adaptive"
        self.is_adam = config.optimizer.is_adam
        self.eta_trgt, self.eta_init = resolve_etas(config, lambda0, eta_c)
        schedule = schedule_of(config, self.eta_trgt, self.eta_init)
        if self.adaptive:
            optimizer = build_optimizer(config.optimizer.name, **config.optimizer.options())
            self.controller = AdaptiveWarmup(
                schedule,
                optimizer.largest_stable_rate,
                safety=config.adaptive_safety,
                growth=config.adaptive_growth,
                every=config.adaptive_every,
            )
            self.state = self.controller.init()
        else:
            steps = torch.arange(1, config.num_steps + 1)
            self._table = schedule(steps).to(torch.float64).tolist()
            self._end = schedule.end_step

    def measures_at(self, t: int) -> bool:
        """Whether the rate of update t needs the curvature measured at its start."""
        return self.adaptive and self.controller.measures_at(self.state, t)

    def rate(
        self,
        t: int,
        sharpness: float | None = None,
        preconditioned_sharpness: float | None = None,
    ) -> float:
        """The rate of update t (absolute), given what was measured at its start (None:
        not measured; the last measurement holds)."""
        if not self.adaptive:
            return self._table[t - 1]
        curvature = preconditioned_sharpness if self.is_adam else sharpness
        self.state = self.controller.update(self.state, t, curvature)
        return self.state.rate

    @property
    def end_step(self) -> int | None:
        """The first update at eta_trgt (None while adaptive warmup has not reached it)."""
        return self.state.end_step if self.adaptive else self._end

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (the controller's state; nothing for fixed schedules)."""
        return dataclasses.asdict(self.state) if self.adaptive else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s output."""
        if self.adaptive:
            self.state = AdaptiveState(**state)
