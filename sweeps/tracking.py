"""Experiment trackers fed from each trial's own files as it ends: TensorBoard, MLflow
and Weights & Biases (the spec's `logging` section).

A trial writes its steps table (every step, with every measurement: lr, losses,
accuracies, sharpness, pre-conditioned sharpness, threshold) before it reports its
ending. The driver then reads that table and the trial's summary and hands them to
each tracker, in a background thread: trials pay no Ray round trip per step, and a
packed trial is logged under its own id (Ray's per-Tune-trial logger callbacks would
name packs, with Ray's ids, and see only what a pack reports every few steps). Each
trial becomes one run named by its trial id:

- TensorBoard: `<results>/<sweep>/tensorboard/<trial_id>/`, a scalar per steps-table
  column at every step it was measured, the swept values and final metrics as hparams
  (`tensorboard --logdir <results>/<sweep>/tensorboard`).
- MLflow: experiment named by the sweep, a run per trial with its config as params, its
  steps as metrics by step, and tags `status` and `sweep`.
- Weights & Biases: project and entity from the spec, the sweep as group, config and
  history likewise, the final metrics as the run's summary. Ray's W&B callback makes a
  run per Tune trial (a pack), so it is not used.

Trackers see the trials that end in this run, not those that ended before. A tracker
that fails prints one warning and is left out for the rest of the run: the sweep's
Parquet files are the record.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results import STEP_SCHEMA, child
from results.store import STEPS_DIR, TRIALS_DIR, resolve
from sweeps.members import MemberCallback
from sweeps.schema import SpecError, SweepSpec
from trials.tune import FINAL_METRICS, TEXT_METRICS

__all__ = [
    "METRICS",
    "TENSORBOARD_DIR",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracking",
    "TrialRecord",
    "WandbTracker",
    "check_trackers",
    "make_trackers",
    "read_record",
]

TENSORBOARD_DIR = "tensorboard"
# Steps-table columns logged at every step where they were measured (not NaN).
METRICS = tuple(name for name in STEP_SCHEMA.names if name not in ("trial_id", "step"))
# Summary fields logged as the run's final metrics (the numbers among Tune's).
FINAL = tuple(k for k in FINAL_METRICS if k not in TEXT_METRICS)
MLFLOW_BATCH = 1000  # metrics per MLflow log_batch request (MLflow's limit)
MLFLOW_PARAMS = 100  # params per request (MLflow's limit)


@dataclass
class TrialRecord:
    """What a tracker logs of one ended trial."""

    trial_id: str
    sweep: str
    summary: dict[str, Any]  # the summary row: config columns, status, final metrics
    steps: dict[str, list]  # the steps table by column (empty when it could not be read)
    swept: dict[str, Any]  # its values of the sweep's axes (`sweeps.members.swept_values`)

    @property
    def status(self) -> str:
        """How the trial ended."""
        return str(self.summary.get("status"))

    def params(self) -> dict[str, Any]:
        """The trial's config and provenance (the summary's non-null fields that are not
        final metrics), and its swept values."""
        config = {k: v for k, v in self.summary.items() if v is not None and k not in FINAL}
        return {**config, **self.swept}

    def final(self) -> dict[str, float]:
        """The trial's final metrics that are numbers."""
        return {k: float(v) for k in FINAL if _finite(v := self.summary.get(k))}

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Each steps-table metric as (step, value) pairs, where it was measured."""
        steps = self.steps.get("step", [])
        return {
            name: [
                (s, float(v)) for s, v in zip(steps, self.steps[name], strict=True) if _finite(v)
            ]
            for name in METRICS
            if name in self.steps
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_record(results: str, sweep: str, trial_id: str, swept: dict[str, Any]) -> TrialRecord:
    """The trial's summary and steps table from the results store (steps empty when the
    trial wrote none, e.g. an error before its first step)."""
    base = child(results, sweep)
    fs, path = resolve(child(child(base, TRIALS_DIR), f"{trial_id}.parquet"))
    (summary,) = pq.read_table(path, filesystem=fs).to_pylist()
    fs, path = resolve(child(child(base, STEPS_DIR), f"{trial_id}.parquet"))
    try:
        steps = pq.read_table(path, filesystem=fs).to_pydict()
    except FileNotFoundError:
        steps = {}
    return TrialRecord(trial_id, sweep, summary, steps, swept)


class Tracking(MemberCallback):
    """Logs each trial that ends to the spec's trackers (`make_trackers`), in a background
    thread; waits for them when the experiment ends. Warnings go to `stream` (stderr)."""

    def __init__(self, spec: SweepSpec, results: str, stream: TextIO | None = None) -> None:
        super().__init__(spec)
        self.sweep, self.results, self.stream = spec, results, stream
        self._pool: ThreadPoolExecutor | None = None
        self._trackers: list[Any] | None = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "stream": None, "_pool": None, "_trackers": None}

    def trial_ended(self, tune_trial: Any, trial_id: str, metrics: dict[str, Any]) -> None:
        """Queue the trial for logging."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracking")
        self._pool.submit(self._log, trial_id, self.swept(tune_trial, trial_id))

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def close(self) -> None:
        """Wait until every queued trial is logged, then close the trackers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for tracker in self._trackers or []:
            self._guarded(tracker, tracker.close)
        self._trackers = None

    def _log(self, trial_id: str, swept: dict[str, Any]) -> None:
        if self._trackers is None:  # here, not in Tune's loop: importing them takes seconds
            self._trackers = []
            for name, make in make_trackers(self.sweep, self.results).items():
                try:
                    self._trackers.append(make())
                except Exception as exc:  # e.g. an MLflow server that does not answer
                    self._warn(f"{name}: {type(exc).__name__}: {exc}; not logging to it")
        try:
            record = read_record(self.results, self.sweep.name, trial_id, swept)
        except Exception as exc:  # the trial's files are gone or unreadable: nothing to log
            self._warn(f"trackers: cannot read trial {trial_id}: {exc}")
            return
        for tracker in list(self._trackers):
            self._guarded(tracker, tracker.log, record)

    def _guarded(self, tracker: Any, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:
            self._warn(f"{tracker.name}: {type(exc).__name__}: {exc}; not logging to it any more")
            if self._trackers and tracker in self._trackers:
                self._trackers.remove(tracker)

    def _warn(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"warning: {text}\n".replace("\n", " ").rstrip() + "\n")
        stream.flush()


def check_trackers(spec: SweepSpec) -> None:
    """Raise `SpecError` when a tracker the spec asks for cannot work here (its package
    is not installed, or W&B online without credentials): before anything runs."""
    logging = spec.logging
    wanted = {"tensorboard": ("tensorboardX", logging.tensorboard)}
    wanted["mlflow"] = ("mlflow", logging.mlflow)
    wanted["wandb"] = ("wandb", logging.wandb is not None)
    for field, (package, on) in wanted.items():
        if on and importlib.util.find_spec(package) is None:
            raise SpecError(
                f"logging.{field}: needs the {package} package, which is not installed "
                f"(pip install {'mlflow-skinny' if package == 'mlflow' else package})"
            )
    mode = logging.wandb and (logging.wandb.mode or os.environ.get("WANDB_MODE", "online"))
    if mode == "online":
        import wandb  # only a spec with W&B online pays for importing it

        if not wandb.login(prompt=False, verify=False):
            raise SpecError(
                "logging.wandb: no W&B credentials: run `wandb login`, set WANDB_API_KEY, "
                "or set logging.wandb.mode: offline (then `wandb sync` later)"
            )


def make_trackers(spec: SweepSpec, results: str) -> dict[str, Callable[[], Any]]:
    """How to make each tracker the spec's `logging` section turns on, by name."""
    sweep = child(results, spec.name)
    makers: dict[str, Callable[[], Any]] = {}
    if spec.logging.tensorboard:
        makers["tensorboard"] = lambda: TensorBoardTracker(child(sweep, TENSORBOARD_DIR))
    if spec.logging.mlflow:
        makers["mlflow"] = lambda: MlflowTracker(spec.logging.mlflow_tracking_uri, spec.name)
    if spec.logging.wandb is not None:
        local = "://" not in results
        makers["wandb"] = lambda: WandbTracker(spec, sweep if local else None)
    return makers


class TensorBoardTracker:
    """A TensorBoard run per trial under `root/<trial_id>/` (a local path or URI)."""

    name = "tensorboard"

    def __init__(self, root: str) -> None:
        from tensorboardX import SummaryWriter  # optional dependency, checked at run start
        from tensorboardX.summary import hparams

        self.root, self._writer, self._hparams = root, SummaryWriter, hparams

    def log(self, record: TrialRecord) -> None:
        """Write the trial's events file, replacing an earlier run's."""
        fs, target = resolve(child(self.root, record.trial_id))
        with tempfile.TemporaryDirectory() as tmp:
            writer = self._writer(logdir=tmp, flush_secs=3600)
            for name, points in record.series().items():
                for step, value in points:
                    writer.add_scalar(name, value, step)
            # One chart with the sharpness and the threshold it is held against.
            curvature = ["sharpness", "preconditioned_sharpness", "threshold"]
            writer.add_custom_scalars({"stability": {"curvature": ["Multiline", curvature]}})
            last = max(record.steps.get("step") or [0])
            final = record.final()
            for tag, value in final.items():
                writer.add_scalar(tag, value, last)
            hparams = {k: _hparam(v) for k, v in record.swept.items()}
            for summary in self._hparams({**hparams, "status": record.status}, final):
                writer.file_writer.add_summary(summary)
            writer.close()
            fs.delete_dir_contents(target, missing_dir_ok=True)
            fs.create_dir(target, recursive=True)
            pafs.copy_files(tmp, target, pafs.LocalFileSystem(), fs)

    def close(self) -> None:
        """Nothing stays open between trials."""


def _hparam(value: Any) -> bool | int | float | str:
    return value if isinstance(value, bool | int | float | str) else str(value)


class MlflowTracker:
    """An MLflow run per trial, in the experiment named by the sweep."""

    name = "mlflow"

    def __init__(self, tracking_uri: str | None, sweep: str) -> None:
        from mlflow import MlflowClient  # optional dependency, checked at run start

        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(sweep)
        self.experiment = found.experiment_id if found else self.client.create_experiment(sweep)

    def log(self, record: TrialRecord) -> None:
        """Create the trial's run, log its params and every measurement, and end it."""
        from mlflow.entities import Metric, Param

        tags = {"status": record.status, "sweep": record.sweep, "trial_id": record.trial_id}
        run = self.client.create_run(self.experiment, run_name=record.trial_id, tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in record.params().items()]
        for i in range(0, len(params), MLFLOW_PARAMS):
            self.client.log_batch(run_id, params=params[i : i + MLFLOW_PARAMS])
        last = max(record.steps.get("step") or [0])
        metrics = [
            Metric(name, value, 0, step)
            for name, points in record.series().items()
            for step, value in points
        ]
        metrics += [Metric(k, v, 0, last) for k, v in record.final().items()]
        for i in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + MLFLOW_BATCH])
        self.client.set_terminated(run_id, "FAILED" if record.status == "error" else "FINISHED")

    def close(self) -> None:
        """Nothing stays open between trials."""


class WandbTracker:
    """A W&B run per trial: `logging.wandb`'s project, entity, mode and tags, the sweep
    (or `group`) as group, files under the sweep's directory when it is local."""

    name = "wandb"

    def __init__(self, spec: SweepSpec, directory: str | None) -> None:
        import wandb  # optional dependency, checked at run start

        self.wandb, self.options, self.sweep = wandb, spec.logging.wandb, spec.name
        self.directory = directory

    def log(self, record: TrialRecord) -> None:
        """Open the trial's run, log its history step by step, set its summary, finish."""
        options = self.options
        run = self.wandb.init(
            project=options.project,
            entity=options.entity,
            group=options.group or self.sweep,
            name=record.trial_id,
            tags=[*options.tags, record.status],
            config=record.params(),
            mode=options.mode,
            dir=self.directory,
            reinit="create_new",
            settings=self.wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        try:
            rows: dict[int, dict[str, float]] = {}
            for name, points in record.series().items():
                for step, value in points:
                    rows.setdefault(step, {})[name] = value
            for step in sorted(rows):
                run.log(rows[step], step=step)
            run.summary.update({**record.final(), "status": record.status})
        finally:
            run.finish(exit_code=1 if record.status == "error" else 0)

    def close(self) -> None:
        """Each run is finished as its trial is logged."""
