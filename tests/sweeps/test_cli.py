"""Tests for the `warmup-sweep` CLI, in-process through `sweeps.cli.main` (and once for real).

Nothing here starts Ray: `run` is only exercised up to the point where it would
(dry runs and bad input); real runs are in test_run_local.py.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from results import write_spec
from sweeps import expand, parse_spec, resolved_yaml
from sweeps.cli import main
from tests.sweeps.conftest import tiny_spec
from trials import run_trial

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.integration]


@pytest.mark.integration
def test_console_script_help_lists_the_commands() -> None:
    script = Path(sys.executable).parent / "warmup-sweep"
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "status", "analyze", "probe", "specs"):
        assert command in proc.stdout


def test_specs_lists_quickstart_with_its_description(capsys) -> None:
    assert main(["specs"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("quickstart"))
    assert "digits" in line  # first line of the spec's description


# ---------------------------------------------------------------------------
# run: dry runs and bad input (exit 2, one line, nothing written)
# ---------------------------------------------------------------------------


def test_dry_run_lists_the_trials_and_writes_nothing(tmp_path, spec_file, capsys) -> None:
    path = spec_file(tiny_spec())
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials, 4 to run, 0 already ended" in out
    for planned in expand(parse_spec(tiny_spec())):
        assert planned.trial_id in out
    assert "eta_trgt=0.05, warmup_steps=4" in out
    assert not results.exists()


def test_dry_run_of_a_bundled_spec_by_name(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    assert main(["run", "quickstart", "--results", str(results), "--dry-run"]) == 0
    assert "36 trials, 36 to run" in capsys.readouterr().out
    assert not results.exists()


def test_dry_run_skips_trials_that_already_ended(tmp_path, spec_file, capsys) -> None:
    data = tiny_spec()
    first = expand(parse_spec(data))[0]
    run_trial(first.config, results=str(tmp_path), sweep=data["name"])
    assert main(["run", str(spec_file(data)), "--results", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 trials, 3 to run, 1 already ended" in out
    assert first.trial_id not in out


BAD_SPECS = {
    "unknown base key": (lambda d: d["base"].update(lerning_rate=0.1), "base.lerning_rate"),
    "zero width on an axis": (lambda d: d["grid"].update({"model.width": [0]}), "model.width"),
    "range axis with grid search": (
        lambda d: d["grid"].update(eta_trgt={"low": 0.1, "high": 1.0}),
        "grid.eta_trgt",
    ),
    # digits has 1797 images; 297 of them are the test split unless test_size says else
    "train_size beyond digits": (
        lambda d: d["base"]["dataset"].update(train_size=5000, test_size=None),
        "base.dataset.train_size: 5000",
    ),
    "train_size beyond what test_size leaves": (
        lambda d: d["base"]["dataset"].update(train_size=1700, test_size=500),
        "base.dataset.train_size: 1700",
    ),
    "test_size of all of digits": (
        lambda d: d["base"]["dataset"].update(test_size=1797),
        "base.dataset.test_size: 1797",
    ),
    "train_size beyond digits on an axis": (
        lambda d: d["grid"].update({"dataset.train_size": [100, 1800]}),
        "dataset.train_size: 1800",
    ),
    "train_size beyond CIFAR-10": (
        lambda d: d["base"]["dataset"].update(name="cifar10", train_size=50001, test_size=None),
        "base.dataset.train_size: 50001",
    ),
}


@pytest.mark.parametrize(("mutate", "field"), BAD_SPECS.values(), ids=list(BAD_SPECS))
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(
    tmp_path, spec_file, capsys, mutate, field
) -> None:
    data = tiny_spec()
    mutate(data)
    results = tmp_path / "results"
    assert main(["run", str(spec_file(data)), "--results", str(results)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("warmup-sweep: error: ")
    assert field in lines[0]
    assert captured.out == ""
    assert not results.exists()


def test_unknown_spec_name_exits_2(tmp_path, capsys) -> None:
    assert main(["run", "no-such-spec", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no-such-spec" in err and "quickstart" in err
    assert not (tmp_path / "r").exists()


def test_results_path_that_is_a_file_exits_2(tmp_path, spec_file, capsys) -> None:
    results = tmp_path / "results"
    results.write_text("not a directory")
    assert main(["run", str(spec_file(tiny_spec())), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "--results" in err and str(results) in err
    assert results.read_text() == "not a directory"


def test_bad_arguments_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "warmup-sweep: error:" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------


def _status_counts(out: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+(\d+)", out, re.MULTILINE)}


def test_status_counts_trials_and_lists_the_missing(tmp_path, capsys) -> None:
    data = tiny_spec(grid={"eta_trgt": [1e-9, 0.1, 1000.0, 2000.0]})
    spec = parse_spec(data)
    write_spec(tmp_path, spec.name, resolved_yaml(spec))
    planned = expand(spec)
    ran = [run_trial(p.config, results=str(tmp_path), sweep=spec.name) for p in planned[:3]]
    assert [r.status for r in ran] == ["stuck", "completed", "diverged"]

    assert main(["status", str(tmp_path / spec.name)]) == 0
    out = capsys.readouterr().out
    assert "3 trials with a summary" in out
    counts = _status_counts(out)
    assert counts["completed"] == 1 and counts["diverged"] == 1 and counts["stuck"] == 1
    assert counts["error"] == 0
    assert "missing    1 of 4 planned" in out
    assert planned[3].trial_id in out and "eta_trgt=2000.0" in out
    assert all(p.trial_id not in out for p in planned[:3])


def test_status_counts_errors(tmp_path, capsys) -> None:
    data = tiny_spec(grid={"dataset.name": ["digits", "cifar10"]})
    data["base"].update(eta_trgt=0.1)
    data["base"]["dataset"]["data_dir"] = str(tmp_path / "no-cifar-here")
    spec = parse_spec(data)
    write_spec(tmp_path, spec.name, resolved_yaml(spec))
    for p in expand(spec):
        run_trial(p.config, results=str(tmp_path), sweep=spec.name)
    assert main(["status", str(tmp_path / spec.name)]) == 0
    counts = _status_counts(capsys.readouterr().out)
    assert counts["error"] == 1 and counts["completed"] == 1
    assert counts["missing"] == 0


def test_status_of_a_directory_that_is_not_a_sweep_exits_2(tmp_path, capsys) -> None:
    assert main(["status", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "absent")]) == 2


# ---------------------------------------------------------------------------
# probe
# ---------------------------------------------------------------------------


def test_probe_prints_lambda0_and_eta_c(spec_file, capsys) -> None:
    assert main(["probe", str(spec_file(tiny_spec()))]) == 0
    out = capsys.readouterr().out
    values = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert float(values["lambda0"]) > 0
    assert float(values["eta_c"]) > 0
    assert float(values["sgd_max_stable_lr"]) == pytest.approx(
        2 / float(values["lambda0"]), rel=1e-4
    )
    assert "preconditioned_sharpness" not in values


def test_probe_json_for_an_adam_spec(spec_file, capsys) -> None:
    data = tiny_spec()
    data["base"]["optimizer"] = {"name": "adam"}
    assert main(["probe", str(spec_file(data)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["optimizer"] == "adam"
    assert result["lambda0"] > 0 and result["eta_c"] > 0
    assert result["preconditioned_sharpness"] > result["lambda0"]  # 1/sqrt(v) >> 1 at init
    assert result["adam_max_stable_lr"] == pytest.approx(38 / result["preconditioned_sharpness"])


def test_probe_accepts_a_trial_config_file(tmp_path, capsys) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(tiny_spec()["base"]))
    assert main(["probe", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "fcn"


def test_probe_of_a_bad_trial_config_exits_2_naming_the_field(tmp_path, capsys) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text("model: {name: fcn, width: -3}\n")
    assert main(["probe", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.width" in err and len(err.strip().splitlines()) == 1


def test_address_with_a_local_results_path_is_refused_in_one_line(tmp_path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    results = tmp_path / "res"
    code = main(["run", str(spec), "--address", "10.0.0.1:6379", "--results", str(results)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--shared-results" in err and "s3://" in err
    assert not results.exists()


def test_shared_results_flag_accepts_a_local_path_with_address(tmp_path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    args = ["run", str(spec), "--address", "10.0.0.1:6379", "--results", str(tmp_path / "r")]
    assert main([*args, "--shared-results", "--dry-run"]) == 0
    assert "4 trials, 4 to run, 0 already ended" in capsys.readouterr().out


def test_resume_flag_says_every_run_resumes(tmp_path, capsys) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    assert main(["run", str(spec), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "re-running the same command resumes" in err


def test_unreachable_cluster_address_is_one_line_exit_2(tmp_path, capsys) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    args = ["run", str(spec), "--address", f"127.0.0.1:{port}", "--shared-results"]
    assert main([*args, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--address 127.0.0.1:{port}: no Ray cluster answers" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("address", ["nohost", "host:port"])
def test_malformed_cluster_address_is_one_line_exit_2(tmp_path, capsys, address) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    args = ["run", str(spec), "--address", address, "--shared-results"]
    assert main([*args, "--results", str(tmp_path / "r")]) == 2
    assert "expected host:port" in capsys.readouterr().err
