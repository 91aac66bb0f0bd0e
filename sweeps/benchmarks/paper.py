"""Benchmark: the full-scale paper spec's trials on a device, at reduced steps.

Runs a few trials of the bundled `paper-wrn-cifar10-adam` spec (official WRN-16-4,
augmentation, batch 128; its Adam, GI-Adam and RAdam at one eta and T_wrm) for
`steps` updates each, one at a time and packed, on `device`, and prints trial-steps
per second: what a GPU does with the paper's own configuration, and so how many
GPU-hours the spec needs. Without CIFAR-10 archives (`data_dir`, or
`WARMUP_SWEEPS_DATA`), the trials read Gaussian images of CIFAR's shape
(3 x 32 x 32, 10 classes): the same arithmetic, different numbers.
Curvature is kept to lambda0 by 2 Lanczos steps on one batch, so the numbers are about
training. `quick` shrinks the model and steps for a smoke test on a CPU.
"""

from __future__ import annotations

from typing import Any

from sweeps.benchmarks.packing import timed
from sweeps.spec import load_spec
from trials import DataError, Problem, TrialConfig, run_pack, run_trial

__all__ = ["format_table", "run"]

SPEC = "paper-wrn-cifar10-adam"
FULL_STEPS = 100_000  # the spec's num_steps
CIFAR_SHAPED = {"name": "gaussian", "dim": 3 * 32 * 32, "image_shape": [3, 32, 32]}


def _configs(
    device: str, steps: int, quick: bool, dataset: dict[str, Any] | None
) -> list[TrialConfig]:
    """One trial per optimizer of the paper spec, at its grid's first eta and T_wrm 1;
    `dataset` in place of the spec's (None: the spec's CIFAR-10)."""
    spec, _ = load_spec(SPEC)
    # Training throughput: curvature kept to the minimum a trial takes (lambda0, 2 Lanczos
    # steps on one batch) and no evaluation.
    base = dict(spec.base, device=device, num_steps=steps, sharpness_every=0, eval_every=0)
    base.update(sharpness_max_iter=2, lambda0_batches=1)
    base["dataset"] = dict(dataset or base["dataset"])
    if quick:
        base["model"] = dict(base["model"], depth=10, widen=1, base_channels=4)
        base["batch_size"] = 16
        base["dataset"].update(train_size=64, test_size=16)
    optimizer = base["optimizer"]
    return [
        TrialConfig.model_validate(
            {
                **base,
                "eta_trgt": spec.grid["eta_trgt"][0],
                "warmup_steps": 1,
                "optimizer": {**optimizer, "name": name},
            }
        )
        for name in spec.grid["optimizer.name"]
    ]


def _problem(
    device: str, steps: int, quick: bool, data_dir: str | None
) -> tuple[list[TrialConfig], Problem, str]:
    """The trials and their problem on CIFAR-10, or on CIFAR-shaped Gaussian images when
    no archives are found."""
    spec_dataset = {"name": "cifar10", "standardize_over": "example", "data_dir": data_dir}
    configs = _configs(device, steps, quick, spec_dataset)
    try:
        return configs, Problem(configs[0]), "cifar10"
    except DataError:
        configs = _configs(device, steps, quick, CIFAR_SHAPED)
        return configs, Problem(configs[0]), "gaussian 3x32x32 (no CIFAR-10 archives found)"


def run(
    quick: bool = False, device: str = "cpu", steps: int | None = None, data_dir: str | None = None
) -> dict[str, Any]:
    """Trial-steps per second of the paper spec's trials, one at a time and packed."""
    steps = steps or (3 if quick else 50)
    configs, problem, data = _problem(device, steps, quick, data_dir)
    run_trial(configs[0].model_copy(update={"num_steps": 1}), problem=problem)  # warm-up
    one = timed(lambda: [run_trial(c, problem=problem) for c in configs], device)
    packed = timed(lambda: run_pack(configs, problem=problem), device)
    work = len(configs) * steps
    params = sum(p.numel() for p in problem.build_model(configs[0].init_seed).parameters())
    return {
        "spec": SPEC,
        "device": str(problem.device),
        "data": data,
        "trials": [c.optimizer.name for c in configs],
        "steps": steps,
        "batch_size": problem.batch_size(),
        "num_params": params,
        "one_at_a_time": work / one,
        "packed": work / packed,
        "hours_per_full_trial": FULL_STEPS / (work / one) / 3600,
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as lines of trial-steps per second and the implied cost of the spec."""
    return "\n".join(
        [
            f"{result['spec']} on {result['device']}, data {result['data']}: "
            f"{', '.join(result['trials'])} x {result['steps']} steps, batch {result['batch_size']}, "
            f"{result['num_params']:,} parameters",
            f"  one at a time  {result['one_at_a_time']:8.1f} trial-steps/s",
            f"  packed         {result['packed']:8.1f} trial-steps/s "
            f"({result['packed'] / result['one_at_a_time']:.2f}x)",
            f"  one {FULL_STEPS:,}-step trial, one at a time: "
            f"{result['hours_per_full_trial']:.2f} h on this device",
        ]
    )
