"""Benchmark: what running a sweep through Ray Tune costs, measured side by side.

Run via ``warmup-sweep bench orchestration [--json] [--quick]``. Each time is the best
of two, on every CPU of this machine:

- ideal: the quickstart's trials run one after another in this process (one thread),
  divided by the CPUs (the workers of the sweep);
- the quickstart as shipped, through ``warmup-sweep run`` in a fresh process: wall
  time from the command's start to its exit, Ray's start-up included; its ratio to
  the ideal;
- the same with ``pack_size: 1``: shipped over ``pack_size: 1`` is what ``pack_size:
  auto`` costs or saves (a ratio of at least 1 means the shipped spec is not slower);
- 24 small-MLP trials (12 diverge in their first updates) with ``pack_size: 16``
  against ``pack_size: 1``, through the command line as well;
- one quickstart trial of one update through the command line: what a sweep costs
  beyond its trials (imports, Ray's start-up and shut-down, a worker's start, the
  files). The ideal plus that is the least a sweep through Ray can take here.

``--quick`` shrinks the quickstart to a few tiny trials and leaves out the 24-trial
sweep (for smoke tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from sweeps import expand, load_spec, parse_spec
from sweeps.benchmarks.tracking import best_time
from trials import run_trial

__all__ = ["HALF_DIVERGING", "format_table", "run"]

REPEATS = 2  # best of
# 24 trials of a small MLP, half at rates that diverge within a few updates.
HALF_DIVERGING = {
    "name": "half-diverging",
    "base": {
        "model": {"name": "fcn", "width": 128, "depth": 3},
        "dataset": {"name": "digits", "train_size": 1024, "test_size": 256},
        "batch_size": 512,
        "num_steps": 50,
        "sharpness_max_iter": 2,
        "eval_every": 0,
    },
    "grid": {"eta_trgt": [0.01, 0.02, 0.03, 50.0, 60.0, 70.0], "init_seed": [0, 1, 2, 3]},
    "seeds": [0],
}


def _quickstart_spec(quick: bool) -> dict[str, Any]:
    """The bundled quickstart as plain data (tiny with `quick`)."""
    spec, _ = load_spec("quickstart")
    data = spec.model_dump(mode="json", exclude_unset=True)
    if quick:
        data["base"].update(num_steps=20, sharpness_every=10, eval_every=10)
        data["grid"] = {
            "eta_trgt": {"relative_to": "lambda0", "values": [1, 32]},
            "parameterization": ["sp", "mup"],
        }
    return data


def _one_update(quickstart: dict[str, Any]) -> dict[str, Any]:
    """The quickstart cut to one trial of one update: the command's fixed cost."""
    base = {**quickstart["base"], "num_steps": 1}
    grid = {"eta_trgt": {"relative_to": "lambda0", "values": [1]}}
    return {**quickstart, "name": "one-update", "base": base, "grid": grid}


def _half_diverging(quick: bool) -> dict[str, Any]:
    data = {**HALF_DIVERGING, "base": dict(HALF_DIVERGING["base"])}
    if quick:
        data["base"]["num_steps"] = 5
        data["grid"] = {"eta_trgt": [0.01, 50.0], "init_seed": [0, 1]}
    return data


def _cli_seconds(
    data: dict[str, Any], pack_size: int | str, tmp: Path, cpus: int, repeats: int
) -> float:
    """Best wall time of `warmup-sweep run` on `data` with `pack_size`, in a fresh process."""
    name = f"{data['name']}-pack{pack_size}"
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**data, "name": name, "pack_size": pack_size}))

    def once() -> None:
        results = tempfile.mkdtemp(dir=tmp)
        command = [sys.executable, "-m", "sweeps.cli", "run", str(path), "--results", results]
        done = subprocess.run(
            [*command, "--num-cpus", str(cpus)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name}: warmup-sweep run exited {done.returncode}: {done.stderr}")

    return best_time(once, repeats)[0]


def _serial_seconds(data: dict[str, Any], repeats: int) -> tuple[int, float]:
    """Trials of `data` and the best time of running them one after another here."""
    configs = [p.config for p in expand(parse_spec(data))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each Ray worker gets with resources.cpu = 1
    try:
        run_trial(configs[0].model_copy(update={"num_steps": 2}))  # warm-up
        seconds, _ = best_time(lambda: [run_trial(c) for c in configs], repeats)
    finally:
        torch.set_num_threads(threads)
    return len(configs), seconds


def run(quick: bool = False) -> dict[str, Any]:
    """Time the quickstart and the half-diverging sweep through the command line, against
    the ideal and against `pack_size: 1`; return the seconds and their ratios."""
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    quickstart, diverging = _quickstart_spec(quick), _half_diverging(quick)
    repeats = 1 if quick else REPEATS
    trials, serial = _serial_seconds(quickstart, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        shipped = _cli_seconds(quickstart, quickstart["pack_size"], Path(tmp), cpus, repeats)
        unpacked = _cli_seconds(quickstart, 1, Path(tmp), cpus, repeats)
        fixed = _cli_seconds(_one_update(quickstart), 1, Path(tmp), cpus, repeats)
        # --quick times the quickstart only: each command pays Ray's start-up.
        if not quick:
            packed_16 = _cli_seconds(diverging, 16, Path(tmp), cpus, repeats)
            unpacked_16 = _cli_seconds(diverging, 1, Path(tmp), cpus, repeats)
    ideal = serial / cpus
    return {
        "quick": quick,
        "cpus": cpus,
        "load_average": [load_before, os.getloadavg()[0]],
        "quickstart": {
            "trials": trials,
            "pack_size": quickstart["pack_size"],
            "serial_s": serial,
            "ideal_s": ideal,
            "shipped_s": shipped,
            "pack_size_1_s": unpacked,
            "shipped_over_ideal": shipped / ideal,
            "fixed_s": fixed,
            "floor_over_ideal": (ideal + fixed) / ideal,
            "packing_speedup": unpacked / shipped,
        },
        "half_diverging": None
        if quick
        else {
            "trials": len(diverging["grid"]["eta_trgt"]) * len(diverging["grid"]["init_seed"]),
            "pack_size_16_s": packed_16,
            "pack_size_1_s": unpacked_16,
            "packing_speedup": unpacked_16 / packed_16,
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """The ratios of :func:`run` as text, with the times they are quotients of."""
    q, h, load = result["quickstart"], result["half_diverging"], result["load_average"]
    lines = [
        f"sweep orchestration on {result['cpus']} CPUs, best of "
        f"{1 if result['quick'] else REPEATS} (load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after)",
        f"quickstart, {q['trials']} trials:",
        f"  one after another in one process   {q['serial_s']:8.1f} s",
        f"  ideal (that / {result['cpus']} CPUs)             {q['ideal_s']:8.1f} s  1.00x",
        f"  warmup-sweep run, pack_size {q['pack_size']!s:<5}  {q['shipped_s']:8.1f} s  "
        f"{q['shipped_over_ideal']:.2f}x the ideal",
        f"  warmup-sweep run, pack_size 1      {q['pack_size_1_s']:8.1f} s  "
        f"pack_size {q['pack_size']}: {q['packing_speedup']:.2f}x the speed of pack_size 1",
        f"  warmup-sweep run, 1 trial, 1 update {q['fixed_s']:7.1f} s  "
        f"fixed cost: no sweep through Ray here goes below {q['floor_over_ideal']:.2f}x",
    ]
    if h is not None:
        lines += [
            f"{h['trials']} small-MLP trials, half diverging early, warmup-sweep run:",
            f"  pack_size 16                       {h['pack_size_16_s']:8.1f} s  "
            f"{h['packing_speedup']:.2f}x the speed of pack_size 1",
            f"  pack_size 1                        {h['pack_size_1_s']:8.1f} s",
        ]
    return "\n".join(lines)
