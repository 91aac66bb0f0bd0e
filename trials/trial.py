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

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from trials.config import TrialConfig
from trials.data import Dataset, load_dataset
from warmup_core import stability
from warmup_core.models import MODEL_REGISTRY, WarmupModel, build_model
from warmup_core.optim import Optimizer, build_optimizer, optimizer_family, stability_threshold
from warmup_core.parameterization import Parameterization
from warmup_core.schedules import Schedule

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
EVAL_CHUNK = 4096  # examples per forward pass when evaluating a whole split

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


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrialResult:
    """What a trial produced: its summary row and per-step columns."""

    trial_id: str
    status: str
    summary: dict[str, Any]
    steps: dict[str, list] = field(default_factory=dict)


class Problem:
    """Data, model and loss of a trial, on its device and dtype."""

    def __init__(self, config: TrialConfig, data: Dataset | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = getattr(torch, config.dtype)
        ds = config.dataset
        data = data or load_dataset(
            ds.name,
            train_size=ds.train_size,
            test_size=ds.test_size,
            data_dir=ds.data_dir,
            standardize=ds.standardize,
            seed=config.data_seed,
            **ds.loader_options(),
        )
        if data.kind == "vector" and "vector" not in MODEL_REGISTRY.get(config.model.name).inputs:
            data = data.as_images()  # e.g. digits as 1x8x8 for the convolutional models
        self.data = data
        self.is_text = data.kind == "text"
        cast = (lambda t: t.to(self.device, self.dtype)) if not self.is_text else None
        self.x_train = cast(data.x_train) if cast else data.x_train.to(self.device)
        self.x_test = cast(data.x_test) if cast else data.x_test.to(self.device)
        self.y_train, self.y_test = data.y_train.to(self.device), data.y_test.to(self.device)
        self.num_classes = data.num_classes

    def build_model(self, init_seed: int, init_scale: float | None = None) -> WarmupModel:
        """The configured model, initialized from `init_seed`."""
        c = self.config
        return build_model(
            c.model.name,
            in_shape=self.data.input_shape,
            out_dim=self.num_classes,
            parameterization=Parameterization(
                c.parameterization,
                init_scale=c.init_scale if init_scale is None else init_scale,
                last_init_scale=c.last_init_scale,
                simple_mup=c.simple_mup,
                mup_constants=c.mup_constants,
            ),
            seed=init_seed,
            **c.model.options(),
        ).to(self.device, self.dtype)

    def loss_and_accuracy(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss (MSE on one-hot targets is 1/2 the squared error) and accuracy."""
        if logits.ndim == 3:  # language model: (B, T, V) against (B, T)
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        if self.config.loss == "xent":
            loss = F.cross_entropy(logits, y)
        else:
            target = F.one_hot(y, self.num_classes).to(logits.dtype)
            loss = 0.5 * (logits - target).pow(2).sum(-1).mean()
        accuracy = (logits.argmax(-1) == y).to(logits.dtype).mean()
        return loss, accuracy

    def loss_fn(self, model: WarmupModel, x: torch.Tensor, y: torch.Tensor):
        """`params -> loss` on a fixed batch, for curvature and eta_c."""

        def fn(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.loss_and_accuracy(functional_call(model, params, (x,)), y)[0]

        return fn

    @torch.no_grad()
    def evaluate_with(
        self, loss_and_accuracy: Callable[[torch.Tensor, torch.Tensor], tuple], split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 mean of `loss_and_accuracy(x, y)` over a split in chunks (one value per
        member of a pack)."""
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        total_loss = total_acc = 0.0
        for i in range(0, len(x), EVAL_CHUNK):
            xb, yb = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
            loss, acc = loss_and_accuracy(xb, yb)
            total_loss = total_loss + loss.double() * len(xb)
            total_acc = total_acc + acc.double() * len(xb)
        return total_loss / len(x), total_acc / len(x)

    def batch_size(self) -> int:
        """Configured batch size, capped at the training set (full batch = GD)."""
        n = len(self.x_train)
        return min(self.config.batch_size or n, n)

    def batch(self, step: int) -> torch.Tensor:
        """Indices of update `step`'s batch (1-based); a pure function of step and data_seed.

        Epoch e shuffles with a generator seeded by (data_seed, e), so a run resumed
        from a checkpoint sees the same batches as an uninterrupted one. The ragged
        last batch of an epoch is dropped: all batches have equal size.
        """
        n, b = len(self.x_train), self.batch_size()
        if b == n:
            return torch.arange(n, device=self.device)
        per_epoch = n // b
        epoch, i = divmod(step - 1, per_epoch)
        gen = torch.Generator().manual_seed(self.config.data_seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        return perm[i * b : (i + 1) * b].to(self.device)

    def measurement_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed batch of `sharpness_batch: fixed`: `sharpness_batch_size` examples
        (default: the training batch size) drawn once from data_seed; the whole training
        set when that covers it (full-batch runs measure on their training batch)."""
        n = len(self.x_train)
        m = min(self.config.sharpness_batch_size or self.batch_size(), n)
        if m == n:
            return self.x_train, self.y_train
        gen = torch.Generator().manual_seed(self.config.data_seed + 1)
        idx = torch.randperm(n, generator=gen)[:m].to(self.device)
        return self.x_train[idx], self.y_train[idx]

    def measures_on_training_batch(self) -> bool:
        """Whether the sharpness of update t is measured on update t's training batch alone."""
        if self.config.sharpness_batch == "current":
            return True
        n = len(self.x_train)
        return self.batch_size() == n and (self.config.sharpness_batch_size or n) >= n

    def measurement_batches(self, t: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batches whose mean loss defines the sharpness at update t (None: at init).

        `fixed`: the one measurement batch. `current`: update t's training batch; at
        init the first `lambda0_batches` batches (lambda0 is their mean sharpness).
        """
        if self.config.sharpness_batch == "fixed":
            return [self.measurement_batch()]
        steps = range(1, self.config.lambda0_batches + 1) if t is None else [t]
        return [(self.x_train[self.batch(s)], self.y_train[self.batch(s)]) for s in steps]

    def stuck_loss(self) -> float:
        """Language-model 'did not learn' level: the unigram entropy of the training targets."""
        if self.config.stuck_loss is not None:
            return self.config.stuck_loss
        counts = torch.bincount(self.y_train.reshape(-1), minlength=self.num_classes).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())


def threshold(config: TrialConfig, lr: float) -> float:
    """Stability threshold at learning rate `lr` for the configured optimizer."""
    return stability_threshold(config.optimizer.name, lr, **config.optimizer.options())


def make_optimizer(config: TrialConfig, model: WarmupModel) -> Optimizer:
    """The configured optimizer with the parameterization's per-layer rate multipliers."""
    family = optimizer_family(config.optimizer.name)
    return build_optimizer(
        config.optimizer.name, model.lr_multipliers(family), **config.optimizer.options()
    )


def critical_lr(config: TrialConfig, loss_fn, params, optimizer: Optimizer) -> dict[str, Any]:
    """Catapult estimate of eta_c at `params` for the configured optimizer's update
    (multipliers included), with the number of loss evaluations and its check."""
    info = stability.catapult_search(
        loss_fn,
        params,
        optimizer=optimizer.step_fn(),
        eta_rtol=config.catapult_rtol,
        check_steps=config.catapult_check_steps,
    )
    return {
        "eta_c": info.eta_c,
        "eta_c_loss_evals": info.num_loss_evals,
        "eta_c_check_ratio": info.check_ratio,
        "eta_c_overshoots": info.overshoots,
    }


def with_l2(loss_fn: Callable, l2: float) -> Callable:
    """`loss_fn` plus `l2 / 2 * |theta|^2`: its Hessian is H + l2 I (coupled weight decay)."""
    if not l2:
        return loss_fn
    return lambda params: loss_fn(params) + 0.5 * l2 * sum(p.pow(2).sum() for p in params.values())


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


def resolve_etas(config: TrialConfig, lambda0: float, eta_c: float | None) -> tuple[float, float]:
    """Absolute eta_trgt and eta_init, from lambda0 and eta_c."""
    eta_trgt = (
        config.eta_trgt / lambda0 if config.eta_trgt_relative_to == "lambda0" else config.eta_trgt
    )
    eta_init = eta_c if config.eta_init == "catapult" else config.eta_init
    if not (math.isfinite(eta_trgt) and eta_trgt > 0):
        raise ValueError(f"eta_trgt: resolved to {eta_trgt} (lambda0 = {lambda0})")
    return eta_trgt, eta_init


def resolve_schedule(
    config: TrialConfig, lambda0: float, eta_c: float | None
) -> tuple[float, float, Schedule]:
    """Absolute eta_trgt and eta_init (from lambda0 and eta_c) and the fixed schedule they
    make (not for `warmup_shape: adaptive`, whose rates follow measurements:
    `trials.rates`)."""
    eta_trgt, eta_init = resolve_etas(config, lambda0, eta_c)
    schedule = Schedule(
        eta_trgt=eta_trgt,
        warmup_steps=config.warmup_steps,
        eta_init=eta_init,
        shape=config.resolved_warmup_shape,
        power=config.warmup_power,
        decay=config.decay,
        num_steps=config.num_steps,
        eta_min=config.eta_min,
    )
    return eta_trgt, eta_init, schedule


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
    from results.store import write_trial

    try:
        write_trial(results, sweep, summary, steps)
    except Exception as exc:  # disk full, permissions, a broken bucket, ...
        summary.update(status="error", error=f"writing results: {type(exc).__name__}: {exc}")
        write_trial(results, sweep, summary, None)


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

    `checkpoint` receives the training state every `config.checkpoint_every`
    updates; `resume` (such a state) continues the trial from it.

    Never raises for a failure inside the trial: the result's status says how it
    ended. A failure to write its files makes it `error` (summary only); it raises
    only when even that summary cannot be written. `report` receives progress every
    `report_every` steps (e.g. Ray Tune).
    """
    from trials.packed import run_pack  # the one training loop; it builds on this module

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
