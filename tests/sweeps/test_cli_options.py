"""The CLI's conveniences: --version, --set, --json, -q/-v. No Ray started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_digits

from results import write_spec
from sweeps import expand, parse_spec, resolved_yaml
from sweeps.cli import main
from tests.sweeps.conftest import tiny_spec
from trials import run_trial
from trials.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(sys.executable).parent / "warmup-sweep"


@pytest.mark.integration  # runs the installed command
def test_version_prints_the_package_version_and_exits_0() -> None:
    proc = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("warmup-sweep 0.1.0 (python ")  # pyproject's version
    assert "ray " in proc.stdout and "torch " in proc.stdout


def dry_run_json(capsys, *args: str) -> dict:
    assert main(["run", *args, "--dry-run", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_set_changes_the_spec_before_it_is_expanded(tmp_path, spec_file, capsys) -> None:
    path = spec_file(tiny_spec())
    settings = ["--set", "base.num_steps=50", "--set", "grid.warmup_steps=[1, 2, 8]"]
    plan = dry_run_json(capsys, str(path), "--results", str(tmp_path / "r"), *settings)
    expected = tiny_spec(grid={"eta_trgt": [0.05, 0.1], "warmup_steps": [1, 2, 8]})
    expected["base"]["num_steps"] = 50
    planned = expand(parse_spec(expected))
    assert plan["trials"] == plan["to_run"] == 6 and plan["already_ended"] == 0
    assert [p["trial_id"] for p in plan["pending"]] == [p.trial_id for p in planned]
    assert plan["pending"][1]["overrides"]["warmup_steps"] == 2
    assert not (tmp_path / "r").exists()


def test_set_makes_missing_mappings_and_takes_yaml_values(tmp_path, spec_file, capsys) -> None:
    path = spec_file(tiny_spec())
    settings = [
        "--set",
        "base.optimizer.momentum=0.9",  # base has no optimizer section yet
        "--set",
        "grid.eta_trgt={relative_to: lambda0, values: [0.5, 1]}",
        "--set",
        "name=renamed",
    ]
    plan = dry_run_json(capsys, str(path), "--results", str(tmp_path), *settings)
    expected = tiny_spec(name="renamed")
    expected["base"]["optimizer"] = {"momentum": 0.9}
    expected["grid"]["eta_trgt"] = {"relative_to": "lambda0", "values": [0.5, 1]}
    assert plan["sweep"] == "renamed"
    assert [p["trial_id"] for p in plan["pending"]] == [
        p.trial_id for p in expand(parse_spec(expected))
    ]


BAD_SETTINGS = {
    "unknown key": ("base.lerning_rate=0.1", "base.lerning_rate"),
    "unknown top-level key": ("seeeds=[1]", "seeeds"),
    "bad value": ("base.num_steps=-1", "base.num_steps"),
    "bad pack size": ("pack_size=0", "pack_size"),
    "data beyond the dataset": ("base.dataset.train_size=5000", "base.dataset.train_size"),
    "unknown logging key": ("logging.wandb={projekt: x}", "logging.wandb"),
    "wrong logging type": ("logging.tensorboard=[1]", "logging.tensorboard"),
    "through a list": ("grid.warmup_steps.values=[1]", "grid.warmup_steps.values"),
    "no equals sign": ("base.num_steps", "--set base.num_steps"),
    "not a key": ("=5", "--set =5"),
    "not YAML": ("grid.warmup_steps=[1, 2", "--set grid.warmup_steps"),
}


@pytest.mark.parametrize(("setting", "named"), BAD_SETTINGS.values(), ids=list(BAD_SETTINGS))
def test_a_bad_setting_exits_2_in_one_line_naming_it(
    tmp_path, spec_file, capsys, setting, named
) -> None:
    path = spec_file(tiny_spec())
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--set", setting]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("warmup-sweep: error: ") and named in line
    assert captured.out == ""
    assert not results.exists()


def test_probe_takes_settings_for_a_trial_config(tmp_path, capsys) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(json.dumps(tiny_spec()["base"]))
    assert main(["probe", str(path), "--json", "--set", "optimizer.name=adam"]) == 0
    assert json.loads(capsys.readouterr().out)["optimizer"] == "adam"
    assert main(["probe", str(path), "--set", "model.width=0"]) == 2
    assert "model.width" in capsys.readouterr().err


def test_probe_takes_settings_for_a_spec(spec_file, capsys) -> None:
    path = spec_file(tiny_spec())
    assert main(["probe", str(path), "--json", "--set", "base.model.name=mlp-mixer"]) == 2
    assert "base.model.name" in capsys.readouterr().err


def test_json_needs_a_dry_run(spec_file, capsys) -> None:
    assert main(["run", str(spec_file(tiny_spec())), "--json"]) == 2
    assert "--dry-run" in capsys.readouterr().err


def test_status_json(tmp_path, capsys) -> None:
    spec = parse_spec(tiny_spec())
    write_spec(tmp_path, spec.name, resolved_yaml(spec))
    planned = expand(spec)
    run_trial(planned[0].config, results=str(tmp_path), sweep=spec.name)
    assert main(["status", str(tmp_path / spec.name), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["trials"] == 1 and report["planned"] == 4
    assert report["counts"] == {
        "completed": 1,
        "diverged": 0,
        "stuck": 0,
        "stopped": 0,
        "error": 0,
    }
    assert [m["trial_id"] for m in report["missing"]] == [p.trial_id for p in planned[1:]]
    assert report["missing"][0]["overrides"] == planned[1].overrides
    assert report["unreadable"] == []


def test_specs_json_lists_specs_models_and_datasets(capsys) -> None:
    assert main(["specs", "--json"]) == 0
    catalog = json.loads(capsys.readouterr().out)
    specs = {s["name"]: s for s in catalog["specs"]}
    assert "digits" in specs["quickstart"]["description"]
    assert Path(specs["quickstart"]["path"]).name == "quickstart.yaml"
    datasets = {d["name"]: d for d in catalog["datasets"]}
    assert "as_image" in datasets["digits"]["options"]
    assert "fcn" in {m["name"] for m in catalog["models"]}


@pytest.mark.parametrize("flags", [["-q"], ["-v"], ["--quiet"], ["--verbose"]])
def test_verbosity_flags_go_before_or_after_the_command(spec_file, capsys, flags) -> None:
    path = str(spec_file(tiny_spec()))
    for argv in ([*flags, "run", path, "--dry-run"], ["run", path, "--dry-run", *flags]):
        assert main(argv) == 0
        assert "4 trials, 4 to run" in capsys.readouterr().out


def test_quiet_and_verbose_together_exit_2(spec_file, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", str(spec_file(tiny_spec())), "-q", "-v"])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_the_largest_sizes_digits_holds_are_accepted_and_load(spec_file, capsys) -> None:
    total = len(load_digits().target)  # 1797
    data = tiny_spec()
    data["base"]["dataset"].update(train_size=total - 500, test_size=500)
    assert main(["run", str(spec_file(data)), "--dry-run"]) == 0
    capsys.readouterr()
    loaded = load_dataset("digits", train_size=total - 500, test_size=500)
    assert (loaded.train_size, loaded.test_size) == (total - 500, 500)
