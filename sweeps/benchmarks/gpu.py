"""Benchmark for a GPU: packed training throughput, and how close it comes to the device.

Run via ``warmup-sweep bench gpu [--device cuda] [--json] [--quick]`` (one command;
``--device cpu --quick`` is its smoke test). Two numbers, each from one process:

- trial-steps per second of K = 64 small-MLP trials packed against the same trials one
  at a time (target: at least 20x on a GPU);
- the fraction of the device's measured float32 matmul peak that packed training of
  the quickstart's model reaches, counting 6 x batch x parameters FLOPs per
  trial-step, at the pack size ``pack_size: auto`` picks on the device.

Curvature is kept to the minimum every trial takes (lambda0 from 2 Lanczos steps),
so both numbers are about training. Set-up is included, as a sweep pays it.
"""

from __future__ import annotations

from typing import Any

import torch

from sweeps.benchmarks.packing import matmul_flops, timed, trial_configs
from sweeps.packing import auto_pack_size
from trials import Problem, run_pack, run_trial

__all__ = ["MODELS", "format_table", "run"]

MODELS = {
    "small MLP 64-128-128-10, digits, batch 512": {
        "model": {"name": "fcn", "width": 128, "depth": 3},
        "dataset": {"name": "digits", "train_size": 1024, "test_size": 256},
        "batch_size": 512,
    },
    "quickstart FCN-4-128, digits, full batch 1024": {
        "model": {"name": "fcn", "width": 128, "depth": 4},
        "dataset": {"name": "digits", "train_size": 1024, "test_size": 256},
        "loss": "mse",
    },
}


def _packed_vs_alone(model: dict[str, Any], k: int, steps: int, device: str) -> dict[str, Any]:
    configs = trial_configs(model, k, steps, device)
    problem = Problem(configs[0])
    warm = trial_configs(model, 2, 1, device)  # first calls pay one-off dispatch and allocation
    run_trial(warm[0], problem=problem)
    run_pack(warm, problem=problem)
    alone = timed(lambda: [run_trial(c, problem=problem) for c in configs], device)
    packed = timed(lambda: run_pack(configs, problem=problem), device)
    work = k * steps
    return {"k": k, "steps": steps, "alone": work / alone, "packed": work / packed}


def _peak_fraction(model: dict[str, Any], steps: int, device: str, most: int) -> dict[str, Any]:
    config = trial_configs(model, 1, steps, device)[0]
    problem = Problem(config)
    choice = auto_pack_size(config, problem=problem, most=most)
    k = max(choice.slots, 1)
    row = _packed_vs_alone(model, k, steps, device)
    params = sum(p.numel() for p in problem.build_model(config.init_seed).parameters())
    flops = 6.0 * problem.batch_size() * params * row["packed"]
    return {**row, "pack_size": k, "why": choice.reason, "flops": flops}


def run(quick: bool = False, device: str = "cuda") -> dict[str, Any]:
    """Measure both numbers on `device`; ``quick`` uses K = 4 and a few steps."""
    (small_name, small), (qs_name, qs) = MODELS.items()
    k, steps, most = (4, 3, 4) if quick else (64, 50, 64)
    peak = matmul_flops(device, n=8192 if device.startswith("cuda") else 1024)
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "quick": quick,
        "matmul_flops": peak,
        "packed": {"model": small_name, **_packed_vs_alone(small, k, steps, device)},
        "peak": {"model": qs_name, **_peak_fraction(qs, steps, device, most)},
    }


def format_table(result: dict[str, Any]) -> str:
    """The two numbers of :func:`run` as text, with what they are computed from."""
    p, q = result["packed"], result["peak"]
    peak = result["matmul_flops"]
    return "\n".join(
        [
            f"{result['device_name']} ({result['device']}), torch {result['torch']}; "
            f"measured float32 matmul peak {peak / 1e12:.2f} TFLOP/s",
            f"{p['model']}, {p['steps']} steps per trial, trial-steps/s:",
            f"  one at a time {p['alone']:10.1f}",
            f"  packed K={p['k']:<3} {p['packed']:10.1f}  {p['packed'] / p['alone']:.1f}x",
            f"{q['model']}, packed K={q['pack_size']} ({q['why']}):",
            f"  {q['packed']:.1f} trial-steps/s = {q['flops'] / 1e12:.3f} TFLOP/s, "
            f"{q['flops'] / peak:.1%} of the matmul peak",
        ]
    )
