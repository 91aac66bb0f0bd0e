"""Benchmark: packed trials against the same trials one at a time, and through Ray Tune.

Trial-steps per second (trials x updates / wall time, set-up included) for
K = 1, 4, 16, 64 trials of one architecture that differ in eta_trgt and init
seed, three ways side by side:
- sequential: `run_trial` for each trial in one process;
- packed: `run_pack` on all K, with batched matrix products and with vmap;
- end to end (K = 16, small model): `run_sweep` with one Ray Tune trial per
  config against packs of 16, every CPU busy, the way `warmup-sweep run` runs.
Two models: the paper's mechanism FCN (width 512, depth 4, 5k examples of
3072 dims, full batch) and a small MLP 64-128-128-10 at batch 512 on digits.
Curvature is kept to the minimum every trial takes (lambda0 with 2 Lanczos
steps), so the numbers are about training throughput. `pack_size: auto`'s
choice for each model is shown too, and the fraction of the device's measured
matmul throughput (a large float32 product) that packed training reaches,
counting 6 x batch x parameters FLOPs per trial-step.

Two sweep-level comparisons (not with --quick): the bundled quickstart as
bundled against `pack_size: 1`, end to end; and 16 small-MLP trials of which
half diverge in their first steps, packed against one at a time, statuses
compared.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from sweeps import SweepSpec, init_ray, load_spec, run_sweep
from sweeps.packing import auto_pack_size
from trials import Problem, TrialConfig, run_pack, run_trial

__all__ = ["COMMON", "format_table", "matmul_flops", "run", "timed", "trial_configs"]

SMALL = {
    "model": {"name": "fcn", "width": 128, "depth": 3},
    "dataset": {"name": "digits", "train_size": 1024, "test_size": 256},
    "batch_size": 512,
}
LARGE = {
    "model": {"name": "fcn", "width": 512, "depth": 4},
    "dataset": {"name": "gaussian", "dim": 3072, "train_size": 5000, "test_size": 500},
}
COMMON = {"sharpness_max_iter": 2, "sharpness_every": 0, "eval_every": 0}


def trial_configs(
    model: dict[str, Any], k: int, num_steps: int, device: str = "cpu"
) -> list[TrialConfig]:
    """`k` training-only trials of `model` (its model, dataset and batch keys of a trial
    config) on `device`, at four learning rates and with `k` init seeds."""
    return [
        TrialConfig.model_validate(
            {
                **COMMON,
                **model,
                "device": device,
                "num_steps": num_steps,
                "eta_trgt": 0.01 * (1 + i % 4),
                "init_seed": i,
            }
        )
        for i in range(k)
    ]


def timed(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Wall-clock seconds of `fn()`; on a GPU, from and to an idle device (its queued
    work finished)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_flops(device: str = "cpu", n: int = 1024, repeats: int = 5) -> float:
    """The device's measured float32 matmul throughput (FLOP/s), best of `repeats`."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _flops_per_trial_step(config: TrialConfig, problem) -> float:
    params = sum(p.numel() for p in problem.build_model(config.init_seed).parameters())
    return 6.0 * problem.batch_size() * params


def _in_process(
    model: dict[str, Any], ks: tuple[int, ...], num_steps: int, device: str = "cpu"
) -> list[dict]:
    problem = Problem(trial_configs(model, 1, num_steps, device)[0])
    flops = _flops_per_trial_step(trial_configs(model, 1, num_steps, device)[0], problem)
    warm = trial_configs(
        model, 2, 1, device
    )  # first calls pay one-off dispatch and allocation costs
    run_trial(warm[0], problem=problem)
    run_pack(warm, problem=problem)
    rows = []
    for k in ks:
        configs = trial_configs(model, k, num_steps, device)
        work = k * num_steps
        seq = timed(lambda c=configs: [run_trial(x, problem=problem) for x in c], device)
        row = {"k": k, "sequential": work / seq}
        for mode in ("batched", "vmap"):
            t = timed(lambda c=configs, m=mode: run_pack(c, problem=problem, forward=m), device)
            row[mode] = work / t
        row["flops"] = flops * max(row["batched"], row["vmap"])
        rows.append(row)
    return rows


def _half_diverging(num_steps: int, device: str = "cpu") -> dict[str, Any]:
    """16 small-MLP trials, half at a rate that diverges within a few steps: packed
    against one at a time, with both runs' statuses."""

    configs = [
        c.model_copy(update={"eta_trgt": 50.0 if i % 2 else c.eta_trgt})
        for i, c in enumerate(trial_configs(SMALL, 16, num_steps, device))
    ]
    problem = Problem(configs[0])
    run_pack(configs[:2], problem=problem)  # warm-up
    seq: list = []
    t_seq = timed(lambda: seq.extend(run_trial(c, problem=problem) for c in configs), device)
    packed: list = []
    t_pack = timed(lambda: packed.extend(run_pack(configs, problem=problem)), device)
    statuses = [r.status for r in seq]
    return {
        "trials": len(configs),
        "steps": num_steps,
        "sequential_s": t_seq,
        "packed_s": t_pack,
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "diverged_steps": sorted(r.summary.get("diverged_step") or 0 for r in seq),
        "statuses_identical": statuses == [r.status for r in packed],
    }


def _quickstart() -> dict[str, Any]:
    """Sweep time of the bundled quickstart as bundled, with `pack_size: 1` and with
    `pack_size: 16` (packs whatever the calibration says)."""
    import ray

    bundled, _ = load_spec("quickstart")
    cpus = os.cpu_count() or 1
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        init_ray(None, num_cpus=cpus)
        try:
            for label, size in (("bundled", bundled.pack_size), ("1", 1), ("16", 16)):
                spec = bundled.model_copy(update={"pack_size": size, "name": f"qs-{size}"})
                out = os.path.join(tmp, spec.name)
                times[label] = timed(lambda s=spec, o=out: run_sweep(s, o, stream=io.StringIO()))
        finally:
            ray.shutdown()
    return {"cpus": cpus, "pack_size": bundled.pack_size, "seconds": times}


def _end_to_end(k: int, num_trials: int, num_steps: int) -> dict[str, Any]:
    import ray

    def spec(pack_size: int) -> SweepSpec:
        return SweepSpec.model_validate(
            {
                "name": f"bench-pack{pack_size}",
                "base": {**COMMON, **SMALL, "num_steps": num_steps},
                "grid": {"eta_trgt": [0.01, 0.02, 0.03, 0.04]},
                "seeds": list(range(num_trials // 4)),
                "pack_size": pack_size,
                "logging": {"tensorboard": False},
            }
        )

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        init_ray(None, num_cpus=cpus)
        try:
            times = {}
            for size in (1, k):
                sweep = spec(size)
                t = timed(
                    lambda s=sweep: run_sweep(s, os.path.join(tmp, s.name), stream=io.StringIO())
                )
                times[size] = t
        finally:
            ray.shutdown()
    work = num_trials * num_steps
    return {
        "k": k,
        "trials": num_trials,
        "steps": num_steps,
        "cpus": cpus,
        "ray_per_config": work / times[1],
        "ray_packed": work / times[k],
    }


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Measure packed against sequential and Ray-per-config throughput; return the numbers.

    `device`: where the in-process trials run ('cuda' is untested on a GPU so far); the
    end-to-end sweeps run on the CPU."""

    threads = torch.get_num_threads()
    small_ks, large_ks = ((1, 4), ()) if quick else ((1, 4, 16, 64), (1, 4, 16))
    small_steps, large_steps = (5, 2) if quick else (50, 2)
    result: dict[str, Any] = {
        "threads": threads,
        "device": device,
        "matmul_flops": matmul_flops(device),
        "models": [],
    }
    for name, model, ks, steps in (
        ("MLP 64-128-128-10, digits, batch 512", SMALL, small_ks, small_steps),
        ("FCN-4-512, 5k x 3072, full batch", LARGE, large_ks, large_steps),
    ):
        if not ks:
            continue
        rows = _in_process(model, ks, steps, device)
        auto = auto_pack_size(trial_configs(model, 1, steps, device)[0], cpus=threads)
        result["models"].append(
            {"name": name, "steps": steps, "rows": rows, "auto": auto.slots, "why": auto.reason}
        )
    result["half_diverging"] = _half_diverging(3 if quick else 50, device)
    result["end_to_end"] = None if quick else _end_to_end(16, 32, 50)
    result["quickstart"] = None if quick else _quickstart()
    return result


def format_table(result: dict[str, Any]) -> str:
    """The result as aligned text tables of trial-steps per second and ratios."""
    lines = [
        f"trial packing on {result['device']}, {result['threads']} CPU threads, trial-steps/s "
        f"(ratio to sequential); matmul peak {result['matmul_flops'] / 1e9:.1f} GFLOP/s"
    ]
    for m in result["models"]:
        lines.append(f"\n{m['name']}, {m['steps']} steps per trial; pack_size auto -> {m['auto']}")
        if m.get("why"):
            lines.append(f"  ({m['why']})")
        lines.append(
            f"  {'K':>3}  {'sequential':>11}  {'packed bmm':>17}  {'packed vmap':>17}  of peak"
        )
        for r in m["rows"]:
            seq = r["sequential"]
            lines.append(
                f"  {r['k']:>3}  {seq:>11.1f}  {r['batched']:>9.1f} ({r['batched'] / seq:4.2f}x)"
                f"  {r['vmap']:>9.1f} ({r['vmap'] / seq:4.2f}x)"
                f"  {r['flops'] / result['matmul_flops']:6.1%}"
            )
    h = result["half_diverging"]
    lines.append(
        f"\n{h['trials']} small-MLP trials x {h['steps']} steps, half diverging early "
        f"({h['statuses']}): one at a time {h['sequential_s']:.1f} s, packed "
        f"{h['packed_s']:.1f} s ({h['sequential_s'] / h['packed_s']:.2f}x); statuses "
        f"{'identical' if h['statuses_identical'] else 'DIFFER'}"
    )
    e = result.get("end_to_end")
    if e:
        lines.append(
            f"\nend to end, warmup-sweep run, {e['trials']} small-MLP trials x {e['steps']} steps, "
            f"{e['cpus']} CPUs"
        )
        lines.append(
            f"  one Ray trial per config  {e['ray_per_config']:>9.1f} trial-steps/s  1.00x"
        )
        ratio = e["ray_packed"] / e["ray_per_config"]
        lines.append(
            f"  packs of {e['k']:<3}             {e['ray_packed']:>9.1f} trial-steps/s  {ratio:.2f}x"
        )
    q = result.get("quickstart")
    if q:
        t = q["seconds"]
        lines.append(
            f"\nquickstart sweep, {q['cpus']} CPUs: bundled (pack_size {q['pack_size']}) "
            f"{t['bundled']:.1f} s; pack_size 1 {t['1']:.1f} s "
            f"({t['1'] / t['bundled']:.2f}x the bundled time); pack_size 16 {t['16']:.1f} s "
            f"({t['16'] / t['bundled']:.2f}x)"
        )
    return "\n".join(lines)
