"""Fixtures for the sweeps tests: tiny real specs (an FCN of width 16 on 128 digits)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_BASE: dict[str, Any] = {
    "model": {"name": "fcn", "width": 16, "depth": 2},
    "dataset": {"name": "digits", "train_size": 128, "test_size": 64},
    "loss": "mse",
    "num_steps": 20,
    "sharpness_max_iter": 20,
    "sharpness_tol": 0.01,
    "device": "cpu",
}


def tiny_spec(name: str = "tiny", **top: Any) -> dict[str, Any]:
    """A 2 eta x 2 warmup grid spec as a dict; `top` replaces top-level keys."""
    spec: dict[str, Any] = {
        "name": name,
        "base": copy.deepcopy(TINY_BASE),
        "grid": {"eta_trgt": [0.05, 0.1], "warmup_steps": [1, 4]},
        "seeds": [0],
        "resources": {"cpu": 1, "gpu": 0},
        "logging": {"tensorboard": False},
    }
    spec.update(copy.deepcopy(top))
    return spec


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec dict as YAML under tmp_path; returns its path."""

    def write(data: dict[str, Any], filename: str | None = None) -> Path:
        path = tmp_path / "specs" / (filename or f"{data.get('name', 'spec')}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
