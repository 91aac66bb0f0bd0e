"""What a trial records and how it ends: steps-table rows, the divergence and "stuck"
rules, the summary row, and writing both to the results store.

Row `step = t` of the steps table describes update t: its learning rate, the
training loss and accuracy of its batch and the sharpness at the parameters it
starts from (theta_{t-1}), and the stability threshold for its rate.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from results import write_trial
from trials.config import TrialConfig
from trials.problem import Problem, resolve_device, threshold

__all__ = [
    "STEP_COLUMNS",
    "Checkpointer",
    "Reporter",
    "TrialResult",
    "TrialStopped",
    "append_row",
    "final_status",
    "is_diverged",
    "measured_at",
    "package_version",
    "set_rate",
    "step_row",
    "trial_summary",
    "write_results",
]

STEP_COLUMNS = (
    "step",
    "lr",
    "train_loss",
    "train_accuracy",
    "sharpness",
    "preconditioned_sharpness",
    "threshold",
    "test_loss",
    "test_accuracy",
)
Reporter = Callable[[dict[str, Any]], None]


class TrialStopped(Exception):
    """Raised by a `report` callback when a scheduler (e.g. ASHA) stops the trial early:
    the trial ends as `stopped` at the last step it recorded, and writes its files."""


Checkpointer = Callable[[dict[str, Any]], None]


def package_version() -> str:
    """Installed version of warmup-sweeps (recorded with every trial)."""
    try:
        return metadata.version("warmup-sweeps")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class TrialResult:
    """What a trial produced: its summary row and per-step columns."""

    trial_id: str
    status: str
    summary: dict[str, Any]
    steps: dict[str, list] = field(default_factory=dict)


def is_diverged(config: TrialConfig, loss: float, loss0: float) -> bool:
    """The divergence rule: a NaN/Inf loss, or one above `divergence_factor` x the first."""
    return not math.isfinite(loss) or loss > config.divergence_factor * loss0


def measured_at(every: int, t: int) -> bool:
    """Whether a quantity measured every `every` updates (0: only at the first) is taken at update t."""
    return t == 1 or bool(every and (t - 1) % every == 0)


def step_row(config: TrialConfig, t: int, lr: float | None, loss: float, accuracy: float) -> dict:
    """The steps-table row of update t before curvature and evaluation are filled in
    (`lr` None: chosen later, from the measurements, by `set_rate`)."""
    row = dict.fromkeys(STEP_COLUMNS)
    row.update(step=t, train_loss=loss, train_accuracy=accuracy)
    if lr is not None:
        set_rate(config, row, lr)
    return row


def set_rate(config: TrialConfig, row: dict, lr: float) -> None:
    """Record update t's rate in its row, with the stability threshold at that rate."""
    row["lr"], row["threshold"] = lr, threshold(config, lr)


def final_status(
    config: TrialConfig, problem: Problem, final_loss: float, final_acc: float, loss0: float
) -> dict[str, Any]:
    """How a trial that ran all its updates ended, from its final train loss and accuracy."""
    if is_diverged(config, final_loss, loss0):
        return {"status": "diverged", "diverged_step": config.num_steps}
    if problem.is_text:
        learned = final_loss < problem.stuck_loss()
    else:
        learned = final_acc >= config.stuck_accuracy_factor / problem.num_classes
    return {"status": "completed" if learned else "stuck"}


def trial_summary(config: TrialConfig, sweep: str, node: str | None) -> dict[str, Any]:
    """The summary fields a trial knows before it trains: id, config columns, provenance."""
    summary: dict[str, Any] = {"trial_id": config.trial_id(), "sweep": sweep, **config.flat()}
    summary.update(
        eta_trgt_relative=config.eta_trgt if config.eta_trgt_relative_to == "lambda0" else None,
        eta_trgt=config.eta_trgt if config.eta_trgt_relative_to == "absolute" else None,
        eta_init=None if config.eta_init == "catapult" else config.eta_init,
        eta_init_mode=config.eta_init_mode,
        device=str(resolve_device(config.device)),
        node=node or socket.gethostname(),
        package_version=package_version(),
    )
    return summary


def append_row(steps: dict[str, list], row: dict[str, Any]) -> None:
    """Append one steps-table row to the per-column lists of `steps`."""
    for key in STEP_COLUMNS:
        steps.setdefault(key, []).append(row[key])


def write_results(
    results: str, sweep: str, summary: dict[str, Any], steps: dict[str, list]
) -> None:
    """Write a trial's files; a storage error makes it `error` with a summary-only row.

    Writes are atomic, so a failure leaves no partial file. If even the error
    summary cannot be written, the exception propagates (Tune reports the trial).
    """
    try:
        write_trial(results, sweep, summary, steps)
    except Exception as exc:  # disk full, permissions, a broken bucket, ...
        summary.update(status="error", error=f"writing results: {type(exc).__name__}: {exc}")
        write_trial(results, sweep, summary, None)
