"""Storage errors while writing a trial's files: no partial file, the trial ends as
`error` with the message, the sweep goes on and exits 1."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from sweeps import expand, parse_spec
from tests.reliability.conftest import tiny_spec
from trials import run_trial


@pytest.fixture
def config():
    return expand(parse_spec(tiny_spec()))[0].config


def _disk_full_on(kind: str, monkeypatch) -> list[str]:
    """Make Parquet writes under `<sweep>/<kind>/` write half a file, then fail (ENOSPC)."""
    real = pq.write_table
    attempts: list[str] = []

    def write_table(table, where, **kwargs):
        if f"/{kind}/" in str(where):
            attempts.append(str(where))
            with open(where, "wb") as f:  # what a full disk leaves: the start of a file
                f.write(b"PAR1" + b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    return attempts


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_failed_steps_write_leaves_no_partial_file_and_records_error(
    tmp_path: Path, config, monkeypatch
) -> None:
    attempts = _disk_full_on("steps", monkeypatch)
    result = run_trial(config, results=str(tmp_path), sweep="s")
    assert attempts  # the fault struck
    assert result.status == "error"
    assert "No space left on device" in result.summary["error"]
    assert _files(tmp_path) == [f"s/trials/{config.trial_id()}.parquet"]  # no steps, no temp
    monkeypatch.undo()
    row = pd.read_parquet(tmp_path / "s" / "trials").iloc[0]
    assert row["status"] == "error" and "No space left on device" in row["error"]
    assert row["error"].startswith("writing results: OSError")


def test_storage_that_fails_every_write_raises_and_leaves_nothing(
    tmp_path: Path, config, monkeypatch
) -> None:
    # Nothing can be recorded: the exception must reach Tune (which marks the trial failed
    # and the sweep reports it missing, exit 1) rather than pass silently.
    _disk_full_on("steps", monkeypatch)
    _disk_full_on("trials", monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        run_trial(config, results=str(tmp_path), sweep="s")
    assert _files(tmp_path) == []


def test_failed_rewrite_keeps_the_previous_files_whole(tmp_path: Path, config, monkeypatch):
    run_trial(config, results=str(tmp_path), sweep="s")
    trial_file = tmp_path / "s" / "trials" / f"{config.trial_id()}.parquet"
    steps_file = tmp_path / "s" / "steps" / f"{config.trial_id()}.parquet"
    old_steps = steps_file.read_bytes()
    _disk_full_on("steps", monkeypatch)
    run_trial(config, results=str(tmp_path), sweep="s")
    monkeypatch.undo()
    assert steps_file.read_bytes() == old_steps  # untouched, not half-overwritten
    assert pd.read_parquet(trial_file)["status"].tolist() == ["error"]
    assert sorted(p.name for p in steps_file.parent.iterdir()) == [steps_file.name]


@pytest.mark.slow
@pytest.mark.integration
def test_sweep_with_failing_storage_and_missing_data_goes_on_and_exits_1(
    cli, write_spec, tmp_path: Path
) -> None:
    # Real faults in a real sweep: one trial's steps path is a directory (rename onto it
    # fails in the worker), two trials read CIFAR from a directory that does not exist.
    data = tiny_spec(name="faulty", pack_size=1, grid={"dataset.name": ["digits", "cifar10"]})
    data["grid"]["eta_trgt"] = [0.05, 0.1]
    data["base"]["dataset"]["data_dir"] = str(tmp_path / "no-cifar-here")
    planned = {
        p.overrides["dataset.name"] + str(p.overrides["eta_trgt"]): p.trial_id
        for p in expand(parse_spec(data))
    }
    blocked = planned["digits0.05"]
    sweep = tmp_path / "results" / "faulty"
    (sweep / "steps" / f"{blocked}.parquet").mkdir(parents=True)
    (sweep / "steps" / f"{blocked}.parquet" / "occupied").write_text("x")

    code, out, err = cli(
        "run", str(write_spec(data)), "--results", "results", "--num-cpus", "2"
    ).wait()

    assert code == 1, err[-3000:]
    assert "completed 1" in out and "error 3" in out
    trials = pd.read_parquet(sweep / "trials").set_index("trial_id")
    assert set(trials.index) == set(planned.values()) and len(trials) == 4
    assert trials.loc[planned["digits0.1"], "status"] == "completed"
    assert trials.loc[blocked, "status"] == "error"
    assert f"{blocked}.parquet" in trials.loc[blocked, "error"]  # names the file it could not write
    for key in ("cifar100.05", "cifar100.1"):
        assert trials.loc[planned[key], "status"] == "error"
        assert "no-cifar-here" in trials.loc[planned[key], "error"]
    leftovers = [p.name for p in sweep.rglob("*.tmp")]
    assert leftovers == []
    assert yaml.safe_load((sweep / "spec.yaml").read_text())["name"] == "faulty"


def test_failed_write_in_a_pack_makes_only_that_member_an_error(tmp_path: Path, monkeypatch):
    from trials import run_pack

    data = tiny_spec(grid={"eta_trgt": [0.05, 0.1, 0.2]})
    configs = [p.config for p in expand(parse_spec(data))]
    victim = configs[1].trial_id()
    real = pq.write_table

    def write_table(table, where, **kwargs):
        if "/steps/" in str(where) and victim in str(where):
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    results = run_pack(configs, results=str(tmp_path), sweep="s")
    monkeypatch.undo()
    status = {r.trial_id: r.status for r in results}
    assert status[victim] == "error"
    assert all(s == "completed" for t, s in status.items() if t != victim)
    trials = pd.read_parquet(tmp_path / "s" / "trials")
    assert sorted(trials["trial_id"]) == sorted(status)  # every member has its row
