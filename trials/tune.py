"""Ray Tune adapter: one function trainable that runs a pack of trials and writes their files.

A single trial is a pack of one. The trainable receives its trials' overrides of
the sweep's base config as `config["pack"]` (a list: grid and boundary rounds,
whose packs may train their trials one after another) or flat dotted keys (one
trial: a searcher such as Optuna, see `overrides_of`). It reports progress with
`tune.report` every few steps, carrying `ended_members` (the final metrics,
status included, of the trials that ended since the last report), and at the
end `members` (every trial's). Each report waits for the driver, so a pack
reports progress at most every `PACK_REPORT_S` seconds (a searcher's trial, whose
scheduler reads every report, at every few steps). A pack of one also puts its
trial's final metrics at the top of the final report, where a searcher reads its
metric (our trial id under `ID_KEY`: Tune overwrites `trial_id`). The Parquet
files, written by the worker itself, are the record.

Ray internals relied on (checked against ray 2.60.0; tests/sweeps/test_ray_private.py
fails when Ray changes them; the driver's are in `sweeps.ray_private`):

- A scheduler such as ASHA stops a function trainable through its next
  `tune.report`: with synchronous reporting (what function trainables use), Ray's
  session raises `SystemExit` from that call once the trial is to stop
  (`ray.train._internal.session._TrainSession._report_training_result`). `_report`
  turns that into `TrialStopped`, so the trial ends as `stopped` and writes its
  files; nothing is reported after it.
- Tune does not wait for a stopped function's thread before it ends the actor
  (`FunctionTrainable.cleanup` finishes the session with timeout 0), so the
  trainable carries `WaitForFiles` through Tune's `__mixins__` hook
  (`ray.tune.trainable.function_trainable.wrap_function`), whose `cleanup` waits
  until the trials' files are written.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune import Checkpoint

from results import STATUSES
from trials.config import TrialConfig, apply_overrides
from trials.loop import run_pack
from trials.records import TrialResult, TrialStopped

__all__ = [
    "CHECKED_RAY_VERSION",
    "CHECKPOINT_FILE",
    "FINAL_METRICS",
    "ID_KEY",
    "LAST_STEP_KEY",
    "PACK_REPORT_S",
    "TEXT_METRICS",
    "WRITE_WAIT_S",
    "WaitForFiles",
    "member_endings",
    "members_of",
    "overrides_of",
    "trainable",
]

CHECKED_RAY_VERSION = "2.60.0"
ID_KEY = "sweep_trial_id"  # our trial id in a Tune result
LAST_STEP_KEY = "last_step"  # in a member's final metrics: the last step it recorded
WRITE_WAIT_S = 120.0  # longest a stopping actor waits for its trials' files
CHECKPOINT_FILE = "trial_state.pt"
# Shortest time between two progress reports of a pack: each report blocks the worker
# until the driver has processed it (a scheduling round).
PACK_REPORT_S = 5.0

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
    "wall_time_s",
    "error",
)
# Final metrics that are text, not numbers (a report before the end leaves them out).
TEXT_METRICS = ("status", ID_KEY, "error")

# Set while no trial of this worker process is between start and written files.
_FILES_WRITTEN = threading.Event()
_FILES_WRITTEN.set()


class WaitForFiles:
    """Trainable mixin: on cleanup (stop), wait until the running trials wrote their files."""

    def cleanup(self) -> None:
        """Let the trials' thread see the stop, then wait for their files."""
        try:
            super().cleanup()  # type: ignore[misc]
        finally:
            _FILES_WRITTEN.wait(WRITE_WAIT_S)


def overrides_of(config: dict[str, Any]) -> dict[str, Any]:
    """One trial's overrides from a Tune config: nested under `overrides`, or a
    searcher's flat keys, where `seed` sets both init_seed and data_seed."""
    if "overrides" in config:
        return dict(config["overrides"])
    overrides = dict(config)
    if "seed" in overrides:
        seed = overrides.pop("seed")
        for key in ("init_seed", "data_seed"):
            overrides.setdefault(key, seed)
    return overrides


def members_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The overrides of every trial of the pack a Tune config describes (one, from a
    searcher's flat keys, unless it holds a `pack`)."""
    if "pack" in config:
        return [dict(overrides) for overrides in config["pack"]]
    return [overrides_of(config)]


def trainable(
    config: dict[str, Any],
    *,
    base: dict[str, Any],
    results: str,
    sweep: str,
    report_every: int = 25,
    cpus: float = 1.0,
    slots: int | None = None,
) -> None:
    """Run a pack of trials (`members_of(config)`) inside one Tune worker, `slots` at a
    time (default: all; waiting trials take the slots of ended ones), and write their files.

    Args:
        config: the Tune trial's config (see the module docstring).
        base: the sweep's base trial config, which the overrides change.
        results: the results location (absolute path or URI).
        sweep: the sweep's name (its directory under `results`).
        report_every: training steps between progress reports.
        cpus: CPUs of this worker (torch threads).
        slots: trials of the pack that train at once.
    """
    torch.set_num_threads(max(1, int(cpus)))
    configs = [TrialConfig.model_validate(apply_overrides(base, o)) for o in members_of(config)]
    ended: dict[str, dict[str, Any]] = {}
    every_s = PACK_REPORT_S if "pack" in config else 0.0
    last = time.monotonic()

    def progress(metrics: dict[str, Any]) -> None:
        nonlocal last
        if time.monotonic() - last < every_s:
            return  # the endings wait in `ended` for the next report
        # Tune refuses results without the searcher's metric (Optuna's final_test_loss,
        # ...), so the final metrics are in progress reports too, NaN until the end.
        _report({**_pending_metrics(), **metrics, "ended_members": dict(ended)})
        ended.clear()
        last = time.monotonic()

    _FILES_WRITTEN.clear()
    try:
        outcomes = run_pack(
            configs,
            results=results,
            sweep=sweep,
            report=progress,
            report_every=report_every,
            node=ray.get_runtime_context().get_node_id(),
            slots=slots,
            checkpoint=_save_checkpoint,
            resume=_restored_state(),
            on_end=lambda r: ended.__setitem__(r.trial_id, _final_metrics(r)),
        )
    finally:
        _FILES_WRITTEN.set()
    if any(r.status == "stopped" for r in outcomes):
        return  # the scheduler stopped it: Tune takes no more reports from this trial
    tune.report(_final_report(configs[0].num_steps, outcomes))


trainable.__mixins__ = (WaitForFiles,)  # type: ignore[attr-defined]


def _report(metrics: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
    """`tune.report`, raising `TrialStopped` when a scheduler stopped the trial (see the
    module docstring)."""
    try:
        tune.report(metrics, checkpoint=checkpoint)
    except SystemExit:
        raise TrialStopped() from None


def _final_report(num_steps: int, outcomes: list[TrialResult]) -> dict[str, Any]:
    """Every member's final metrics under `members`; a pack of one's also at the top,
    with ASHA's metric, the progress reports' train_loss."""
    members = {r.trial_id: _final_metrics(r) for r in outcomes}
    report: dict[str, Any] = {"step": num_steps, "members": members}
    if len(outcomes) == 1:
        (final,) = members.values()
        report.update(train_loss=final["final_train_loss"], **final)
    return report


def _save_checkpoint(state: dict[str, Any]) -> None:
    """Hand the training state to Ray Tune, which persists it in the run's storage."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        _report(
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


def _pending_metrics() -> dict[str, float]:
    """The numeric final metrics as NaN: what a report before the end carries."""
    return {k: math.nan for k in FINAL_METRICS if k not in TEXT_METRICS}


def _final_metrics(result: TrialResult) -> dict[str, Any]:
    summary = result.summary
    final = {key: summary.get(key) for key in FINAL_METRICS if key != ID_KEY}
    final[ID_KEY] = summary["trial_id"]
    final[LAST_STEP_KEY] = (result.steps.get("step") or [None])[-1]
    # Searchers need a number: a diverged or failed trial has no final metric.
    return {k: (math.nan if v is None and k.startswith("final") else v) for k, v in final.items()}


def member_endings(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{trial_id: final metrics}` of the pack members a Tune result reports as ended:
    those that ended since the last progress report (`ended_members`), or in the final
    report every member (`members`). Tune may repeat a trial's last result, so a
    caller counts each trial id once."""
    members = result.get("members", result.get("ended_members"))
    if not isinstance(members, dict):
        return {}
    return {
        trial_id: metrics
        for trial_id, metrics in members.items()
        if isinstance(metrics, dict) and metrics.get("status") in STATUSES
    }
