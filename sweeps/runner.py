"""Run a sweep on Ray Tune, embedded local Ray or an existing cluster: the full grid,
Optuna, or a divergence-boundary search.

The sweep expands its grid itself (one `tune.grid_search` over the list of
packs of trials, so Ray never expands several keys), skips trials whose summary
file already records an ending (completed, diverged, stuck or stopped), and
runs the rest in packs (`sweeps.packing`): each pack is one Ray Tune trial that
trains `pack_size` of its trials at a time. Every run resumes: re-running a
finished sweep runs nothing, and an interrupted one runs only what did not end.
Workers write their own Parquet files; those files are the source of truth for
resume, status and exit codes (`sweeps.ledger`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from results import write_spec
from sweeps.boundary import BoundarySearch
from sweeps.grid import PlannedTrial, expand, make_trial
from sweeps.ledger import Ledger, SweepOutcome, refreshing_cache
from sweeps.lock import sweep_lock
from sweeps.packing import concurrent_workers, group_into_packs, resolve_pack_size
from sweeps.progress import Progress
from sweeps.ray_private import no_callback_census
from sweeps.ray_session import init_ray
from sweeps.schema import RangeAxis, RelativeAxis, SweepSpec
from sweeps.search import UniqueSearch
from sweeps.spec import resolved_yaml
from sweeps.study import persisted_study
from sweeps.tracking import check_trackers
from sweeps.tuner import build_tuner
from trials.tune import overrides_of

__all__ = ["dry_run", "pending_trials", "run_sweep"]


def run_sweep(
    spec: SweepSpec,
    results: str,
    *,
    address: str | None = None,
    stream: TextIO | None = None,
    num_cpus: int | None = None,
    verbosity: int = 1,
) -> SweepOutcome:
    """Run every trial of `spec` that has not ended yet under `results` (a local path or
    URI); return the outcome. `address` joins a Ray cluster (default: an embedded Ray of
    `num_cpus` CPUs); progress goes to `stream` (default stderr), only trials that end
    in error at `verbosity` 0, Ray's own logs too at 2.

    Raises `sweeps.lock.SweepBusy`, having written nothing, while another run of the
    same local sweep is in progress.
    """
    stream = sys.stderr if stream is None else stream  # looked up now: it may be redirected
    # Tune runs each trial in its own working directory: workers need an absolute path.
    results = results if "://" in results else os.path.abspath(results)
    check_trackers(spec)
    if address:  # a cluster that cannot be joined leaves nothing written
        init_ray(address, num_cpus, log_to_driver=verbosity > 1)
    with sweep_lock(results, spec.name):
        write_spec(results, spec.name, resolved_yaml(spec))
        ledger = Ledger(results, spec.name, update_cache=True)
        run = _Run(spec, results, ledger, stream, address, num_cpus, verbosity)
        if spec.search.kind == "optuna":
            return _run_optuna(run)
        if spec.search.kind == "boundary":
            return _run_boundary(run)
        return _run_grid(run)


def pending_trials(spec: SweepSpec, results: str) -> tuple[list[PlannedTrial], int]:
    """Trials of the grid without an ended summary file yet, and how many were skipped."""
    planned = expand(spec)
    ledger = Ledger(results, spec.name)
    pending = [p for p in planned if not ledger.ended(p.trial_id)]
    return pending, len(planned) - len(pending)


def dry_run(spec: SweepSpec, results: str, stream: TextIO | None = None) -> int:
    """Print what `run_sweep` would do without running or writing anything; returns the
    CLI exit code (0)."""
    stream = sys.stdout if stream is None else stream  # looked up now: it may be redirected
    pending, skipped = pending_trials(spec, results)
    stream.write(
        f"sweep {spec.name}: {len(pending) + skipped} trials, "
        f"{len(pending)} to run, {skipped} already ended\n"
    )
    for p in pending:
        where = ", ".join(f"{k}={v}" for k, v in p.overrides.items())
        stream.write(f"  {p.trial_id}  {where}\n")
    return 0


@dataclass
class _Run:
    """What every strategy of one `run_sweep` call works with."""

    spec: SweepSpec
    results: str
    ledger: Ledger
    stream: TextIO
    address: str | None
    num_cpus: int | None
    verbosity: int = 1

    def say(self, text: str) -> None:
        """One line about the run on its stream, unless quiet."""
        if self.verbosity:
            self.stream.write(text + "\n")

    def init_ray(self) -> None:
        """Join or start Ray (once), with Ray's own logs on the driver when verbose."""
        init_ray(self.address, self.num_cpus, log_to_driver=self.verbosity > 1)


def _fit(
    run: _Run,
    param_space: dict[str, Any],
    trials: int,
    *,
    tune_config: tune.TuneConfig | None = None,
    run_name: str | None = None,
    slots: int | None = None,
) -> None:
    """Run `trials` trials of `param_space` on Ray Tune, with a progress line and the
    status cache kept current (see `sweeps.tuner.build_tuner` for the keywords)."""
    run.init_ray()
    progress = Progress(trials, run.ledger, run.stream, spec=run.spec, verbosity=run.verbosity)
    tuner = build_tuner(
        run.spec,
        run.results,
        param_space,
        [progress],
        tune_config=tune_config,
        run_name=run_name,
        slots=slots,
    )
    with refreshing_cache(run.ledger), no_callback_census():
        tuner.fit()
    progress.finish()


def _fit_planned(run: _Run, trials: list[PlannedTrial], run_name: str | None = None) -> None:
    """Run planned trials in packs of `pack_size` slots (resolved for them and the
    cluster; said in one line); resume is per trial, so only the trials given are packed.
    With one slot a pack runs its trials back to back, one Ray Tune trial for several."""
    spec = run.spec
    run.init_ray()  # the pack size depends on the cluster's workers
    choice = resolve_pack_size(spec.pack_size, trials, spec.resources.cpu)
    packs = group_into_packs(trials, choice.slots, concurrent_workers(spec.resources.cpu))
    if spec.pack_size == "auto" or choice.slots != spec.pack_size:  # what was chosen, and why
        run.say(f"sweep {spec.name}: pack_size {choice.slots}: {choice.reason}")
    how = (
        f"each training up to {choice.slots} trials at once"
        if choice.slots > 1
        else "each training its trials one after another"
    )
    run.say(f"sweep {spec.name}: {len(packs)} packs, {how}")
    space = {"pack": tune.grid_search([[p.overrides for p in pack] for pack in packs])}
    _fit(run, space, len(trials), run_name=run_name, slots=choice.slots)


def _run_grid(run: _Run) -> SweepOutcome:
    """Every trial of the grid that has not ended."""
    planned = expand(run.spec)
    pending = [p for p in planned if not run.ledger.ended(p.trial_id)]
    skipped = len(planned) - len(pending)
    run.say(f"sweep {run.spec.name}: {len(pending)} to run, {skipped} already ended")
    if pending:
        _fit_planned(run, pending)
    return run.ledger.outcome([p.trial_id for p in planned], skipped)


def _run_boundary(run: _Run) -> SweepOutcome:
    """Bisect log2(eta_trgt) per point of the other axes, a round of trials at a time."""
    search = BoundarySearch(run.spec)
    all_ids: list[str] = []
    round_index = skipped = 0
    while batch := search.next_round():
        round_index += 1
        todo = [p for p in batch if not run.ledger.ended(p.trial_id)]
        skipped += len(batch) - len(todo)
        run.say(
            f"sweep {run.spec.name}: boundary round {round_index}, "
            f"{len(todo)} to run, {len(batch) - len(todo)} already ended"
        )
        if todo:
            _fit_planned(run, todo, run_name=f"round{round_index}")
            run.ledger.settle(p.trial_id for p in todo)
        search.record({p.trial_id: run.ledger.statuses.get(p.trial_id) for p in batch})
        all_ids += [p.trial_id for p in batch]
    run.say(search.describe().rstrip("\n"))
    return run.ledger.outcome(list(dict.fromkeys(all_ids)), skipped)


def _run_optuna(run: _Run) -> SweepOutcome:
    """Optuna through Ray Tune: `num_samples` distinct trials in all, counting those that
    ended in earlier runs; never a trial id twice (see `sweeps.search.UniqueSearch`)."""
    spec, ledger, search = run.spec, run.ledger, run.spec.search
    planned = expand(spec) if spec.is_finite else None
    grid = [p.trial_id for p in planned] if planned is not None else None
    in_sweep = set(grid) if grid is not None else set(ledger.statuses)
    ended = [t for t in in_sweep if ledger.ended(t)]
    todo = max(0, search.num_samples - len(ended))
    if grid is not None:
        todo = min(todo, len(grid) - len(ended))
    run.say(
        f"sweep {spec.name}: optuna, {search.num_samples} samples, {todo} to run, "
        f"{len(ended)} already ended"
    )
    ran: list[str] = []
    if todo:
        # The study lives in the sweep's optuna.db: optuna-dashboard opens it, reruns go on.
        with persisted_study(run.results, spec.name) as storage:
            inner = OptunaSearch(
                metric=search.metric,
                mode=search.mode,
                seed=spec.seeds[0],
                study_name=spec.name,
                storage=storage,
            )
            searcher = UniqueSearch(
                inner,
                trial_id_of=lambda config: make_trial(spec, overrides_of(config)).trial_id,
                taken=ended,
                grid=[p.overrides for p in planned] if planned is not None else None,
            )
            tune_config = tune.TuneConfig(
                search_alg=searcher, scheduler=_scheduler(spec), num_samples=todo
            )
            _fit(run, _optuna_space(spec), todo, tune_config=tune_config)
        ran = list(searcher.started.values())
    outcome = ledger.outcome(list(dict.fromkeys([*ended, *ran])), len(ended))
    outcome.stopped_early = outcome.counts.get("stopped", 0)
    return outcome


def _optuna_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's axes as Tune's sampling domains, in flat dotted keys."""
    space: dict[str, Any] = {}
    for axis, values in spec.grid.items():
        if isinstance(values, RelativeAxis):
            space["eta_trgt"] = tune.choice(values.values)
            space["eta_trgt_relative_to"] = "lambda0"
        elif isinstance(values, RangeAxis):
            space[axis] = (tune.loguniform if values.log else tune.uniform)(values.low, values.high)
        else:
            space[axis] = tune.choice(values)
    if len(spec.seeds) > 1:
        space["seed"] = tune.choice(spec.seeds)  # sets init_seed and data_seed (see overrides_of)
    else:
        for key in ("init_seed", "data_seed"):
            if key not in spec.grid:  # a swept seed keeps its own axis
                space[key] = spec.seeds[0]
    return space


def _scheduler(spec: SweepSpec) -> ASHAScheduler | None:
    """ASHA on the progress reports' train_loss, when the spec asks for it."""
    asha = spec.search.asha_config
    if asha is None:
        return None
    return ASHAScheduler(
        time_attr="step",
        metric="train_loss",
        mode="min",
        max_t=asha.max_t or int(spec.base.get("num_steps", 100)),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
    )
