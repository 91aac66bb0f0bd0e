"""Benchmark: what tracking the sharpness during training costs, measured side by side.

Run via ``warmup-sweep bench tracking [--json] [--quick]``. One thread (one trial per
core, as a sweep's workers run), each timing the best of two runs in this process:

- the issue's protocol: FCN-4-512 (SP, SGD) on 1024 digits, 200 full-batch updates,
  without tracking (``sharpness_every: 0``; lambda0 is still measured), with the
  sharpness every 10 updates and at every update;
- the bundled quickstart's trials run one after another, with the spec's own tracking
  (every 20 updates) and without.

Ratios are times over the run without tracking. Sharpness values are exact to
``sharpness_tol`` whatever the schedule, so the measured values of the every-10 run
are compared with the every-update run's at the same updates.

It also times one Hessian-vector product on the protocol's model and data (on the
gradient graph, as tracking computes them) against one training gradient, and states
what that implies: the ratio no tracker of exact products can go below, with one
product per measurement (any measurement) and with two (the fewest that can see the
top two eigenvalues cross), and how many products' worth of time each measurement
took.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from sweeps import expand, load_spec
from trials import Problem, TrialConfig, run_trial
from warmup_core.hvp import HVPOperator

__all__ = ["PROTOCOL", "best_time", "format_table", "run"]

PROTOCOL = {
    "model": {"name": "fcn", "width": 512, "depth": 4},
    "dataset": {"name": "digits", "train_size": 1024, "test_size": 256},
    "parameterization": "sp",
    "optimizer": {"name": "sgd"},
    "eta_trgt": 0.5,
    "eta_trgt_relative_to": "lambda0",
    "warmup_steps": 50,
    "eval_every": 0,
}
EVERY = (0, 10, 1)  # sharpness_every of the protocol's runs; 0 is the baseline
REPEATS = 2  # best of
# The fewest products per measurement: any measurement needs one; seeing the top two
# eigenvalues cross needs the operator on two directions.
FLOOR_PRODUCTS = {10: 2, 1: 1}


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of `repeats` wall-clock timings of `fn()` (seconds), and its last
    return value."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _protocol(steps: int, width: int, repeats: int) -> dict[str, Any]:
    """Seconds of the protocol's run at each `sharpness_every` of `EVERY`."""
    base = {**PROTOCOL, "model": {**PROTOCOL["model"], "width": width}, "num_steps": steps}
    configs = {e: TrialConfig.model_validate({**base, "sharpness_every": e}) for e in EVERY}
    problem = Problem(configs[0])
    run_trial(configs[0].model_copy(update={"num_steps": 2}), problem=problem)  # warm-up
    runs = {}
    for every, config in configs.items():
        seconds, result = best_time(lambda c=config: run_trial(c, problem=problem), repeats)
        runs[every] = {"seconds": seconds, "sharpness": result.steps["sharpness"]}
    costs = _product_cost(problem, configs[0], repeats)
    dense = runs[1]["sharpness"]
    sparse = runs[10]["sharpness"]
    diffs = [
        abs(s - d) / abs(d)
        for s, d in zip(sparse, dense, strict=False)
        if s is not None and d is not None
    ]
    return {
        "steps": steps,
        "width": width,
        "tol": configs[0].sharpness_tol,
        "seconds": {e: r["seconds"] for e, r in runs.items()},
        "ratio": {e: r["seconds"] / runs[0]["seconds"] for e, r in runs.items()},
        "max_rel_diff_every_10_vs_1": max(diffs, default=None),
        **costs,
        "floor": {
            e: 1 + (steps // e) * FLOOR_PRODUCTS[e] * costs["hvp_s"] / runs[0]["seconds"]
            for e in FLOOR_PRODUCTS
        },
        "products_per_measurement": {
            e: (runs[e]["seconds"] - runs[0]["seconds"]) / ((steps // e) * costs["hvp_s"])
            for e in FLOOR_PRODUCTS
        },
    }


def _product_cost(problem: Problem, config: TrialConfig, repeats: int) -> dict[str, float]:
    """Seconds of one training gradient and of one Hessian-vector product on the gradient
    graph (the way tracking computes them), at the protocol's initialization."""
    model = problem.build_model(config.init_seed)
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss_fn = problem.loss_fn(model, problem.x_train, problem.y_train)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    op = HVPOperator(loss_fn, params)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    rounds = 5 * repeats  # short calls: more of them than of the runs

    def gradient() -> None:
        torch.autograd.grad(loss_fn(leaves), list(leaves.values()))

    gradient(), op(v)  # warm-up
    grad_s = best_time(gradient, rounds)[0]
    hvp_s = best_time(lambda: op(v), rounds)[0]
    return {"gradient_s": grad_s, "hvp_s": hvp_s}


def _quickstart(quick: bool, repeats: int) -> dict[str, Any]:
    """Seconds of the quickstart's trials one after another, with and without tracking."""
    spec, _ = load_spec("quickstart")
    configs = [p.config for p in expand(spec)]
    if quick:
        configs = [
            c.model_copy(update={"num_steps": 10, "sharpness_every": 5}) for c in configs[:2]
        ]
    every = configs[0].sharpness_every
    plain = [c.model_copy(update={"sharpness_every": 0}) for c in configs]
    run_trial(plain[0].model_copy(update={"num_steps": 2}))  # warm-up
    seconds, results = {}, {}
    for label, batch in (("tracked", configs), ("untracked", plain)):
        seconds[label], results[label] = best_time(
            lambda b=batch: [run_trial(c) for c in b], repeats
        )
    # Updates with a sharpness value: update 1's is lambda0 (no product), but a trial that
    # ran every update measures once more at its end, so this counts about right.
    measurements = sum(sum(v is not None for v in r.steps["sharpness"]) for r in results["tracked"])
    costs = _product_cost(Problem(configs[0]), configs[0], repeats)
    spent = seconds["tracked"] - seconds["untracked"]
    return {
        "trials": len(configs),
        "sharpness_every": every,
        "seconds": seconds,
        "ratio": seconds["tracked"] / seconds["untracked"],
        "measurements": measurements,
        **costs,
        "floor": 1 + measurements * 2 * costs["hvp_s"] / seconds["untracked"],
        "products_per_measurement": spent / (measurements * costs["hvp_s"]),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Time the protocol and the quickstart with and without tracking; ``quick`` shrinks
    both to seconds (for smoke tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    try:
        protocol = _protocol(*((12, 32, 1) if quick else (200, 512, REPEATS)))
        quickstart = _quickstart(quick, 1 if quick else REPEATS)
    finally:
        torch.set_num_threads(threads)
    return {
        "quick": quick,
        "torch": torch.__version__,
        "threads": 1,
        "load_average": [load_before, os.getloadavg()[0]],
        "protocol": protocol,
        "quickstart": quickstart,
    }


def format_table(result: dict[str, Any]) -> str:
    """The ratios of :func:`run` as text, with the times they are quotients of."""
    p, q = result["protocol"], result["quickstart"]
    load = result["load_average"]
    lines = [
        f"tracking cost, 1 thread, best of {1 if result['quick'] else REPEATS} "
        f"(load average {load[0]:.2f} before, {load[1]:.2f} after)",
        f"FCN-4-{p['width']}, SP, SGD, 1024 digits, {p['steps']} full-batch updates, "
        f"sharpness_tol {p['tol']:g}:",
    ]
    names = {0: "no tracking", 10: "sharpness every 10", 1: "sharpness every update"}
    for every in EVERY:
        lines.append(
            f"  {names[every]:<24} {p['seconds'][every]:8.2f} s  {p['ratio'][every]:5.2f}x"
        )
    lines.append(
        f"  one Hessian-vector product {1e3 * p['hvp_s']:.1f} ms = "
        f"{p['hvp_s'] / p['gradient_s']:.2f} gradients ({1e3 * p['gradient_s']:.1f} ms); "
        "with exact products no tracker goes below:"
    )
    for every, products in FLOOR_PRODUCTS.items():
        lines.append(
            f"    {names[every]:<22} {p['floor'][every]:5.2f}x at {products} product"
            f"{'s' if products > 1 else ''} per measurement "
            f"(these runs: {p['products_per_measurement'][every]:.1f} products' time)"
        )
    if p["max_rel_diff_every_10_vs_1"] is not None:
        lines.append(
            "  every-10 values vs every-update values at the same updates: max rel diff "
            f"{p['max_rel_diff_every_10_vs_1']:.1e}"
        )
    lines += [
        f"quickstart, {q['trials']} trials one after another in this process:",
        f"  {'own tracking (every ' + str(q['sharpness_every']) + ')':<24} "
        f"{q['seconds']['tracked']:8.2f} s  {q['ratio']:5.2f}x",
        f"  {'no tracking':<24} {q['seconds']['untracked']:8.2f} s  1.00x",
        f"  one product {1e3 * q['hvp_s']:.1f} ms = {q['hvp_s'] / q['gradient_s']:.2f} "
        f"gradients; {q['measurements']} measurements: no tracker of exact products goes "
        f"below {q['floor']:.2f}x at 2 products per measurement "
        f"(these runs: {q['products_per_measurement']:.1f} products' time)",
    ]
    return "\n".join(lines)
