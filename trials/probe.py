"""Curvature at initialization: lambda_H(0), eta_c and Adam's pre-conditioned sharpness."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from trials.config import TrialConfig
from trials.problem import Problem, critical_lr, make_optimizer
from warmup_core import curvature

__all__ = ["probe"]


def probe(config: TrialConfig, problem: Problem | None = None) -> dict[str, Any]:
    """Measure a config's initial curvature on its measurement batch (no training).

    Returns lambda0, eta_c (catapult estimate for the configured optimizer, with its
    check: whether steps at the constant rate eta_c blow up), the largest stable
    rate from the optimizer's threshold at lambda0 (for SGD), and for the Adam family
    the pre-conditioned sharpness of the first update's operator and the rate at
    which it meets Adam's threshold.
    """
    start = time.perf_counter()
    problem = problem or Problem(config)
    model = problem.build_model(config.init_seed)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    loss_fns = [problem.loss_fn(model, x, y) for x, y in problem.measurement_batches(None)]
    gen = torch.Generator(problem.device).manual_seed(config.init_seed)
    opts = dict(tol=config.sharpness_tol, max_iter=config.sharpness_max_iter, generator=gen)
    lambda0 = sum(curvature.sharpness(fn, params, **opts) for fn in loss_fns) / len(loss_fns)
    optimizer = make_optimizer(config, model)
    loss_fn = loss_fns[0]
    out: dict[str, Any] = {
        "model": config.model.name,
        "dataset": config.dataset.name,
        "parameterization": config.parameterization,
        "optimizer": config.optimizer.name,
        "init_loss": float(loss_fn(params).item()),
        "lambda0": lambda0,
        **critical_lr(config, loss_fn, params, optimizer),
    }
    out["eta_c_times_lambda0"] = out["eta_c"] * lambda0
    if config.optimizer.is_adam:
        loss = loss_fn(params)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        precond = optimizer.peek_preconditioner(params, grads)
        pre = curvature.preconditioned_sharpness(
            with_l2(loss_fn, optimizer.coupled_l2), params, precond, **opts
        )
        out["preconditioned_sharpness"] = pre
        out["adam_max_stable_lr"] = optimizer.largest_stable_rate(pre)
    else:
        out["sgd_max_stable_lr"] = optimizer.largest_stable_rate(lambda0)
    out["seconds"] = time.perf_counter() - start
    return out


def with_l2(loss_fn: Callable, l2: float) -> Callable:
    """`loss_fn` plus `l2 / 2 * |theta|^2`: its Hessian is H + l2 I (coupled weight decay)."""
    if not l2:
        return loss_fn
    return lambda params: loss_fn(params) + 0.5 * l2 * sum(p.pow(2).sum() for p in params.values())
