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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from sweeps import expand, load_spec
from trials import Problem, TrialConfig, run_trial

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
    }


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
    seconds = {}
    for label, batch in (("tracked", configs), ("untracked", plain)):
        seconds[label], _ = best_time(lambda b=batch: [run_trial(c) for c in b], repeats)
    return {
        "trials": len(configs),
        "sharpness_every": every,
        "seconds": seconds,
        "ratio": seconds["tracked"] / seconds["untracked"],
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
    ]
    return "\n".join(lines)
