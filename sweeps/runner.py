"""Run a sweep on Ray Tune: embedded local Ray or an existing cluster.

The sweep expands its grid itself (one `tune.grid_search` over the list of
trials, so Ray never expands several keys), skips trials whose summary file
already records an ending (completed, diverged, stuck or stopped), and runs the
rest as Ray Tune trials. Every run resumes: re-running a finished sweep runs
nothing, and an interrupted one runs only what did not end. Workers write their
own Parquet files; those files are the source of truth for resume, status and
exit codes. The driver reads the sweep's statuses once, at planning, and keeps
them current from the trials' own final reports (`Ledger`); only trials that
never reported an ending are looked up again, by their own files. A run also
keeps the sweep's status cache (`results.store.STATUS_CACHE`) current, every
`CACHE_REFRESH_S` seconds while trials run and when they are done, so that
planning a resume opens only the summaries written since, not the whole sweep's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

# Tune's legacy reporter honours verbose=0; the new one prints tables anyway. We
# print our own progress line.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray
from ray import tune

from results import child, read_statuses, read_summaries, resolve, write_spec
from results.schema import ENDED, STATUSES
from sweeps.packing import concurrent_workers, group_into_packs, resolve_pack_size
from sweeps.spec import PlannedTrial, SweepSpec, expand, make_trial, resolved_yaml
from trials.tune import ID_KEY, overrides_of, pack_trainable, trainable


class ClusterError(RuntimeError):
    """The Ray cluster at `--address` cannot be joined; the message says what to fix."""


# How often a running sweep brings its status cache up to date (reading the summaries
# written since the last time).
CACHE_REFRESH_S = 300.0


class Ledger:
    """`{trial_id: status}` of a sweep: read from its files once, then kept current from
    the trials' final reports.

    `update_cache=True` (a run, not a dry run) also writes the sweep's status cache
    when it reads the statuses, and on `refresh_cache`.
    """

    def __init__(self, results: str, sweep: str, update_cache: bool = False) -> None:
        self.results, self.sweep, self.update_cache = results, sweep, update_cache
        self.statuses: dict[str, str] = read_statuses(results, sweep, update_cache=update_cache)
        self.reported: set[str] = set()

    def refresh_cache(self) -> None:
        """Bring the status cache up to date with the summary files (reads the new ones)."""
        if self.update_cache:
            read_statuses(self.results, self.sweep, update_cache=True)

    def record(self, trial_id: str, status: str) -> None:
        """A trial reported how it ended (after writing its files)."""
        if status in STATUSES:
            self.statuses[trial_id] = status
            self.reported.add(trial_id)

    def ended(self, trial_id: str) -> bool:
        """Whether the trial has an ending a rerun keeps (anything but error)."""
        return self.statuses.get(trial_id) in ENDED

    def settle(self, trial_ids: Iterable[str]) -> None:
        """Look up, by their own summary files, the trials that have not ended and did not
        report in this run (a worker that died after writing, a trial a scheduler stopped)."""
        unknown = [t for t in trial_ids if t not in self.reported and not self.ended(t)]
        if unknown:
            self.statuses.update(read_summaries(self.results, self.sweep, unknown))


@dataclass
class SweepOutcome:
    """How a sweep run ended: statuses of its trials and the CLI exit code."""

    planned: int
    skipped: int
    counts: Counter = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    stopped_early: int = 0  # trials a scheduler (ASHA) stopped; also counted as `stopped`

    @property
    def exit_code(self) -> int:
        """0 when every trial ended (stopped by a scheduler counts as ended), 1 when some
        ended in error or never wrote a summary."""
        return 1 if self.counts.get("error", 0) or self.missing else 0


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join `address`, or start an embedded Ray bound to 127.0.0.1 only.

    Raises `ClusterError` (one line naming the fix) when the cluster cannot be joined.
    """
    if ray.is_initialized():
        return
    if address:
        _join_cluster(address)
        return
    # A new local Ray turns token authentication on by default and logs a warning that it
    # did, on every run; that is the setting we want, so drop that one notice.
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
    quiet = _DropMessage("Token authentication is enabled for this Ray cluster")
    notice.addFilter(quiet)
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
        notice.removeFilter(quiet)


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with a given text."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _join_cluster(address: str) -> None:
    """`ray.init(address)`, with Ray's retry lines swallowed and a one-line error instead."""
    host, _, port = address.rpartition(":")
    if address != "auto" and "://" not in address:
        if not host or not port.isdigit():
            raise ClusterError(
                f"--address {address}: expected host:port (e.g. 10.0.0.5:6379) or auto"
            )
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ClusterError(
                f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                "give the head node's GCS address (ray start --head prints it), or auto on a node"
            ) from None
    with _captured_stderr() as captured:
        try:
            ray.init(address=address, log_to_driver=False)
            error = None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            error = exc
    text = "".join(captured)
    if error is None:
        sys.stderr.write(text)
        return
    if "InvalidAuthToken" in text or "Unauthenticated" in text or "auth" in str(error).lower():
        raise ClusterError(
            f"--address {address}: the cluster requires token authentication; set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token "
            "(ray get-auth-token on the head node prints it)"
        ) from None
    raise ClusterError(f"--address {address}: cannot join the Ray cluster: {error}") from None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 (where Ray's C++ core logs) to a temporary file meanwhile;
    the yielded list holds its text afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read())


class Progress(tune.Callback):
    """One progress line per change: ended trials by status, running, and an ETA.

    Trials report how they ended in their final result (a pack: under `members`, and
    under `ended_members` in progress reports as its members end); each ending is
    recorded in the sweep's `Ledger` once, however often Tune repeats the last result.
    """

    def __init__(self, total: int, ledger: Ledger | None = None, stream: TextIO = sys.stderr):
        self.total, self.ledger, self.stream = total, ledger, stream
        self.ended: dict[str, str] = {}
        self.running: set[str] = set()
        self.start = time.monotonic()
        self._shown: tuple | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment (tuner.pkl); streams such as
        # Jupyter's or pytest's do not pickle, and a restored run prints to stderr.
        return {**self.__dict__, "stream": None, "ledger": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=state["stream"] or sys.stderr)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._print()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        members = result.get("members", result.get("ended_members"))
        if isinstance(members, dict):
            endings = {tid: m.get("status") for tid, m in members.items()}
        else:
            endings = {result.get(ID_KEY): result.get("status")}
        endings = {t: s for t, s in endings.items() if t and s in STATUSES}
        if endings:
            for trial_id, status in endings.items():
                self.ended[trial_id] = status
                if self.ledger is not None:
                    self.ledger.record(trial_id, status)
            if "ended_members" not in result:  # the final report: the Tune trial is done
                self.running.discard(trial.trial_id)
            self._print()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._print()

    def finish(self) -> None:
        """The last line, without an ETA."""
        self._print(final=True)

    def _print(self, final: bool = False) -> None:
        counts = Counter(self.ended.values())
        key = (tuple(counts[s] for s in STATUSES), len(self.running), final)
        if key == self._shown:
            return
        self._shown = key
        done = len(self.ended)
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else math.nan
        parts = [f"{done}/{self.total} ended"]
        parts += [f"{s} {counts[s]}" for s in STATUSES]
        parts += [f"running {len(self.running)}", f"elapsed {elapsed:.0f}s"]
        if not final:
            parts.append(f"ETA {eta:.0f}s" if math.isfinite(eta) else "ETA ?")
        end = "\n" if final or not self.stream.isatty() else ""
        self.stream.write(("\r" if self.stream.isatty() else "") + " | ".join(parts) + end)
        self.stream.flush()


@contextlib.contextmanager
def _refreshing_cache(ledger: Ledger, every_s: float | None = None) -> Iterator[None]:
    """While the body runs trials, refresh the ledger's status cache every `every_s`
    seconds (default `CACHE_REFRESH_S`) in the background, and once more after it."""
    stop = threading.Event()

    def refresh_until_stopped() -> None:
        while not stop.wait(CACHE_REFRESH_S if every_s is None else every_s):
            # The cache only saves reading: an error here (a store hiccup) must not end
            # the run, and the next refresh, or the next run's planning, reads what it missed.
            with contextlib.suppress(Exception):
                ledger.refresh_cache()

    thread = threading.Thread(target=refresh_until_stopped, name="status-cache", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    ledger.refresh_cache()


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
    progress: Progress,
    tune_config: tune.TuneConfig | None = None,
    run_name: str | None = None,
    slots: int | None = None,
) -> tune.Tuner:
    """A Tuner of `trainable`, or of `pack_trainable` with `slots` trials at once per pack."""
    common = dict(base=spec.base, results=results, sweep=spec.name, cpus=spec.resources.cpu)
    if slots is None:
        fn = tune.with_parameters(trainable, **common)
    else:
        fn = tune.with_parameters(pack_trainable, slots=slots, **common)
    fn = tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    # Tune keeps its experiment state next to the results, through the same filesystem.
    storage_fs, storage_path = resolve(child(results, spec.name))
    run_config = tune.RunConfig(
        name=run_name or "tune",
        storage_path=storage_path,
        storage_filesystem=storage_fs,
        failure_config=tune.FailureConfig(max_failures=spec.failure.retries),
        callbacks=[progress, *_logger_callbacks(spec)],
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
    planned = expand(spec)
    pending = _pending(planned, Ledger(results, spec.name))
    return pending, len(planned) - len(pending)


def _pending(planned: list[PlannedTrial], ledger: Ledger) -> list[PlannedTrial]:
    return [p for p in planned if not ledger.ended(p.trial_id)]


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
    if address:
        init_ray(address, num_cpus)  # a cluster that cannot be joined leaves nothing written
    write_spec(results, spec.name, resolved_yaml(spec))
    ledger = Ledger(results, spec.name, update_cache=True)
    if spec.search.kind == "optuna":
        return _run_optuna(spec, results, ledger, address, stream, num_cpus)
    if spec.search.kind == "boundary":
        return _run_boundary(spec, results, ledger, address, stream, num_cpus)
    planned = expand(spec)
    pending = _pending(planned, ledger)
    skipped = len(planned) - len(pending)
    stream.write(f"sweep {spec.name}: {len(pending)} to run, {skipped} already ended\n")
    if pending:
        init_ray(address, num_cpus)
        progress = Progress(len(pending), ledger, stream)
        slots = resolve_pack_size(spec.pack_size, pending, spec.resources.cpu)
        if slots > 1:
            # Resume is per member: only pending trials are packed.
            packs = group_into_packs(pending, slots, concurrent_workers(spec.resources.cpu))
            stream.write(
                f"sweep {spec.name}: {len(packs)} packs, each training up to {slots} trials "
                "at once\n"
            )
            space = {"pack": tune.grid_search([[p.overrides for p in pack] for pack in packs])}
            tuner = _tuner(spec, results, space, progress, slots=slots)
        else:
            space = {"overrides": tune.grid_search([p.overrides for p in pending])}
            tuner = _tuner(spec, results, space, progress)
        with _refreshing_cache(ledger):
            tuner.fit()
        progress.finish()
    return _outcome(ledger, [p.trial_id for p in planned], skipped)


def _outcome(ledger: Ledger, trial_ids: list[str], skipped: int) -> SweepOutcome:
    ledger.settle(trial_ids)
    outcome = SweepOutcome(planned=len(trial_ids), skipped=skipped)
    for trial_id in trial_ids:
        status = ledger.statuses.get(trial_id)
        if status is None:
            outcome.missing.append(trial_id)
        else:
            outcome.counts[status] += 1
    return outcome


def _optuna_space(spec: SweepSpec) -> dict[str, Any]:
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
    if len(spec.seeds) > 1:
        space["seed"] = tune.choice(spec.seeds)  # sets init_seed and data_seed (see overrides_of)
    else:
        for key in ("init_seed", "data_seed"):
            if key not in spec.grid:  # a swept seed keeps its own axis
                space[key] = spec.seeds[0]
    return space


def _scheduler(spec: SweepSpec) -> Any:
    asha = spec.search.asha_config
    if asha is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        metric="train_loss",
        mode="min",
        max_t=asha.max_t or int(spec.base.get("num_steps", 100)),
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
    )


def _run_optuna(
    spec: SweepSpec,
    results: str,
    ledger: Ledger,
    address: str | None,
    stream: TextIO,
    num_cpus: int | None,
) -> SweepOutcome:
    """Optuna through Ray Tune: `num_samples` distinct trials in all, counting those that
    ended in earlier runs; never a trial id twice (see `sweeps.search.UniqueSearch`)."""
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.search import UniqueSearch

    search = spec.search
    space = _optuna_space(spec)
    planned = expand(spec) if spec.is_finite else None
    grid = [p.trial_id for p in planned] if planned is not None else None
    in_sweep = set(grid) if grid is not None else set(ledger.statuses)
    ended = [t for t in in_sweep if ledger.ended(t)]
    todo = max(0, search.num_samples - len(ended))
    if grid is not None:
        todo = min(todo, len(grid) - len(ended))
    stream.write(
        f"sweep {spec.name}: optuna, {search.num_samples} samples, {todo} to run, "
        f"{len(ended)} already ended\n"
    )
    searcher = UniqueSearch(
        OptunaSearch(metric=search.metric, mode=search.mode, seed=spec.seeds[0]),
        trial_id_of=lambda config: make_trial(spec, overrides_of(config)).trial_id,
        taken=ended,
        grid=[p.overrides for p in planned] if planned is not None else None,
    )
    if todo:
        init_ray(address, num_cpus)
        progress = Progress(todo, ledger, stream)
        tune_config = tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(spec), num_samples=todo
        )
        with _refreshing_cache(ledger):
            _tuner(spec, results, space, progress, tune_config).fit()
        progress.finish()
    ran = list(searcher.started.values())
    outcome = _outcome(ledger, list(dict.fromkeys([*ended, *ran])), len(ended))
    outcome.stopped_early = outcome.counts.get("stopped", 0)
    return outcome


def _run_boundary(
    spec: SweepSpec,
    results: str,
    ledger: Ledger,
    address: str | None,
    stream: TextIO,
    num_cpus: int | None,
) -> SweepOutcome:
    """Bisect log2(eta_trgt) per point of the other axes, a round of trials at a time."""
    from sweeps.boundary import BoundarySearch

    search = BoundarySearch(spec)
    all_ids: list[str] = []
    round_index = skipped = 0
    while True:
        batch = search.next_round()
        if not batch:
            break
        round_index += 1
        todo = [p for p in batch if not ledger.ended(p.trial_id)]
        skipped += len(batch) - len(todo)
        stream.write(
            f"sweep {spec.name}: boundary round {round_index}, "
            f"{len(todo)} to run, {len(batch) - len(todo)} already ended\n"
        )
        if todo:
            init_ray(address, num_cpus)
            progress = Progress(len(todo), ledger, stream)
            space = {"overrides": tune.grid_search([p.overrides for p in todo])}
            with _refreshing_cache(ledger):
                _tuner(spec, results, space, progress, run_name=f"round{round_index}").fit()
            progress.finish()
            ledger.settle(p.trial_id for p in todo)
        search.record({p.trial_id: ledger.statuses.get(p.trial_id) for p in batch})
        all_ids += [p.trial_id for p in batch]
    stream.write(search.describe())
    return _outcome(ledger, list(dict.fromkeys(all_ids)), skipped)


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


__all__ = [
    "ClusterError",
    "Ledger",
    "SweepOutcome",
    "dry_run",
    "init_ray",
    "make_trial",
    "pending_trials",
    "run_sweep",
]
