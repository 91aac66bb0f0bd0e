"""A third-party model and dataset, installed with pip, run like built-ins.

The example plugin (a residual MLP and a teacher-labelled dataset) goes through spec
validation, `specs`, `probe`, a packed CLI sweep on an embedded Ray with sharpness and
Adam's pre-conditioned sharpness, and `analyze` into a phase diagram.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
import ray
import torch
import yaml

from sweeps import SpecError, expand, init_ray, parse_spec
from sweeps.cli import main
from sweeps.packing import resolve_pack_size
from trials import Problem
from trials.config import TrialConfig
from warmup_core.models import MODEL_REGISTRY

pytestmark = [pytest.mark.usefixtures("resmlp_plugin", "one_torch_thread"), pytest.mark.integration]

BASE = {
    "model": {"name": "resmlp", "width": 16, "blocks": 2},
    "dataset": {"name": "teacher", "train_size": 64, "test_size": 32, "dim": 8},
    "loss": "mse",
    "num_steps": 8,
    "sharpness_every": 4,
    "sharpness_max_iter": 10,
    "sharpness_tol": 0.01,
    "device": "cpu",
}
SPEC = {
    "name": "plugin-sweep",
    "base": BASE,
    "grid": {
        "eta_trgt": [0.003, 0.03],
        "warmup_steps": [1, 4],
        "optimizer.name": ["sgd", "adam"],
    },
    "seeds": [0],
    "pack_size": 4,
    "resources": {"cpu": 1, "gpu": 0},
    "logging": {"tensorboard": False},
}


def test_plugin_entries_resolve_with_their_defaults_and_source(resmlp_plugin):
    config = TrialConfig(**{**BASE, "model": {"name": "resmlp"}})
    assert config.model.options() == {"width": 64, "blocks": 2}
    assert MODEL_REGISTRY.get("resmlp").source == f"plugin {resmlp_plugin} 0.1.0"


@pytest.mark.parametrize(
    "model, field",
    [
        ({"name": "resmlp", "widht": 8}, "model.widht"),
        ({"name": "resmlp", "blocks": "two"}, "model.blocks"),
        ({"name": "resmlp", "width": 0}, "model.width"),
    ],
)
def test_plugin_options_are_refused_when_the_spec_is_read(model, field):
    with pytest.raises(SpecError, match=field):
        parse_spec({**SPEC, "base": {**BASE, "model": model}})


@pytest.mark.parametrize("parameterization", ["sp", "ntp", "mup"])
def test_the_plugin_model_follows_each_parameterization(parameterization):
    config = TrialConfig(**BASE, parameterization=parameterization)
    model = Problem(config).build_model(0)
    readout = model.readout.rule.multiplier
    assert readout == pytest.approx(1.0 if parameterization == "sp" else 1 / 4)  # 1/sqrt(16)


def test_the_plugin_dataset_is_a_pure_function_of_data_seed():
    a, b = Problem(TrialConfig(**BASE)), Problem(TrialConfig(**BASE))
    c = Problem(TrialConfig(**BASE, data_seed=1))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.num_classes == 4 and a.x_train.shape == (64, 8)


def test_specs_lists_the_plugin_beside_the_builtins(capsys):
    assert main(["specs"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "fcn " in out
    assert "resmlp" in out and "teacher" in out and "plugin warmup-resmlp 0.1.0" in out


def test_probe_measures_a_plugin_config(tmp_path, capsys):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({**BASE, "optimizer": {"name": "adam"}}))
    assert main(["probe", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "resmlp" and result["lambda0"] > 0
    assert result["preconditioned_sharpness"] > 0


def test_a_model_vmap_refuses_runs_unpacked_and_says_why():
    class Branchy(torch.nn.Module):  # data-dependent control flow: vmap cannot batch it
        def forward(self, x):
            return x if x.sum() > 0 else -x

    entry = MODEL_REGISTRY.get("resmlp")

    def build(param, in_shape, out_dim, **options):
        model = entry.builder(param, in_shape, out_dim, **options)
        model.embed = torch.nn.Sequential(model.embed, Branchy())  # acts on per-member values
        return model

    with MODEL_REGISTRY.override("resmlp", replace(entry, builder=build)):
        planned = expand(parse_spec(SPEC))
        choice = resolve_pack_size(4, planned, 1.0)
        assert choice.slots == 1 and "model 'resmlp' cannot run packed" in choice.reason
    assert resolve_pack_size(4, planned, 1.0).slots == 4


@pytest.mark.slow
def test_a_packed_cli_sweep_over_the_plugin_ends_in_a_phase_diagram(tmp_path, capsys):
    spec_path = tmp_path / "plugin.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    results = tmp_path / "results"
    if ray.is_initialized():
        ray.shutdown()
    init_ray(None, num_cpus=2)
    try:
        code = main(["run", str(spec_path), "--results", str(results)])
    finally:
        ray.shutdown()
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "2 packs, each training up to 4 trials at once" in captured.out + captured.err

    sweep = results / "plugin-sweep"
    trials = pd.read_parquet(sweep / "trials")
    steps = pd.read_parquet(sweep / "steps")
    assert len(trials) == 8 and set(trials["model"]) == {"resmlp"}
    assert set(trials["status"]) <= {"completed", "stuck", "diverged"}
    assert trials["lambda0"].gt(0).all()
    adam_ids = set(trials.loc[trials["optimizer"] == "adam", "trial_id"])
    adam_steps = steps[steps["trial_id"].isin(adam_ids)]
    assert adam_steps["preconditioned_sharpness"].notna().any()
    assert steps["sharpness"].notna().sum() >= 8

    assert main(["analyze", str(sweep), "--out", str(tmp_path / "analysis")]) == 0
    assert (tmp_path / "analysis" / "phase_diagram.png").stat().st_size > 0


def test_the_plugins_page_shows_the_installed_example_verbatim():
    from tests.plugins.conftest import PLUGIN_DIR

    page = (PLUGIN_DIR.parents[2] / "docs" / "plugins.md").read_text()
    for name in ("pyproject.toml", "warmup_resmlp.py"):
        assert (PLUGIN_DIR / name).read_text() in page, name
    assert SPEC["base"]["model"] == {"name": "resmlp", "width": 16, "blocks": 2}
    assert "model: {name: resmlp, width: 16, blocks: 2}" in page


@pytest.mark.parametrize(
    "first",
    [
        "from warmup_core.models import MODEL_REGISTRY; MODEL_REGISTRY.get('resmlp')",
        "from trials.data import DATASET_REGISTRY; DATASET_REGISTRY.get('teacher')",
        "import sweeps.cli",
    ],
)
def test_a_plugin_module_that_imports_the_package_loads_in_any_order(first):
    """The plugin's module imports `trials.data`; whichever entry is looked up first, the
    other must not be left half-imported (a fresh interpreter, warnings as errors)."""
    code = (
        f"{first}\n"
        "from warmup_core.models import MODEL_REGISTRY\n"
        "from trials.data import DATASET_REGISTRY\n"
        "assert MODEL_REGISTRY.get('resmlp').name == 'resmlp'\n"
        "assert DATASET_REGISTRY.get('teacher').name == 'teacher'\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
