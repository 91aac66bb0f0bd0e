"""A small results directory written with write_trial: SGD trials over (warmup, eta) with
known statuses, and an Adam / GI-Adam pair."""

from __future__ import annotations

import numpy as np

from results import write_spec, write_trial

__all__ = ["NUM_STEPS", "make_sweep", "steps_of"]

NUM_STEPS = 30


def steps_of(opt: str, eta: float, warmup: int, diverged_at: int | None) -> dict:
    t = np.arange(NUM_STEPS)
    lr = eta * np.minimum(1.0, (t + 1) / warmup)
    loss = np.exp(-t / 10) + 0.05
    if diverged_at is not None:
        loss[diverged_at:] = np.nan
        loss[diverged_at - 1] = 1e4
    sharp = np.where(t % 5 == 0, 8.0 + t / 5, np.nan)
    columns = {"step": t, "lr": lr, "train_loss": loss, "train_accuracy": 1 - loss / 2}
    if opt == "sgd":
        columns |= {"sharpness": sharp, "threshold": 2.0 / lr}
    else:
        columns |= {"preconditioned_sharpness": sharp * 10, "threshold": 38.0 / lr}
    return columns


def make_sweep(
    root, sweep: str = "demo", parameterization: str = "sp", prefix: str = "trial"
) -> list[dict]:
    """Twelve SGD trials (warmup x relative eta) plus an Adam / GI-Adam pair; known statuses.
    Trial ids are `<prefix>-00` to `<prefix>-13`."""
    written = []
    statuses = {
        # (warmup, eta x lambda0): status
        (1, 1.0): "completed",
        (1, 2.0): "completed",
        (1, 4.0): "diverged",
        (1, 8.0): "diverged",
        (4, 1.0): "completed",
        (4, 2.0): "stuck",
        (4, 4.0): "completed",
        (4, 8.0): "diverged",
        (16, 1.0): "error",
        (16, 2.0): "completed",
        (16, 4.0): "completed",
        (16, 8.0): "completed",
    }
    lambda0 = 20.0
    cases = [("sgd", w, rel, s) for (w, rel), s in statuses.items()]
    cases += [("adam", 1, 1e-3, "diverged"), ("gi-adam", 1, 1e-3, "completed")]
    for i, (opt, warmup, eta, status) in enumerate(cases):
        relative = opt == "sgd"
        eta_abs = eta / lambda0 if relative else eta
        diverged_at = 12 if status == "diverged" else None
        summary = {
            "trial_id": f"{prefix}-{i:02d}",
            "status": status,
            "diverged_step": diverged_at,
            "error": "RuntimeError: injected" if status == "error" else None,
            "model": "fcn",
            "dataset": "digits",
            "loss": "mse",
            "parameterization": parameterization,
            "init_scale": 1.0,
            "optimizer": opt,
            "eta_trgt": eta_abs,
            "eta_trgt_relative": eta if relative else None,
            "eta_init": 0.0,
            "eta_init_mode": "zero",
            "warmup_steps": warmup,
            "warmup_shape": "linear",
            "schedule": "constant",
            "num_steps": NUM_STEPS,
            "batch_size": 64,
            "init_seed": 0,
            "data_seed": 0,
            "lambda0": lambda0,
            "eta_c": 0.1,
            "final_train_loss": None if status in ("diverged", "error") else 0.1 + 0.01 * i,
            "final_test_loss": None if status in ("diverged", "error") else 0.2 + 0.01 * i,
            "final_test_accuracy": None if status in ("diverged", "error") else 0.9 - 0.01 * i,
            "wall_time_s": 1.5,
            "device": "cpu",
            "node": "local",
            "package_version": "0.1.0",
            "model_width": 64,
        }
        steps = {"step": []} if status == "error" else steps_of(opt, eta_abs, warmup, diverged_at)
        write_trial(root, sweep, summary, steps)
        written.append(summary)
    write_spec(root, sweep, f"name: {sweep}\n")
    return written
