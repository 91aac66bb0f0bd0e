"""Trial summaries and step rows for the results tests: a plain SGD trial on digits."""

from __future__ import annotations

__all__ = ["steps_of", "summary"]


def summary(trial_id: str, status: str = "completed", **extra) -> dict:
    row = {
        "trial_id": trial_id,
        "status": status,
        "model": "fcn",
        "dataset": "digits",
        "loss": "mse",
        "parameterization": "sp",
        "init_scale": 1.0,
        "optimizer": "sgd",
        "eta_trgt": 0.1,
        "eta_init": 0.0,
        "eta_init_mode": "zero",
        "warmup_steps": 16,
        "warmup_shape": "linear",
        "schedule": "constant",
        "num_steps": 3,
        "batch_size": 64,
        "init_seed": 0,
        "data_seed": 0,
        "lambda0": 20.0,
        "final_test_loss": 0.25,
        "device": "cpu",
        "package_version": "0.1.0",
    }
    row.update(extra)
    return row


def steps_of(n: int = 3, **columns) -> dict:
    data = {
        "step": list(range(n)),
        "lr": [0.1] * n,
        "train_loss": [1.0 / (i + 1) for i in range(n)],
    }
    data.update(columns)
    return data
