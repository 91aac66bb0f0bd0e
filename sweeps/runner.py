"""Run a sweep on Ray Tune: embedded local Ray or an existing cluster.

The sweep expands its grid itself (one `tune.grid_search` over the list of
trials, so Ray never expands several keys), skips trials whose summary file
already records an ending (completed, diverged or stuck), and runs the rest
as Ray Tune trials. Workers write their own Parquet files; those files are
the source of truth for resume, status and exit codes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

# Tune's legacy reporter honours verbose=0; the new one prints tables anyway. We
# print our own progress line.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray
from ray import tune

from results.schema import STATUSES
from results.store import completed_trial_ids, write_spec
from sweeps.packing import group_into_packs, resolve_pack_size
from sweeps.spec import PlannedTrial, SweepSpec, expand, make_trial, resolved_yaml
from trials.tune import pack_trainable, trainable

ENDED = ("completed", "diverged", "stuck")


@dataclass
class SweepOutcome:
    """How a sweep run ended: statuses of its trials and the CLI exit code."""

    planned: int
    skipped: int
    counts: Counter = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    stopped_early: int = 0  # trials an ASHA scheduler stopped (they write no files)

    @property
    def exit_code(self) -> int:
        """0 when every trial ended, 1 when some ended in error or never wrote a summary."""
        return 1 if self.counts.get("error", 0) or self.missing else 0


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join `address`, or start an embedded Ray bound to 127.0.0.1 only."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    # On Linux Ray swaps a loopback `_node_ip_address` for the machine's routable IP, and
    # GCS, raylet and workers then listen on every interface. Ray keeps loopback only
    # where it thinks clusters are unsupported; claim that for this start only, so that a
    # later `ray.init(address=...)` in the same process still finds its routable IP.
    from ray._private import ray_constants

    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode


class Progress(tune.Callback):
    """One live line: ended trials by status, running, and an ETA."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.stream = total, stream
        self.counts: Counter = Counter()
        self.running: set[str] = set()
        self.start = time.monotonic()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment (tuner.pkl); streams such as
        # Jupyter's or pytest's do not pickle, and a restored run prints to stderr.
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=state["stream"] or sys.stderr)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._print()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # A pack's final result carries each of its trials' final metrics under `members`.
        members = result.get("members")
        if isinstance(members, dict):
            statuses = [m.get("status") for m in members.values()]
        else:
            statuses = [result.get("status")]
        ended = [s for s in statuses if s in STATUSES]
        if ended:
            self.counts.update(ended)
            self.running.discard(trial.trial_id)
            self._print()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._print()

    def _print(self, final: bool = False) -> None:
        done = sum(self.counts.values())
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else math.nan
        parts = [f"{done}/{self.total} ended"]
        parts += [f"{s} {self.counts[s]}" for s in STATUSES]
        parts += [f"running {len(self.running)}", f"elapsed {elapsed:.0f}s"]
        if not final:
            parts.append(f"ETA {eta:.0f}s" if math.isfinite(eta) else "ETA ?")
        end = "\n" if final or not self.stream.isatty() else ""
        self.stream.write(("\r" if self.stream.isatty() else "") + " | ".join(parts) + end)
        self.stream.flush()


def _logger_callbacks(spec: SweepSpec) -> list[tune.Callback]:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks: list[tune.Callback] = [JsonLoggerCallback(), CSVLoggerCallback()]
    if spec.logging.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if spec.logging.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=spec.logging.mlflow_tracking_uri, experiment_name=spec.name
            )
        )
    return callbacks


def _tuner(
    spec: SweepSpec,
    results: str,
    param_space: dict[str, Any],
    total: int,
    stream: TextIO,
    tune_config: tune.TuneConfig | None = None,
    run_name: str | None = None,
    packed: bool = False,
) -> tune.Tuner:
    fn = tune.with_parameters(
        pack_trainable if packed else trainable,
        base=spec.base,
        results=results,
        sweep=spec.name,
        cpus=spec.resources.cpu,
    )
    fn = tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    storage = results if "://" in results else os.path.abspath(results)
    run_config = tune.RunConfig(
        name=run_name or "tune",
        storage_path=f"{storage.rstrip('/')}/{spec.name}",
        failure_config=tune.FailureConfig(max_failures=spec.failure.retries),
        callbacks=[Progress(total, stream), *_logger_callbacks(spec)],
        verbose=0,
    )
    tune_config = tune_config or tune.TuneConfig(reuse_actors=True)
    if spec.max_concurrent and tune_config.max_concurrent_trials is None:
        tune_config.max_concurrent_trials = spec.max_concurrent
    tune_config.trial_name_creator = _trial_name
    tune_config.trial_dirname_creator = _trial_name
    return tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _trial_name(trial) -> str:
    if "pack" in trial.config:
        return f"{trial.trial_id}_pack{len(trial.config['pack'])}"
    overrides = trial.config.get("overrides")
    if overrides is not None:
        return (
            f"{trial.trial_id}_"
            + "_".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())[:100]
        )
    return trial.trial_id


def pending_trials(spec: SweepSpec, results: str) -> tuple[list[PlannedTrial], int]:
    """Trials of the grid without an ended summary file yet, and how many were skipped."""
    done = completed_trial_ids(results, spec.name)
    planned = expand(spec)
    pending = [p for p in planned if done.get(p.trial_id) not in ENDED]
    return pending, len(planned) - len(pending)


def run_sweep(
    spec: SweepSpec,
    results: str,
    *,
    address: str | None = None,
    stream: TextIO | None = None,
    num_cpus: int | None = None,
) -> SweepOutcome:
    """Run every trial of `spec` that has not ended yet; return the outcome."""
    stream = sys.stderr if stream is None else stream  # looked up now: it may be redirected
    # Tune runs each trial in its own working directory: workers need an absolute path.
    results = results if "://" in results else os.path.abspath(results)
    write_spec(results, spec.name, resolved_yaml(spec))
    if spec.search.kind == "optuna":
        return _run_optuna(spec, results, address, stream, num_cpus)
    if spec.search.kind == "boundary":
        return _run_boundary(spec, results, address, stream, num_cpus)
    pending, skipped = pending_trials(spec, results)
    stream.write(f"sweep {spec.name}: {len(pending)} to run, {skipped} already ended\n")
    if pending:
        init_ray(address, num_cpus)
        pack_size = resolve_pack_size(spec.pack_size, pending, spec.resources.cpu)
        if pack_size > 1:
            # Resume is per member: only pending trials are packed.
            packs = group_into_packs(pending, pack_size)
            stream.write(f"sweep {spec.name}: {len(packs)} packs of up to {pack_size} trials\n")
            space = {"pack": tune.grid_search([[p.overrides for p in pack] for pack in packs])}
            _tuner(spec, results, space, len(pending), stream, packed=True).fit()
        else:
            space = {"overrides": tune.grid_search([p.overrides for p in pending])}
            _tuner(spec, results, space, len(pending), stream).fit()
    return _outcome(spec, results, [p.trial_id for p in expand(spec)], skipped)


def _outcome(spec: SweepSpec, results: str, trial_ids: list[str], skipped: int) -> SweepOutcome:
    statuses = completed_trial_ids(results, spec.name)
    outcome = SweepOutcome(planned=len(trial_ids), skipped=skipped)
    for trial_id in trial_ids:
        if trial_id in statuses:
            outcome.counts[statuses[trial_id]] += 1
        else:
            outcome.missing.append(trial_id)
    return outcome


def _run_optuna(
    spec: SweepSpec, results: str, address: str | None, stream: TextIO, num_cpus: int | None
) -> SweepOutcome:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.spec import RangeAxis, RelativeAxis

    space: dict[str, Any] = {}
    for axis, values in spec.grid.items():
        if isinstance(values, RelativeAxis):
            space["eta_trgt"] = tune.choice(values.values)
            space["eta_trgt_relative_to"] = "lambda0"
        elif isinstance(values, RangeAxis):
            space[axis] = (tune.loguniform if values.log else tune.uniform)(values.low, values.high)
        else:
            space[axis] = tune.choice(values)
    seed = tune.choice(spec.seeds) if len(spec.seeds) > 1 else spec.seeds[0]
    for key in ("init_seed", "data_seed"):
        if key not in spec.grid:  # a swept seed keeps its own axis
            space[key] = seed
    search = spec.search
    scheduler = None
    if search.asha:
        base_steps = int(spec.base.get("num_steps", 100))
        scheduler = ASHAScheduler(
            time_attr="step", metric="train_loss", mode="min", max_t=base_steps
        )
    tune_config = tune.TuneConfig(
        search_alg=OptunaSearch(metric=search.metric, mode=search.mode, seed=spec.seeds[0]),
        scheduler=scheduler,
        num_samples=search.num_samples,
    )
    init_ray(address, num_cpus)
    stream.write(f"sweep {spec.name}: optuna, {search.num_samples} samples\n")
    grid = _tuner(spec, results, space, search.num_samples, stream, tune_config).fit()
    # Tune overwrites a reported `trial_id` with its own: recompute ours from the config.
    ended = completed_trial_ids(results, spec.name)
    ids, stopped = [], 0
    for r in grid:
        trial_id = make_trial(spec, dict(r.config)).trial_id if r.config else "<unknown>"
        if search.asha and r.error is None and trial_id not in ended:
            stopped += 1  # ASHA ended it early by design: no files, not a failure
        else:
            ids.append(trial_id)
    outcome = _outcome(spec, results, ids, 0)
    outcome.stopped_early = stopped
    return outcome


def _run_boundary(
    spec: SweepSpec, results: str, address: str | None, stream: TextIO, num_cpus: int | None
) -> SweepOutcome:
    """Bisect log2(eta_trgt) per point of the other axes, a round of trials at a time."""
    from sweeps.boundary import BoundarySearch

    search = BoundarySearch(spec)
    init_ray(address, num_cpus)
    all_ids: list[str] = []
    round_index = 0
    while True:
        batch = search.next_round()
        if not batch:
            break
        round_index += 1
        done = completed_trial_ids(results, spec.name)
        todo = [p for p in batch if done.get(p.trial_id) not in ENDED]
        stream.write(
            f"sweep {spec.name}: boundary round {round_index}, "
            f"{len(todo)} to run, {len(batch) - len(todo)} already ended\n"
        )
        if todo:
            space = {"overrides": tune.grid_search([p.overrides for p in todo])}
            _tuner(spec, results, space, len(todo), stream, run_name=f"round{round_index}").fit()
        statuses = completed_trial_ids(results, spec.name)
        search.record({p.trial_id: statuses.get(p.trial_id) for p in batch})
        all_ids += [p.trial_id for p in batch]
    stream.write(search.describe())
    return _outcome(spec, results, list(dict.fromkeys(all_ids)), 0)


def dry_run(spec: SweepSpec, results: str, stream: TextIO | None = None) -> int:
    """Print what `run` would do without running or writing anything."""
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


__all__ = ["SweepOutcome", "dry_run", "init_ray", "make_trial", "run_sweep"]
