"""The Ray Tune `Tuner` of a sweep: its trainable, storage, loggers and trial names."""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

from results import child
from results.store import resolve
from sweeps.ray_private import use_legacy_reporter
from sweeps.schema import SweepSpec
from trials.tune import trainable

__all__ = ["build_tuner"]


def build_tuner(
    spec: SweepSpec,
    results: str,
    param_space: dict[str, Any],
    callbacks: list[tune.Callback],
    *,
    tune_config: tune.TuneConfig | None = None,
    run_name: str | None = None,
    slots: int | None = None,
) -> tune.Tuner:
    """A Tuner of `trials.tune.trainable` over `param_space`, storing its state under the
    sweep's results.

    Args:
        spec: the sweep (base config, resources, retries, loggers, max_concurrent).
        results: the results location (absolute path or URI).
        param_space: Tune's config space: `{"pack": grid_search([[...], ...])}` (packs of
            trials' overrides) or a searcher's flat keys.
        callbacks: run before the loggers (e.g. `sweeps.progress.Progress`).
        tune_config: searcher, scheduler, samples (default: actors reused, nothing else).
        run_name: the Tune experiment's directory under the sweep (default "tune").
        slots: trials of a pack that train at once (None: a pack's every trial).
    """
    use_legacy_reporter()  # before the Tuner reads Tune's output settings
    common = dict(base=spec.base, results=results, sweep=spec.name, cpus=spec.resources.cpu)
    fn = tune.with_parameters(trainable, slots=slots, **common)
    fn = tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    # Tune keeps its experiment state next to the results, through the same filesystem.
    storage_fs, storage_path = resolve(child(results, spec.name))
    run_config = tune.RunConfig(
        name=run_name or "tune",
        storage_path=storage_path,
        storage_filesystem=storage_fs,
        failure_config=tune.FailureConfig(max_failures=spec.failure.retries),
        callbacks=[*callbacks, *_logger_callbacks(spec)],
        verbose=0,
    )
    tune_config = tune_config or tune.TuneConfig(reuse_actors=True)
    if spec.max_concurrent and tune_config.max_concurrent_trials is None:
        tune_config.max_concurrent_trials = spec.max_concurrent
    tune_config.trial_name_creator = _trial_name
    tune_config.trial_dirname_creator = _trial_name
    return tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _logger_callbacks(spec: SweepSpec) -> list[tune.Callback]:
    callbacks: list[tune.Callback] = [JsonLoggerCallback(), CSVLoggerCallback()]
    if spec.logging.tensorboard:
        callbacks.append(TBXLoggerCallback())
    if spec.logging.mlflow:
        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=spec.logging.mlflow_tracking_uri, experiment_name=spec.name
            )
        )
    return callbacks


def _trial_name(trial) -> str:
    """`<tune id>_<axis>=<value>_...` for a pack of one trial, else `<tune id>_pack<size>`."""
    pack = trial.config.get("pack")
    if pack is None:
        return trial.trial_id
    if len(pack) > 1:
        return f"{trial.trial_id}_pack{len(pack)}"
    axes = "_".join(f"{k.split('.')[-1]}={v}" for k, v in pack[0].items())
    return f"{trial.trial_id}_{axes[:100]}" if axes else trial.trial_id
