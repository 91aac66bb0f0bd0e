"""Ray Tune adapter: a function trainable that runs one trial and writes its files.

The trainable receives the trial's overrides of the sweep's base config,
either as `config["overrides"]` (grid and boundary searches, where the sweep
expands the grid itself) or as flat dotted keys (a searcher such as Optuna).
It reports progress with `tune.report` every few steps and the trial's
summary at the end (our trial id under `ID_KEY`: Tune overwrites `trial_id`);
the Parquet files, written by the worker itself, are the record.

A scheduler such as ASHA stops a function trainable through its next
`tune.report`: with synchronous reporting (what function trainables use),
Ray's session raises `SystemExit` from that call once the trial is to stop
(`ray.train._internal.session._TrainSession._report_training_result`). The
progress reporter turns that into `TrialStopped`, so the trial ends as
`stopped` and writes its files; nothing is reported after it. Tune does not
wait for a stopped function's thread before it ends the actor, so the
trainables carry `WaitForFiles` (through Tune's `__mixins__` hook), whose
`cleanup` waits until the trial's files are written.
"""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune import Checkpoint

from trials.config import TrialConfig, apply_overrides
from trials.loop import run_pack
from trials.records import TrialStopped
from trials.trial import run_trial

ID_KEY = "sweep_trial_id"  # our trial id in a Tune result
WRITE_WAIT_S = 120.0  # longest a stopping actor waits for its trial's files

# Set while no trial of this worker process is between start and written files.
_FILES_WRITTEN = threading.Event()
_FILES_WRITTEN.set()


class WaitForFiles:
    """Trainable mixin: on cleanup (stop), wait until the running trial wrote its files."""

    def cleanup(self) -> None:
        """Let the trial's thread see the stop, then wait for its files."""
        try:
            super().cleanup()  # type: ignore[misc]
        finally:
            _FILES_WRITTEN.wait(WRITE_WAIT_S)


# Summary fields sent to Tune at the end (searchers and schedulers read them).
FINAL_METRICS = (
    "status",
    ID_KEY,
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
    """The trial's overrides from a Tune config (grid: nested; searcher: flat keys, where
    `seed` sets both init_seed and data_seed)."""
    if "overrides" in config:
        return dict(config["overrides"])
    overrides = dict(config)
    if "seed" in overrides:
        seed = overrides.pop("seed")
        for key in ("init_seed", "data_seed"):
            overrides.setdefault(key, seed)
    return overrides


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
    trial_id = trial_config.trial_id()
    _FILES_WRITTEN.clear()
    try:
        result = _run(trial_config, trial_id, results, sweep, report_every, node)
    finally:
        _FILES_WRITTEN.set()
    if result.status == "stopped":
        return  # the scheduler stopped it: Tune takes no more reports from this trial
    final = _final_metrics(result.summary)
    # ASHA's metric is the progress reports' train_loss: the final report must carry it too.
    tune.report({"step": trial_config.num_steps, "train_loss": final["final_train_loss"], **final})


trainable.__mixins__ = (WaitForFiles,)  # type: ignore[attr-defined]


def _run(
    trial_config: TrialConfig,
    trial_id: str,
    results: str,
    sweep: str,
    report_every: int,
    node: str,
):
    return run_trial(
        trial_config,
        results=results,
        sweep=sweep,
        report=lambda metrics: _progress({**metrics, ID_KEY: trial_id}),
        report_every=report_every,
        node=node,
        checkpoint=_save_checkpoint,
        resume=_restored_state(),
    )


CHECKPOINT_FILE = "trial_state.pt"


def _save_checkpoint(state: dict[str, Any]) -> None:
    """Hand the training state to Ray Tune, which persists it in the run's storage."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        try:
            tune.report(
                {**_pending_metrics(), "step": state["step"]},
                checkpoint=Checkpoint.from_directory(tmp),
            )
        except SystemExit:
            raise TrialStopped() from None


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
    `final_test_loss`, ...), so the final metrics are in it too, NaN until the end.
    Raises `TrialStopped` when a scheduler stops the trial (see the module docstring)."""
    try:
        tune.report({**_pending_metrics(), **metrics})
    except SystemExit:
        raise TrialStopped() from None


def _pending_metrics() -> dict[str, float]:
    """The numeric final metrics as NaN: what a report before the end carries."""
    return {k: math.nan for k in FINAL_METRICS if k not in ("status", ID_KEY)}


def _final_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    final = {key: summary.get(key) for key in FINAL_METRICS if key != ID_KEY}
    final[ID_KEY] = summary["trial_id"]
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
    slots: int | None = None,
) -> None:
    """Run a pack of trials (`config["pack"]`, a list of overrides) inside one Tune worker,
    `slots` at a time (waiting trials take the slots of ended ones).

    Progress reports carry `ended_members` and the final report `members`: the final
    metrics (status included) by trial_id of the members that ended since the last
    report, and of every member, so progress counts each trial as it ends.
    """
    import ray

    torch.set_num_threads(max(1, int(cpus)))
    configs = [TrialConfig.model_validate(apply_overrides(base, o)) for o in config["pack"]]
    node = ray.get_runtime_context().get_node_id()
    ended: dict[str, dict[str, Any]] = {}

    def progress(metrics: dict[str, Any]) -> None:
        tune.report({**metrics, "ended_members": dict(ended)})
        ended.clear()

    outcomes = run_pack(
        configs,
        results=results,
        sweep=sweep,
        report=progress,
        report_every=report_every,
        node=node,
        slots=slots,
        checkpoint=_save_checkpoint,
        resume=_restored_state(),
        on_end=lambda r: ended.__setitem__(r.trial_id, _final_metrics(r.summary)),
    )
    members = {r.trial_id: _final_metrics(r.summary) for r in outcomes}
    tune.report({"step": configs[0].num_steps, "members": members})
