"""Training stability: thresholds, the loss-catapult estimate of eta_c, and regime
detection on measured trajectories.

* Thresholds: (S)GD is unstable when ``lambda_H > sgd_threshold(eta)``; Adam when the
  pre-conditioned sharpness exceeds ``adam_threshold(eta, beta1)``.
* :func:`critical_learning_rate` finds ``eta_c`` with forward/backward passes only
  (Kalra & Barkeshli 2024, Sec. 6): double eta until one optimizer step from
  ``params`` raises the loss, then bisect the bracket to a stated tolerance;
  :func:`catapult_search` returns the whole search (:class:`CriticalLRInfo`).
* :func:`classify_regime`, :func:`detect_catapults` and :func:`warmup_end_ratio` work
  on plain numpy arrays of logged metrics (NaN where not measured), so analysis code
  can run them on Parquet columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from warmup_core.checks import check_positive
from warmup_core.hvp import LossFn, Params

__all__ = [
    "CatapultEvent",
    "CriticalLRInfo",
    "StepFn",
    "adam_threshold",
    "catapult_search",
    "classify_regime",
    "critical_learning_rate",
    "detect_catapults",
    "gd_step",
    "sgd_threshold",
    "warmup_end_ratio",
]


# --------------------------------------------------------------------------------------
# Stability thresholds
#
# The rule behind every threshold: stability is decided by the operator the update
# applies. On a quadratic with curvature lambda along some direction, an update rule is
# stable iff eta * lambda stays below a constant of the rule. These two functions hold
# those constants; `warmup_core.optim.Optimizer.stability_threshold` picks the one of a
# configured optimizer, and every caller (trials, probe, analysis, plots) goes through it.


def sgd_threshold(eta, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
    """Sharpness ``lambda_H`` above which (S)GD at learning rate ``eta`` is unstable.

    Heavy-ball momentum mu: ``(2 + 2 mu)/eta``; torch-style Nesterov:
    ``(2 + 2 mu) / ((1 + 2 mu) eta)`` (1.36/eta at mu = 0.9). Coupled L2 weight decay
    ``wd`` adds ``wd`` to the curvature the update sees, so the threshold on the loss's
    own sharpness drops by ``wd``. ``eta`` may be a float, numpy array or tensor; the
    result has the same kind (``inf`` at ``eta = 0``).
    """
    constant = 2.0 + 2.0 * momentum
    if nesterov:
        constant /= 1.0 + 2.0 * momentum
    return _safe_divide(constant, eta) - weight_decay


def adam_threshold(eta, beta1: float = 0.9):
    """Pre-conditioned sharpness above which Adam is unstable: (2 + 2 b1)/((1 - b1) eta).

    That is 38/eta for ``beta1 = 0.9``; the pre-conditioned sharpness is that of the
    operator the update applies (``P / m`` with learning-rate multipliers ``m``).
    ``eta`` may be a float, numpy array or tensor.
    """
    return _safe_divide((2.0 + 2.0 * beta1) / (1.0 - beta1), eta)


def _safe_divide(numerator: float, eta):
    if isinstance(eta, Tensor):
        return numerator / eta
    with np.errstate(divide="ignore"):
        out = np.divide(numerator, np.asarray(eta, dtype=np.float64))
    return float(out) if np.ndim(out) == 0 else out  # eta = 0 gives inf, never raises


# --------------------------------------------------------------------------------------
# Optimizer steps for the eta_c search


class StepFn(Protocol):
    """One optimizer update: ``(params, grads, eta, state) -> (new_params, new_state)``.

    ``state`` is ``None`` on the first call; pure functions over dicts of tensors, so
    the search can replay steps from the same initial point at many ``eta``. A
    configured optimizer gives one with ``warmup_core.optim.Optimizer.step_fn``.
    """

    def __call__(
        self, params: dict[str, Tensor], grads: dict[str, Tensor], eta: float, state: Any
    ) -> tuple[dict[str, Tensor], Any]: ...


def gd_step(
    params: dict[str, Tensor], grads: dict[str, Tensor], eta: float, state: Any = None
) -> tuple[dict[str, Tensor], None]:
    """Plain gradient descent: ``theta - eta * g``."""
    return {k: p - eta * grads[k] for k, p in params.items()}, None


# --------------------------------------------------------------------------------------
# The catapult estimate of eta_c


@dataclass(frozen=True)
class CriticalLRInfo:
    """Result of the eta_c search.

    ``eta_c`` is the crossing ``L(theta_n) = L(theta_0)`` (``n = num_steps``), bracketed
    by ``bracket = (lo, hi)``: ``n`` steps at ``lo`` did not raise the loss, at ``hi``
    they did, and ``hi / lo - 1 <= eta_rtol`` when ``tolerance_met``; ``eta_c = hi``.
    ``history`` lists every ``(eta, L(theta_n)/L(theta_0))`` tried, in order.

    The check: ``check_steps`` steps at the constant rate ``eta_c`` end at
    ``check_ratio = L(theta_check)/L(theta_0)``; ``overshoots`` is True when that ratio
    exceeds ``check_limit``, i.e. training at ``eta_c`` blows up although ``n`` steps
    did not (in muP the first gradient can be nearly orthogonal to the top Hessian
    eigenvector, and the one-step estimate lands above the divergence boundary).
    """

    eta_c: float
    bracket: tuple[float, float]
    initial_loss: float
    num_loss_evals: int
    num_grad_evals: int
    history: tuple[tuple[float, float], ...]
    tolerance_met: bool  # False when bisection stopped on max_bisections
    check_ratio: float | None = None
    overshoots: bool | None = None


def catapult_search(
    loss_fn: LossFn,
    params: Params,
    *,
    optimizer: StepFn | None = None,
    eta_start: float = 1e-3,
    num_steps: int = 1,
    eta_rtol: float = 1e-2,
    max_doublings: int = 40,
    max_bisections: int = 60,
    check_steps: int = 0,
    check_limit: float = 2.0,
) -> CriticalLRInfo:
    """The loss-catapult search for ``eta_c``, forward/backward passes only.

    ``eta_c`` is where ``num_steps`` steps of ``optimizer`` from ``params`` start to
    raise the loss: the crossing ``L(theta_n) = L(theta_0)``. Starting at ``eta_start``,
    eta is doubled (or halved, if the start already raises the loss) until a bracket
    ``lo < eta_c <= hi`` is found, which is then always bisected on a log scale until
    ``hi / lo - 1 <= eta_rtol``; ``eta_c = hi``. On a quadratic one GD step raises the
    loss iff ``eta > 2 g.g / (g.H.g)``, so ``eta_c * lambda_H >= 2``, with equality when
    the gradient lies along the top eigenvector. Raises RuntimeError when no bracket is
    found within ``max_doublings``.

    Args:
        loss_fn: ``params -> scalar loss``, finite and positive at ``params``.
        params: the starting point, a dict of tensors (never modified).
        optimizer: the update rule (:class:`StepFn`); gradient descent by default.
        eta_start: first learning rate tried.
        num_steps: steps ``n`` per trial learning rate.
        eta_rtol: relative width ``hi / lo - 1`` of the final bracket.
        max_doublings: most doublings (or halvings) while looking for a bracket.
        max_bisections: most bisections; ``tolerance_met`` says whether they sufficed.
        check_steps: when > 0, run that many steps at the constant rate ``eta_c`` and
            report ``check_ratio`` and ``overshoots`` (see :class:`CriticalLRInfo`).
        check_limit: the check's loss ratio above which ``overshoots`` is True.
    """
    _check_search_options(
        loss_fn, eta_start, num_steps, max_doublings, max_bisections, eta_rtol, check_limit
    )
    if not (isinstance(check_steps, int) and check_steps >= 0):
        raise ValueError(f"check_steps must be a non-negative integer, got {check_steps!r}")
    probe = _LossRatios(loss_fn, params, optimizer or gd_step)
    n = int(num_steps)
    lo, hi = _bracket(probe, float(eta_start), n, int(max_doublings))
    lo, hi, met = _bisect(probe, lo, hi, n, eta_rtol, int(max_bisections))
    check = probe.ratio(hi, check_steps, record=False) if check_steps else None
    return CriticalLRInfo(
        eta_c=hi,
        bracket=(lo, hi),
        initial_loss=probe.loss0,
        num_loss_evals=probe.num_loss_evals,
        num_grad_evals=probe.num_grad_evals,
        history=tuple(probe.history),
        tolerance_met=met,
        check_ratio=check,
        overshoots=None if check is None else check > check_limit,
    )


def critical_learning_rate(loss_fn: LossFn, params: Params, **options: Any) -> float:
    """Critical learning rate ``eta_c`` from the loss catapult (forward/backward only).

    Takes :func:`catapult_search`'s options; that function also returns the bracket,
    the cost and the constant-rate check.
    """
    return catapult_search(loss_fn, params, **options).eta_c


def _check_search_options(
    loss_fn: LossFn,
    eta_start: float,
    num_steps: int,
    max_doublings: int,
    max_bisections: int,
    eta_rtol: float,
    check_limit: float,
) -> None:
    if not callable(loss_fn):
        raise ValueError("loss_fn must be a callable params -> scalar loss")
    check_positive("eta_start", eta_start)
    check_positive("num_steps", num_steps, integer=True)
    check_positive("max_doublings", max_doublings, integer=True)
    check_positive("max_bisections", max_bisections, integer=True)
    check_positive("eta_rtol", eta_rtol)
    check_positive("check_limit", check_limit)


class _LossRatios:
    """``L(theta_n) / L(theta_0)`` after ``n`` steps at a given eta from fixed
    ``params``, counting loss and gradient evaluations and recording every eta tried."""

    def __init__(self, loss_fn: LossFn, params: Params, step: StepFn) -> None:
        self.loss_fn, self.step = loss_fn, step
        self.num_loss_evals = self.num_grad_evals = 0
        self.history: list[tuple[float, float]] = []
        self.theta0 = {k: p.detach() for k, p in params.items()}
        self.loss0, self.grads0 = self._loss_and_grad(self.theta0)
        if not math.isfinite(self.loss0) or self.loss0 <= 0:
            raise ValueError(f"loss at params must be finite and positive, got {self.loss0}")

    def _loss_and_grad(self, theta: dict[str, Tensor]) -> tuple[float, dict[str, Tensor]]:
        leaves = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
        loss = self.loss_fn(leaves)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError("loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(loss, list(leaves.values()))
        self.num_grad_evals += 1
        return float(loss.detach()), dict(zip(leaves, grads, strict=True))

    def ratio(self, eta: float, steps: int, record: bool = True) -> float:
        """The loss ratio after ``steps`` steps at ``eta`` (inf once the loss is not finite)."""
        # The first gradient is the same for every eta, so a one-step probe costs one
        # forward pass; later steps need fresh gradients.
        theta, state = self.step(self.theta0, self.grads0, eta, None)
        for _ in range(steps - 1):
            loss, grads = self._loss_and_grad(theta)
            if not math.isfinite(loss):
                break
            theta, state = self.step(theta, grads, eta, state)
        with torch.no_grad():
            loss = float(self.loss_fn(theta))
        self.num_loss_evals += 1
        ratio = loss / self.loss0 if math.isfinite(loss) else math.inf
        if record:
            self.history.append((eta, ratio))
        return ratio


def _bracket(probe: _LossRatios, eta: float, n: int, max_doublings: int) -> tuple[float, float]:
    """Exponential search from ``eta`` for ``lo`` (loss did not rise) < ``hi`` (it rose)."""
    if probe.ratio(eta, n) > 1.0:
        hi = eta
        for _ in range(max_doublings):
            eta /= 2
            if probe.ratio(eta, n) <= 1.0:
                return eta, hi
            hi = eta
        raise RuntimeError(
            f"loss rises after {n} step(s) even at eta={eta:g}; "
            "is params a minimum or loss_fn noisy?"
        )
    lo = eta
    for _ in range(max_doublings):
        eta *= 2
        if probe.ratio(eta, n) > 1.0:
            return lo, eta
        lo = eta
    raise RuntimeError(f"loss never rose up to eta={eta:g}; raise max_doublings")


def _bisect(
    probe: _LossRatios, lo: float, hi: float, n: int, eta_rtol: float, max_bisections: int
) -> tuple[float, float, bool]:
    """Narrow the bracket until ``hi / lo - 1 <= eta_rtol`` (the returned flag) or out of
    bisections. On a log scale: eta_c is a scale, and the bracket spans a factor of 2."""
    met = hi / lo - 1.0 <= eta_rtol
    for _ in range(max_bisections):
        if met:
            break
        mid = math.sqrt(lo * hi)
        if probe.ratio(mid, n) > 1.0:
            hi = mid
        else:
            lo = mid
        met = hi / lo - 1.0 <= eta_rtol
    return lo, hi, met


# --------------------------------------------------------------------------------------
# Regime detection on logged trajectories


def _as_array(name: str, values, length: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return arr


def classify_regime(
    sharpness: Sequence[float] | np.ndarray,
    steps: Sequence[float] | np.ndarray | None = None,
    *,
    window: float | None = None,
    rel_tol: float = 0.05,
) -> str:
    """``"sharpening"``, ``"reduction"`` or ``"flat"`` from early-training sharpness.

    Compares the median of the last third of the early window with the first finite
    measurement; a relative change beyond ``rel_tol`` either way names the regime.
    ``window`` counts training steps when ``steps`` is given, measurements otherwise;
    by default it is the first quarter of the measurements (at least 3). NaNs (steps
    without a measurement) are ignored; fewer than 2 finite values give ``"flat"``.
    """
    s = _as_array("sharpness", sharpness)
    idx = np.arange(len(s), dtype=np.float64)
    t = idx if steps is None else _as_array("steps", steps, len(s))
    if not rel_tol >= 0:
        raise ValueError(f"rel_tol must be non-negative, got {rel_tol!r}")
    finite = np.isfinite(s) & np.isfinite(t)
    s, t = s[finite], t[finite]
    if len(s) < 2 or s[0] == 0:
        return "flat"
    if window is None:
        early = s[: max(3, math.ceil(len(s) / 4))]
    else:
        if not window > 0:
            raise ValueError(f"window must be positive, got {window!r}")
        early = s[t - t[0] <= window] if steps is not None else s[: max(2, int(window))]
    if len(early) < 2:
        return "flat"
    tail = early[len(early) - max(1, len(early) // 3) :]
    change = (float(np.median(tail)) - s[0]) / abs(s[0])
    if change > rel_tol:
        return "sharpening"
    if change < -rel_tol:
        return "reduction"
    return "flat"


@dataclass(frozen=True)
class CatapultEvent:
    """One loss catapult: a spike above the running minimum that came back down.

    Steps are training steps (or indices when no steps were given). ``loss_ratio`` is
    peak loss over the running minimum before the spike. Sharpness values are the last
    finite measurement before the spike and the first at or after its end (NaN if none).
    """

    start_step: float
    peak_step: float
    end_step: float
    loss_ratio: float
    sharpness_before: float
    sharpness_after: float


def detect_catapults(
    loss: Sequence[float] | np.ndarray,
    sharpness: Sequence[float] | np.ndarray | None = None,
    *,
    steps: Sequence[float] | np.ndarray | None = None,
    spike_factor: float = 1.5,
    require_sharpness_drop: bool = True,
) -> list[CatapultEvent]:
    """Find loss catapults in a training trajectory.

    A spike starts when the loss exceeds ``spike_factor`` times its running minimum and
    ends when it falls back below that level; spikes that never come down (divergence)
    are not catapults. When ``sharpness`` (aligned with ``loss``, NaN where unmeasured)
    is given and ``require_sharpness_drop``, an event also needs the sharpness after the
    spike to be lower than before it (kept when either side was never measured).
    """
    if not spike_factor > 1.0:
        raise ValueError(f"spike_factor must be greater than 1, got {spike_factor!r}")
    y = _as_array("loss", loss)
    n = len(y)
    t = np.arange(n, dtype=np.float64) if steps is None else _as_array("steps", steps, n)
    s = np.full(n, np.nan) if sharpness is None else _as_array("sharpness", sharpness, n)

    events: list[CatapultEvent] = []
    running_min = math.inf
    i = 0
    while i < n:
        if np.isnan(y[i]):  # not measured at this step
            i += 1
            continue
        if y[i] <= spike_factor * running_min:
            running_min = min(running_min, y[i])
            i += 1
            continue
        # A spike: find where it returns below the threshold, skipping NaN entries.
        level, start = spike_factor * running_min, i
        end = next((j for j in range(i, n) if y[j] <= level), None)
        if end is None:
            break
        segment = np.where(np.isnan(y[start:end]), -np.inf, y[start:end])
        peak = start + int(np.argmax(segment))
        before = s[:start][np.isfinite(s[:start])]
        after = s[end:][np.isfinite(s[end:])]
        s_before = float(before[-1]) if len(before) else math.nan
        s_after = float(after[0]) if len(after) else math.nan
        dropped = not (np.isfinite(s_before) and np.isfinite(s_after)) or s_after < s_before
        if sharpness is None or not require_sharpness_drop or dropped:
            events.append(
                CatapultEvent(
                    start_step=float(t[start]),
                    peak_step=float(t[peak]),
                    end_step=float(t[end]),
                    loss_ratio=float(y[peak] / running_min),
                    sharpness_before=s_before,
                    sharpness_after=s_after,
                )
            )
        i = end
    return events


def warmup_end_ratio(
    sharpness: Sequence[float] | np.ndarray,
    lr: Sequence[float] | np.ndarray,
    steps: Sequence[float] | np.ndarray,
    warmup_steps: float,
    threshold_fn: Callable[[float], float] = sgd_threshold,
) -> float:
    """Sharpness at the end of warmup over the stability threshold there.

    Uses the last finite sharpness measurement at or before ``warmup_steps`` (the first
    after it if none), and ``threshold_fn(lr)`` at that step, e.g. ``sgd_threshold``
    (then the ratio is ``lambda_H * eta / 2``) or ``adam_threshold`` for pre-conditioned
    sharpness. NaN when nothing was measured. Above 1 means past the edge of stability.
    """
    s = _as_array("sharpness", sharpness)
    eta = _as_array("lr", lr, len(s))
    t = _as_array("steps", steps, len(s))
    ok = np.isfinite(s) & np.isfinite(eta) & np.isfinite(t)
    if not ok.any():
        return math.nan
    before = np.flatnonzero(ok & (t <= warmup_steps))
    i = before[np.argmax(t[before])] if len(before) else np.flatnonzero(ok)[np.argmin(t[ok])]
    return float(s[i] / threshold_fn(float(eta[i])))
