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
from typing import Any

import torch

from trials.config import TrialConfig
from trials.trial import resolve_etas, resolve_schedule
from warmup_core.adaptive import AdaptiveState, AdaptiveWarmup
from warmup_core.optim import build_optimizer
from warmup_core.schedules import warmup_end_step


class TrialRates:
    """The rates of one trial, from its config, lambda0 and eta_c (absolute values)."""

    def __init__(self, config: TrialConfig, lambda0: float, eta_c: float | None) -> None:
        self.adaptive = config.warmup_shape == "adaptive"
        self.is_adam = config.optimizer.is_adam
        if self.adaptive:
            self.eta_trgt, self.eta_init = resolve_etas(config, lambda0, eta_c)
            self.controller = AdaptiveWarmup(
                eta_trgt=self.eta_trgt,
                largest_stable_rate=build_optimizer(
                    config.optimizer.name, **config.optimizer.options()
                ).largest_stable_rate,
                warmup_steps=config.warmup_steps,
                eta_init=self.eta_init,
                safety=config.adaptive_safety,
                growth=config.adaptive_growth,
                every=config.adaptive_every,
                decay=config.decay,
                num_steps=config.num_steps,
                eta_min=config.eta_min,
            )
            self.state = self.controller.init()
        else:
            self.eta_trgt, self.eta_init, schedule = resolve_schedule(config, lambda0, eta_c)
            steps = torch.arange(1, config.num_steps + 1)
            self._table = schedule(steps).to(torch.float64).tolist()
            self._end = warmup_end_step(
                eta_trgt=self.eta_trgt,
                warmup_steps=config.warmup_steps,
                eta_init=self.eta_init,
                shape=config.resolved_warmup_shape,
            )

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
