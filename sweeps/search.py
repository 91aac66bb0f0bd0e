"""A Ray Tune searcher wrapper that never runs a trial id twice.

Optuna (through Tune's `OptunaSearch`) samples with replacement: over a finite
grid it proposes configurations that already ran, in this run or an earlier
one. `UniqueSearch` asks its inner searcher again for each such proposal (the
repeat is told back to it as pruned, so it moves on), and after
`MAX_REPEATS` repeats in a row takes the first grid point not yet taken, so a
finite grid is sampled without replacement until it is exhausted; then it
reports `FINISHED`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from ray.tune.search import Searcher

__all__ = ["MAX_REPEATS", "UniqueSearch"]

MAX_REPEATS = 50  # proposals of taken trials in a row before the next free grid point


class UniqueSearch(Searcher):
    """Wrap `inner` so that every suggested config has a trial id not in `taken` nor
    suggested before. `grid` (the finite grid's overrides, in order) enables the
    fall-back to free grid points and `FINISHED` once every point is taken."""

    def __init__(
        self,
        inner: Searcher,
        *,
        trial_id_of: Callable[[dict[str, Any]], str],
        taken: Iterable[str] = (),
        grid: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.trial_id_of = inner, trial_id_of
        self.taken: set[str] = set(taken)
        self.grid = grid
        self.started: dict[str, str] = {}  # Tune trial id -> our trial id
        self._inner_ids: dict[str, str] = {}  # Tune trial id -> the id the inner searcher knows
        self._from_grid: dict[str, dict[str, Any]] = {}  # Tune ids given a free grid point
        self._constants: dict[str, Any] = {}  # fixed values of the search space
        self._grid_ids = [trial_id_of({"overrides": o}) for o in grid] if grid else []
        self._asks = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec):
        """Forwarded to the inner searcher (Tune hands it the search space here)."""
        ok = self.inner.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.inner.metric, self.inner.mode
        self._constants = {k: v for k, v in config.items() if not hasattr(v, "sample")}
        return ok

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A config whose trial id is new, or FINISHED when a finite grid is exhausted."""
        if self.grid is not None and all(t in self.taken for t in self._grid_ids):
            return Searcher.FINISHED
        for _ in range(MAX_REPEATS):
            self._asks += 1
            ask_id = f"{trial_id}~{self._asks}"
            config = self.inner.suggest(ask_id)
            if config is None or config == Searcher.FINISHED:
                return config
            ours = self.trial_id_of({**self._constants, **config})
            if ours not in self.taken:
                self._inner_ids[trial_id] = ask_id
                return self._start(trial_id, ours, config)
            self.inner.on_trial_complete(ask_id, None, error=False)  # a repeat: pruned
        if self.grid is None:
            return None  # nothing new now; Tune asks again later
        for overrides, ours in zip(self.grid, self._grid_ids, strict=True):
            if ours not in self.taken:
                self._from_grid[trial_id] = overrides
                return self._start(trial_id, ours, dict(overrides))
        return Searcher.FINISHED

    def _start(self, trial_id: str, ours: str, config: dict[str, Any]) -> dict[str, Any]:
        self.taken.add(ours)
        self.started[trial_id] = ours
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Forwarded to the inner searcher for trials it proposed."""
        inner_id = self._inner_ids.get(trial_id)
        if inner_id is not None:
            self.inner.on_trial_result(inner_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Forwarded to the inner searcher; a free grid point's result is added to it."""
        inner_id = self._inner_ids.get(trial_id)
        if inner_id is not None:
            self.inner.on_trial_complete(inner_id, result, error=error)
            return
        value = (result or {}).get(self.metric)
        params = self._from_grid.get(trial_id)
        if params is not None and value is not None and hasattr(self.inner, "add_evaluated_point"):
            # The inner searcher may refuse the point (e.g. a NaN value): then it never learns it.
            with contextlib.suppress(KeyError, ValueError, TypeError, RuntimeError):
                self.inner.add_evaluated_point(params, value, error=error)
