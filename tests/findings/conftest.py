"""Shared small configs for the findings tests: the bundled findings specs' models, shortened."""

from __future__ import annotations

import numpy as np

from trials import TrialConfig, TrialResult

# FCN-4-128 on 512 digits, full batch: the base of sweeps/specs/findings-*.yaml.
SMALL = {
    "model": {"name": "fcn", "width": 128, "depth": 4},
    "dataset": {"name": "digits", "train_size": 512, "test_size": 256},
    "init_scale": 2.0,
    "batch_size": 512,
    "device": "cpu",
}


def small_config(**fields) -> TrialConfig:
    """SMALL with `fields` set on top (nested sections replaced whole)."""
    return TrialConfig.model_validate({**SMALL, **fields})


def columns(result: TrialResult, *names: str) -> list[np.ndarray]:
    """Steps-table columns of a trial as float arrays (NaN where not measured)."""
    return [np.array(result.steps[name], dtype=float) for name in names]
