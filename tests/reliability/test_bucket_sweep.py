"""A sweep whose results live in a bucket on a real S3-compatible server (moto, on
127.0.0.1), driven through the CLI: killed, resumed, then `status`, `analyze` and
`results.load` read it where it is, with no copying."""

from __future__ import annotations

import pytest

from results import load, read_statuses, resolve, sweep_dir
from sweeps import expand, parse_spec
from tests.reliability.conftest import tiny_spec, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_bucket_sweep_killed_resumed_then_status_analyze_and_load(
    cli, write_spec, bucket, tmp_path
) -> None:
    data = tiny_spec(name="bucket", pack_size=1, max_concurrent=1)
    data["grid"] = {"eta_trgt": [0.05, 0.1, 0.15, 0.2]}
    data["base"]["num_steps"] = 600  # a few seconds per trial: time to kill between trials
    spec = str(write_spec(data))
    planned = sorted(p.trial_id for p in expand(parse_spec(data)))
    sweep = sweep_dir(bucket, "bucket")

    run = cli("run", spec, "--results", bucket, "--num-cpus", "2")
    wait_for(lambda: len(read_statuses(sweep)) >= 1, run)
    run.kill()
    finished = read_statuses(sweep)
    assert 1 <= len(finished) < len(planned), "the kill came too late to interrupt the sweep"

    code, out, err = cli("run", spec, "--results", bucket, "--num-cpus", "2").wait()
    assert code == 0, err[-3000:]
    assert f"{len(planned) - len(finished)} to run, {len(finished)} already ended" in err
    assert sorted(read_statuses(sweep)) == planned

    # A truncated object left in the bucket is reported by status and skipped by load.
    fs, path = resolve(sweep)
    with fs.open_output_stream(f"{path}/trials/zz-truncated.parquet") as f:
        f.write(b"PAR1" + b"\0" * 40)

    code, out, err = cli("status", sweep).wait()
    assert code == 0, err[-3000:]
    assert f"{len(planned)} trials with a summary" in out
    assert "missing    0 of 4 planned" in out
    assert "unreadable:" in out and "zz-truncated.parquet" in out

    code, out, err = cli("analyze", sweep, "--out", "report").wait()
    assert code == 0, err[-3000:]
    assert (tmp_path / "report" / "phase_diagram.png").stat().st_size > 10_000
    assert "zz-truncated.parquet" in err  # named as unreadable while analyzing

    with pytest.warns(UserWarning, match="zz-truncated"):
        trials, steps = load(sweep)
    assert sorted(trials["trial_id"]) == planned
    assert set(trials["status"].astype(str)) <= {"completed", "stuck", "diverged"}
    per_trial = steps.groupby("trial_id", observed=True)["step"].agg(["min", "max", "count"])
    ended_at = trials.set_index("trial_id")["diverged_step"].fillna(600)
    for trial_id, row in per_trial.iterrows():
        assert (row["min"], row["max"], row["count"]) == (1, ended_at[trial_id], ended_at[trial_id])
