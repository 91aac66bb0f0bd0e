"""Tune callbacks told once of each of our trials that ends, with its swept values.

A Tune trial is a pack of our trials (one, unless the sweep packs), so Tune's own
per-trial hooks name packs; `MemberCallback` turns the packs' reports
(`trials.tune.member_endings`) into one `trial_ended` call per trial id, however
often Tune repeats a result. It is the base of the progress display
(`sweeps.progress`) and of the experiment trackers (`sweeps.tracking`).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from sweeps.grid import make_trial
from sweeps.schema import RelativeAxis, SweepSpec
from trials.tune import member_endings, members_of

__all__ = ["MemberCallback", "swept_values"]

RELATIVE_SUFFIX = "*lambda0"  # a relative eta_trgt axis's value is eta_trgt * lambda0


class MemberCallback(tune.Callback):
    """Calls `trial_ended` once for each trial that a Tune trial's reports say ended.

    `spec` (None: unknown) names the swept axes, for `swept`.
    """

    def __init__(self, spec: SweepSpec | None = None) -> None:
        self.spec = spec
        self.seen: set[str] = set()
        self._packs: dict[str, dict[str, dict[str, Any]]] = {}  # Tune id -> id -> overrides

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; the cache is rebuilt on demand.
        return {**self.__dict__, "_packs": {}}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        for trial_id, metrics in member_endings(result).items():
            if trial_id not in self.seen:
                self.seen.add(trial_id)
                self.trial_ended(trial, trial_id, metrics)

    def trial_ended(self, tune_trial: Any, trial_id: str, metrics: dict[str, Any]) -> None:
        """Trial `trial_id`, a member of `tune_trial`, ended with these final metrics
        (`trials.tune.FINAL_METRICS`, status included)."""
        raise NotImplementedError

    def swept(self, tune_trial: Any, trial_id: str) -> dict[str, Any]:
        """The trial's values of the sweep's axes (`swept_values`; {} without a spec)."""
        if self.spec is None:
            return {}
        members = members_of(tune_trial.config)
        if len(members) == 1:
            return swept_values(self.spec, members[0])
        if tune_trial.trial_id not in self._packs:
            # A pack's config lists its members' overrides, not their ids: computed once.
            self._packs[tune_trial.trial_id] = {
                make_trial(self.spec, overrides).trial_id: overrides for overrides in members
            }
        return swept_values(self.spec, self._packs[tune_trial.trial_id].get(trial_id, {}))


def swept_values(spec: SweepSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """A trial's values of the sweep's axes, by axis name: a relative `eta_trgt` as
    `eta_trgt*lambda0`, and `seed` when the sweep has several seeds."""
    values: dict[str, Any] = {}
    for axis, axis_values in spec.grid.items():
        if axis in overrides:
            relative = isinstance(axis_values, RelativeAxis)
            values[axis + RELATIVE_SUFFIX if relative else axis] = overrides[axis]
    if len(spec.seeds) > 1:
        values["seed"] = overrides.get("init_seed", overrides.get("data_seed"))
    return values
