"""Ray Tune adapter: a function trainable that runs one trial and writes its files.

The trainable receives the trial's overrides of the sweep's base config,
either as `config["overrides"]` (grid and boundary searches, where the sweep
expands the grid itself) or as flat dotted keys (a searcher such as Optuna).
It reports progress with `tune.report` every few steps and the trial's
summary at the end; the Parquet files, written by the worker itself, are the
record.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray import tune

from trials.config import TrialConfig, apply_overrides
from trials.trial import run_trial

# Summary fields sent to Tune at the end (searchers and schedulers read them).
FINAL_METRICS = (
    "status",
    "trial_id",
    "diverged_step",
    "lambda0",
    "eta_c",
    "eta_trgt",
    "final_train_loss",
    "final_train_accuracy",
    "final_test_loss",
    "final_test_accuracy",
)


def overrides_of(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's overrides from a Tune config (grid: nested; searcher: flat keys)."""
    return dict(config["overrides"]) if "overrides" in config else dict(config)


def trainable(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    results: str,
    sweep: str,
    report_every: int = 25,
    cpus: float = 1.0,
) -> None:
    """Run one trial inside a Ray Tune worker."""
    import ray

    torch.set_num_threads(max(1, int(cpus)))
    trial_config = TrialConfig.model_validate(apply_overrides(base, overrides_of(config)))
    node = ray.get_runtime_context().get_node_id()
    result = run_trial(
        trial_config,
        results=results,
        sweep=sweep,
        report=tune.report,
        report_every=report_every,
        node=node,
    )
    final = {key: result.summary.get(key) for key in FINAL_METRICS}
    # Searchers need a number: a diverged or failed trial has no final metric.
    final = {k: (math.nan if v is None and k.startswith("final") else v) for k, v in final.items()}
    tune.report({"step": trial_config.num_steps, **final})
