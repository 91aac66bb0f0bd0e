"""One training run, from a `TrialConfig` to a summary row and per-step metrics.

`run_trial(config)` trains, measures curvature on a fixed measurement batch,
and ends in one of four named statuses:

- completed: ran all `num_steps`;
- diverged: the training loss became NaN/Inf or exceeded `divergence_factor`
  times the initial loss (the step is recorded);
- stuck: ran to the end without learning (train accuracy below
  `stuck_accuracy_factor` x chance; for language models, train loss not
  below `stuck_loss`, by default the unigram entropy of the training text);
- stopped: a scheduler stopped it early (its `report` callback raised
  `TrialStopped`); `stopped_step` is the last step it ran;
- error: an exception; its message is recorded.

Every ending writes its files when a results location is given.

Row `step = t` of the steps table describes update t: its learning rate, the
training loss and accuracy of its batch and the sharpness at the parameters
it starts from (theta_{t-1}), and the stability threshold for its rate. For
the Adam family, `preconditioned_sharpness` is the top eigenvalue of the
operator update t applies: `(P_t / m)^-1 (H + wd I)`, with the per-layer
learning-rate multipliers m and coupled L2 weight decay wd (0 for AdamW's
decoupled decay, which is left out). Sharpness is measured on the batch that
`sharpness_batch` names (see `TrialConfig`), by Lanczos to a relative residual
of `sharpness_tol`, warm-started from the previous top eigenvector.
"""

from __future__ import annotations

from typing import Any

from trials.config import TrialConfig
from trials.loop import run_pack
from trials.problem import Problem
from trials.records import Checkpointer, Reporter, TrialResult

__all__ = ["run_trial"]


def run_trial(
    config: TrialConfig,
    *,
    results: str | None = None,
    sweep: str = "adhoc",
    report: Reporter | None = None,
    report_every: int = 25,
    node: str | None = None,
    problem: Problem | None = None,
    checkpoint: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
) -> TrialResult:
    """Run one trial (a pack of one); write its Parquet files under `results/sweep` when
    `results` is given.

    Never raises for a failure inside the trial: the result's status says how it
    ended. A failure to write its files makes it `error` (summary only); it raises
    only when even that summary cannot be written.

    Args:
        config: the trial.
        results: the results location (local path or URI); None writes nothing.
        sweep: the sweep name the files are written under.
        report: receives progress every `report_every` steps (e.g. Ray Tune).
        report_every: steps between progress reports.
        node: the node name recorded with the trial (default: this host's name).
        problem: a `Problem` built for this config (saves loading the data).
        checkpoint: receives the training state every `config.checkpoint_every` updates.
        resume: such a state, to continue the trial from.
    """
    (result,) = run_pack(
        [config],
        results=results,
        sweep=sweep,
        report=report,
        report_every=report_every,
        node=node,
        problem=problem,
        checkpoint=checkpoint,
        resume=resume,
    )
    return result
