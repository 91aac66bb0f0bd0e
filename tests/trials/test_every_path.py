"""Every bundled spec, model, optimizer and parameterization trains end to end.

Each bundled spec is shrunk (a tiny subset, tiny widths, three steps, sharpness at
every step, a small real-format stand-in for CIFAR) and every distinct path through it
(model x optimizer x parameterization x eta_init) runs through `run_trial`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sweeps import bundled_specs, expand, load_spec
from tests.trials.test_data import write_cifar
from trials import run_pack, run_trial
from trials.config import TrialConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODELS: dict[str, dict[str, Any]] = {
    "fcn": {"width": 16},
    "myrtle": {"width": 8},
    "wrn": {"depth": 10, "widen": 1, "base_channels": 4},
    "transformer": {"width": 16, "depth": 1, "heads": 2},
}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    """Tiny CIFAR-10 and CIFAR-100 distributions in the standard binary layout."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", binary=True)
    write_cifar(root, "cifar100", binary=True)
    return root


def shrink(config: TrialConfig, data_dir: Path, steps: int = 3) -> TrialConfig:
    """The same path through the code on a tiny problem: few examples, widths and steps."""
    data = config.model_dump(mode="json")
    model = data["model"]
    model.update(TINY_MODELS[model["name"]])
    dataset = data["dataset"]
    dataset.update(train_size=32, test_size=16)
    if dataset["name"].startswith("cifar"):  # the stand-in holds 20 training, 6 test images
        dataset.update(data_dir=str(data_dir), train_size=16, test_size=6)
    if dataset["name"] == "text":
        dataset["context"] = 8
    data.update(
        num_steps=steps,
        batch_size=min(data.get("batch_size") or 16, 16),
        sharpness_every=1,
        sharpness_max_iter=10,
        eval_every=steps,
        device="cpu",
    )
    data.pop("sharpness_batch_size", None)
    return TrialConfig.model_validate(data)


def distinct_paths(spec_name: str) -> list[TrialConfig]:
    """One trial per model x optimizer x parameterization x eta_init of a bundled spec."""
    spec, _ = load_spec(spec_name)
    seen, out = set(), []
    for planned in expand(spec):
        c = planned.config
        key = (c.model.name, c.optimizer.name, c.parameterization, c.eta_init_mode)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


@pytest.mark.parametrize("spec_name", sorted(bundled_specs()))
@pytest.mark.slow
def test_every_bundled_spec_runs_each_of_its_paths_with_sharpness(spec_name, cifar_dir):
    for config in distinct_paths(spec_name):
        tiny = shrink(config, cifar_dir)
        result = run_trial(tiny)
        where = f"{spec_name}: {tiny.model.name}/{tiny.optimizer.name}/{tiny.parameterization}"
        assert result.status != "error", f"{where}: {result.summary.get('error')}"
        assert math.isfinite(result.summary["lambda0"]) and result.summary["lambda0"] > 0
        measured = [s for s in result.steps["sharpness"] if s is not None]
        assert measured, where
        if tiny.optimizer.is_adam:
            assert any(p is not None for p in result.steps["preconditioned_sharpness"]), where
        if tiny.eta_init == "catapult" or tiny.measure_eta_c:
            assert result.summary["eta_c"] > 0, where


DATASET_OPTIONS = {"text": {"context": 8}, "gaussian": {"dim": 48, "image_shape": [3, 4, 4]}}
MODEL_DATA = [
    ("fcn", "digits", "mse"),
    ("myrtle", "digits", "mse"),
    ("wrn", "gaussian", "xent"),
    ("transformer", "text", "xent"),
]


@pytest.mark.parametrize(("model", "dataset", "loss"), MODEL_DATA)
def test_every_model_trains_with_sharpness_every_step_packed_and_unpacked(model, dataset, loss):
    configs = [
        TrialConfig.model_validate(
            {
                "model": {"name": model, **TINY_MODELS[model]},
                "dataset": {"name": dataset, "train_size": 32, "test_size": 16}
                | DATASET_OPTIONS.get(dataset, {}),
                "loss": loss,
                "optimizer": {"name": optimizer},
                "eta_trgt": eta,
                "num_steps": 3,
                "sharpness_every": 1,
                "sharpness_max_iter": 10,
                "device": "cpu",
                "dtype": "float64",
                "stuck_accuracy_factor": 0.01,
                "stuck_loss": 100.0,
            }
        )
        for optimizer, eta in (("sgd", 0.01), ("adam", 1e-3))
    ]
    unpacked = [run_trial(c) for c in configs]
    packed = run_pack(configs)
    for single, member in zip(unpacked, packed, strict=True):
        assert single.status == member.status == "completed", single.summary.get("error")
        assert len(member.steps["sharpness"]) == 3
        assert all(s is not None and s > 0 for s in member.steps["sharpness"])
        assert member.steps["sharpness"] == pytest.approx(single.steps["sharpness"], rel=1e-6)
        assert member.steps["train_loss"] == pytest.approx(single.steps["train_loss"], rel=1e-9)
