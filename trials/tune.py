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
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Checkpoint

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
    "warmup_end_step",
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
        report=_progress,
        report_every=report_every,
        node=node,
        checkpoint=_save_checkpoint,
        resume=_restored_state(),
    )
    final = _final_metrics(result.summary)
    # ASHA's metric is the progress reports' train_loss: the final report must carry it too.
    tune.report({"step": trial_config.num_steps, "train_loss": final["final_train_loss"], **final})


CHECKPOINT_FILE = "trial_state.pt"


def _save_checkpoint(state: dict[str, Any]) -> None:
    """Hand the training state to Ray Tune, which persists it in the run's storage."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        tune.report(
            {**_pending_metrics(), "step": state["step"]},
            checkpoint=Checkpoint.from_directory(tmp),
        )


def _restored_state() -> dict[str, Any] | None:
    """The state of the trial's last checkpoint when Tune restarts it after a failure."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as tmp:
        # weights_only: tensors and plain containers only, never arbitrary objects.
        return torch.load(Path(tmp) / CHECKPOINT_FILE, weights_only=True)


def _progress(metrics: dict[str, Any]) -> None:
    """A progress report. Tune refuses results without the searcher's metric (Optuna's
    `final_test_loss`, ...), so the final metrics are in it too, NaN until the end."""
    tune.report({**_pending_metrics(), **metrics})


def _pending_metrics() -> dict[str, float]:
    """The numeric final metrics as NaN: what a report before the end carries."""
    return {k: math.nan for k in FINAL_METRICS if k not in ("status", "trial_id")}


def _final_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    final = {key: summary.get(key) for key in FINAL_METRICS}
    # Searchers need a number: a diverged or failed trial has no final metric.
    return {k: (math.nan if v is None and k.startswith("final") else v) for k, v in final.items()}


def pack_trainable(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    results: str,
    sweep: str,
    report_every: int = 25,
    cpus: float = 1.0,
) -> None:
    """Run a pack of trials (`config["pack"]`, a list of overrides) inside one Tune worker.

    The final report carries `members`: each member's final metrics (status
    included) by trial_id, so progress counts every trial of the pack.
    """
    import ray

    from trials.packed import run_pack

    torch.set_num_threads(max(1, int(cpus)))
    configs = [TrialConfig.model_validate(apply_overrides(base, o)) for o in config["pack"]]
    node = ray.get_runtime_context().get_node_id()
    outcomes = run_pack(
        configs,
        results=results,
        sweep=sweep,
        report=tune.report,
        report_every=report_every,
        node=node,
        checkpoint=_save_checkpoint,
        resume=_restored_state(),
    )
    members = {r.trial_id: _final_metrics(r.summary) for r in outcomes}
    tune.report({"step": configs[0].num_steps, "members": members})
