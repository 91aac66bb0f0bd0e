"""The Ray Tune `Tuner` of a sweep: its trainable, storage, loggers and trial names.

Tune's own logger callbacks keep its per-Tune-trial `result.json` and
`progress.csv`; the experiment trackers (TensorBoard, MLflow, W&B) are
`sweeps.tracking.Tracking`, which logs our trials, not Tune's packs of them.
"""

from __future__ import annotations

import os
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from results import child, resolve
from sweeps.ray_private import use_legacy_reporter
from sweeps.schema import SweepSpec
from sweeps.tracking import Tracking
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
        spec: the sweep (base config, resources, retries, trackers, max_concurrent).
        results: the results location (absolute path or URI).
        param_space: Tune's config space: `{"pack": grid_search([[...], ...])}` (packs of
            trials' overrides) or a searcher's flat keys.
        callbacks: run before the loggers (e.g. `sweeps.progress.Progress`).
        tune_config: searcher, scheduler, samples (default: actors reused, nothing else).
        run_name: the Tune experiment's directory under the sweep (default "tune").
        slots: trials of a pack that train at once (None: a pack's every trial).
    """
    use_legacy_reporter()  # before the Tuner reads Tune's output settings
    # Tune adds its TensorBoard logger (per Tune trial, every report) unless told not to.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
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
        callbacks=[
            *callbacks,
            JsonLoggerCallback(),
            CSVLoggerCallback(),
            *_trackers(spec, results),
        ],
        verbose=0,
    )
    tune_config = tune_config or tune.TuneConfig(reuse_actors=True)
    if spec.max_concurrent and tune_config.max_concurrent_trials is None:
        tune_config.max_concurrent_trials = spec.max_concurrent
    tune_config.trial_name_creator = _trial_name
    tune_config.trial_dirname_creator = _trial_name
    return tune.Tuner(fn, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _trackers(spec: SweepSpec, results: str) -> list[tune.Callback]:
    logging = spec.logging
    on = logging.tensorboard or logging.mlflow or logging.wandb is not None
    return [Tracking(spec, results)] if on else []


def _trial_name(trial) -> str:
    """`<tune id>_<axis>=<value>_...` for a pack of one trial, else `<tune id>_pack<size>`."""
    pack = trial.config.get("pack")
    if pack is None:
        return trial.trial_id
    if len(pack) > 1:
        return f"{trial.trial_id}_pack{len(pack)}"
    axes = "_".join(f"{k.split('.')[-1]}={v}" for k, v in pack[0].items())
    return f"{trial.trial_id}_{axes[:100]}" if axes else trial.trial_id
