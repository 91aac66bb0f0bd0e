"""Divergence-boundary search: the largest trainable `eta_trgt`, by bisection in log2.

For every point of the other axes (and every seed) the search keeps a bracket
`[largest trainable, smallest failing]` of log2(eta_trgt). A trial fails by the rule of
`results.divergence_boundary`: it diverged, or it got stuck (unless
`search.stuck_trainable`), so the search and `analyze` draw the same boundary. It first tries
both ends of the `eta_trgt` axis, then halves the bracket until it is at most
`search.resolution` wide. Each round is one batch of trials, one per open
point, so the points run in parallel. A trial that ended in `error` closes its
point without a verdict. The search is a pure function of the statuses it is
told, so a re-run over the same results makes the same choices (resume).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from results.analysis import failed_statuses, failure_rule
from sweeps.grid import PlannedTrial, axis_values, make_trial
from sweeps.schema import RelativeAxis, SweepSpec

__all__ = ["BoundarySearch", "Bracket"]


@dataclass
class Bracket:
    """What is known about one point: log2 eta of the largest trainable and smallest failing."""

    point: dict[str, Any]
    lo: float  # log2 of the axis' smallest eta
    hi: float  # log2 of the axis' largest eta
    trainable: float | None = None
    failing: float | None = None
    closed: bool = False  # a trial ended in error: no verdict for this point

    def next_probe(self, resolution: float) -> list[float]:
        """log2 etas to try next; empty when this point is settled."""
        if self.closed:
            return []
        if self.trainable is None and self.failing is None:
            return [self.lo, self.hi]
        if self.trainable is None or self.failing is None:
            return []  # the whole axis is trainable, or nothing is
        if self.failing - self.trainable <= resolution:
            return []
        return [(self.trainable + self.failing) / 2]


class BoundarySearch:
    """Rounds of trials that bisect the divergence boundary of every point."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        axis = spec.grid["eta_trgt"]
        self.relative = isinstance(axis, RelativeAxis)
        etas = axis.values if self.relative else axis
        self.lo, self.hi = math.log2(min(etas)), math.log2(max(etas))
        others = {k: v for k, v in axis_values(spec).items() if k != "eta_trgt"}
        self.brackets = [
            Bracket({k: v for part in combo for k, v in part.items()}, self.lo, self.hi)
            for combo in itertools.product(*others.values())
        ]
        self._in_flight: dict[str, tuple[Bracket, float]] = {}
        self.failures = failed_statuses(spec.search.stuck_trainable)

    def _trial(self, bracket: Bracket, log_eta: float) -> PlannedTrial:
        eta = {"eta_trgt": float(2.0**log_eta)}
        if self.relative:
            eta["eta_trgt_relative_to"] = "lambda0"
        return make_trial(self.spec, {**bracket.point, **eta})

    def next_round(self) -> list[PlannedTrial]:
        """The trials of the next round (empty when every point is settled)."""
        self._in_flight = {}
        batch = []
        for bracket in self.brackets:
            for log_eta in bracket.next_probe(self.spec.search.resolution):
                trial = self._trial(bracket, log_eta)
                self._in_flight[trial.trial_id] = (bracket, log_eta)
                batch.append(trial)
        return batch

    def record(self, statuses: dict[str, str | None]) -> None:
        """Update the brackets with the statuses of the last round's trials."""
        for trial_id, (bracket, log_eta) in self._in_flight.items():
            status = statuses.get(trial_id)
            if status in (None, "error"):
                bracket.closed = True
            elif status in self.failures:
                known = math.inf if bracket.failing is None else bracket.failing  # 0.0 is eta 1
                bracket.failing = min(log_eta, known)
            elif bracket.trainable is None or log_eta > bracket.trainable:
                bracket.trainable = log_eta
        self._in_flight = {}

    def describe(self) -> str:
        """A table of the brackets found, one line per point."""
        unit = " x 1/lambda0" if self.relative else ""
        rule = failure_rule(self.spec.search.stuck_trainable)
        lines = [f"divergence boundary (largest trainable eta_trgt{unit}; {rule}):"]
        for b in self.brackets:
            where = ", ".join(f"{k}={v}" for k, v in b.point.items())
            fmt = lambda x: "-" if x is None else f"{2.0**x:.4g}"  # noqa: E731
            verdict = "error" if b.closed else f"{fmt(b.trainable)} (fails at {fmt(b.failing)})"
            lines.append(f"  {where}: {verdict}")
        return "\n".join(lines) + "\n"
