"""Curvature at initialization: lambda_H(0), eta_c and Adam's pre-conditioned sharpness."""

from __future__ import annotations

import time
from typing import Any

import torch

from trials.config import TrialConfig
from trials.trial import Problem, critical_lr, make_optimizer
from warmup_core import curvature, stability


def probe(config: TrialConfig, problem: Problem | None = None) -> dict[str, Any]:
    """Measure a config's initial curvature on its measurement batch (no training).

    Returns lambda0, eta_c (catapult estimate), the largest stable learning rate
    2/lambda0 (momentum-corrected for SGD), and for the Adam family the
    pre-conditioned sharpness with the pre-conditioner of the first update and
    the learning rate at which it meets Adam's threshold.
    """
    start = time.perf_counter()
    problem = problem or Problem(config)
    model = problem.build_model(config.init_seed)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    loss_fn = problem.loss_fn(model, *problem.measurement_batch())
    gen = torch.Generator(problem.device).manual_seed(config.init_seed)
    opts = dict(tol=config.sharpness_tol, max_iter=config.sharpness_max_iter, generator=gen)
    lambda0 = curvature.sharpness(loss_fn, params, **opts)
    momentum = config.optimizer.momentum or 0.0
    out: dict[str, Any] = {
        "model": config.model.name,
        "dataset": config.dataset.name,
        "parameterization": config.parameterization,
        "optimizer": config.optimizer.name,
        "init_loss": float(loss_fn(params).item()),
        "lambda0": lambda0,
        "eta_c": critical_lr(config, loss_fn, params),
        "sgd_max_stable_lr": (2 + 2 * momentum) / lambda0,
    }
    out["eta_c_times_lambda0"] = out["eta_c"] * lambda0
    if config.optimizer.is_adam:
        loss = loss_fn(params)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
        precond = make_optimizer(config, model).peek_preconditioner(grads)
        pre = curvature.preconditioned_sharpness(loss_fn, params, precond, **opts)
        beta1 = 0.9 if config.optimizer.beta1 is None else config.optimizer.beta1
        out["preconditioned_sharpness"] = pre
        out["adam_max_stable_lr"] = float(stability.adam_threshold(1.0, beta1=beta1)) / pre
    out["seconds"] = time.perf_counter() - start
    return out
