"""Benchmark: Ray Tune orchestration overhead against a plain sequential loop.

Runs the same trials (the quickstart grid, or a tiny one with `quick`) three
ways in one process tree, side by side:
- sequential: `run_trial` in a Python loop, no Ray;
- Ray Tune, one trial at a time (`max_concurrent: 1`), so the difference to
  the loop is pure orchestration (scheduling, actor start-up, reporting);
- Ray Tune with every CPU busy, the way `warmup-sweep run` runs.
Results go to a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Any

from sweeps import SweepSpec, expand, load_spec

__all__ = ["format_table", "run"]


def _spec(quick: bool, **changes: Any) -> SweepSpec:
    spec, _ = load_spec("quickstart")
    data = spec.model_dump(mode="json")
    data["pack_size"] = 1  # one Ray trial per config: this measures per-trial overhead
    if quick:
        data["base"].update(num_steps=20, sharpness_every=0, eval_every=0)
        data["base"]["model"]["width"] = 32
        data["grid"] = {"eta_trgt": data["grid"]["eta_trgt"]}
        data["grid"]["eta_trgt"]["values"] = [1, 4]
    data.update(changes)
    return SweepSpec.model_validate(data)


def _sequential(spec: SweepSpec, results: str) -> float:
    from trials import run_trial

    start = time.perf_counter()
    for planned in expand(spec):
        run_trial(planned.config, results=results, sweep=spec.name)
    return time.perf_counter() - start


def _ray(spec: SweepSpec, results: str) -> float:
    from sweeps import run_sweep

    start = time.perf_counter()
    outcome = run_sweep(spec, results, stream=io.StringIO())
    if outcome.missing:
        raise RuntimeError(f"benchmark sweep lost trials: {outcome.missing}")
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    """Time the same trials sequentially and through Ray Tune; return seconds and ratios."""
    import ray
    import torch

    from sweeps import init_ray

    cpus = os.cpu_count() or 1
    serial = _spec(quick, name="bench-serial", max_concurrent=1)
    parallel = _spec(quick, name="bench-parallel")
    n = len(expand(serial))
    torch.set_num_threads(1)  # what each Ray worker gets with resources.cpu = 1
    with tempfile.TemporaryDirectory() as tmp:
        init_ray(None, num_cpus=cpus)
        try:
            t_seq = _sequential(serial, os.path.join(tmp, "seq"))
            t_ray1 = _ray(serial, os.path.join(tmp, "ray1"))
            t_rayn = _ray(parallel, os.path.join(tmp, "rayn"))
        finally:
            ray.shutdown()
    overhead = (t_ray1 - t_seq) / n
    return {
        "trials": n,
        "cpus": cpus,
        "sequential_s": t_seq,
        "ray_one_at_a_time_s": t_ray1,
        "ray_all_cpus_s": t_rayn,
        "overhead_per_trial_s": overhead,
        "overhead_fraction": (t_ray1 - t_seq) / t_ray1,
        "ray_one_at_a_time_vs_sequential": t_ray1 / t_seq,
        "speedup_all_cpus_vs_sequential": t_seq / t_rayn,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as an aligned text table."""
    r = result
    rows = [
        ("sequential loop (no Ray)", f"{r['sequential_s']:.1f} s", "1.00x"),
        (
            "Ray Tune, 1 trial at a time",
            f"{r['ray_one_at_a_time_s']:.1f} s",
            f"{r['ray_one_at_a_time_vs_sequential']:.2f}x time",
        ),
        (
            f"Ray Tune, {r['cpus']} CPUs",
            f"{r['ray_all_cpus_s']:.1f} s",
            f"{r['speedup_all_cpus_vs_sequential']:.2f}x speed-up",
        ),
    ]
    lines = [f"orchestration overhead, {r['trials']} quickstart trials"]
    lines += [f"  {a:<30} {b:>9}   {c}" for a, b, c in rows]
    lines.append(
        f"  overhead per trial: {r['overhead_per_trial_s']:.2f} s "
        f"({100 * r['overhead_fraction']:.0f}% of the one-at-a-time sweep)"
    )
    return "\n".join(lines)
