"""Process faults on a real embedded Ray: a trial's worker or the whole driver is
SIGKILLed mid-sweep. Each sweep runs as a `warmup-sweep run` subprocess (own Ray, own
session) so the test can find and kill exactly its processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sweeps import expand, parse_spec
from tests.reliability.conftest import tiny_spec, wait_for
from trials import run_pack, run_trial

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TRAINABLE_TITLE = "ray::ImplicitFunc.train"  # a function trainable's actor, while it trains
TIMING_COLUMNS = ["wall_time_s", "node", "device"]


def long_spec(name: str, steps: int, **top) -> dict:
    """Tiny trials made to run a few seconds each (about 1-2 ms a step on one core)."""
    data = tiny_spec(name=name, pack_size=1, **top)
    data["base"]["num_steps"] = steps
    return data


def summaries(sweep: Path) -> dict[str, tuple[int, int]]:
    """{trial_id: (inode, mtime_ns)} of the summary files: a rewrite changes both."""
    return {
        p.stem: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (sweep / "trials").glob("*.parquet")
    }


def test_killed_worker_is_retried_and_every_trial_has_one_row(cli, write_spec) -> None:
    data = long_spec("worker-kill", 3000, failure={"retries": 2}, grid={"eta_trgt": [0.05, 0.1]})
    run = cli("run", str(write_spec(data)), "--results", "results", "--num-cpus", "2")

    def training_worker() -> int | None:
        return next((pid for pid, t in run.children().items() if t == TRAINABLE_TITLE), None)

    victim = wait_for(training_worker, run)
    time.sleep(1.0)  # mid-run: it has loaded its data and is taking steps
    os.kill(victim, signal.SIGKILL)
    code, out, err = run.wait()

    assert code == 0, err[-3000:]
    assert "completed 2" in out
    sweep = run.cwd / "results" / "worker-kill"
    planned = {p.trial_id for p in expand(parse_spec(data))}
    trials = pd.read_parquet(sweep / "trials")
    assert sorted(trials["trial_id"]) == sorted(planned)  # each exactly once
    assert set(trials["status"]) == {"completed"}
    # Tune saw the death and ran that trial again, to the end.
    failed = [d for d in (sweep / "tune").iterdir() if (d / "error.txt").exists()]
    assert len(failed) == 1, failed
    error = (failed[0] / "error.txt").read_text()
    assert "actor died unexpectedly" in error and f"pid: {victim}" in error
    last = json.loads((failed[0] / "result.json").read_text().strip().splitlines()[-1])
    assert last["status"] == "completed"


def test_killed_driver_resumes_without_rerunning_or_duplicating(cli, write_spec, tmp_path):
    data = long_spec(
        "driver-kill", 1000, max_concurrent=1, grid={"eta_trgt": [0.05, 0.1, 0.15, 0.2]}
    )
    spec = str(write_spec(data))
    planned = sorted(p.trial_id for p in expand(parse_spec(data)))

    # The reference: the same spec, uninterrupted.
    code, _, err = cli("run", spec, "--results", "reference", "--num-cpus", "2").wait()
    assert code == 0, err[-3000:]
    reference = tmp_path / "reference" / "driver-kill"

    sweep = tmp_path / "results" / "driver-kill"
    run = cli("run", spec, "--results", "results", "--num-cpus", "2")
    wait_for(lambda: len(summaries(sweep)) >= 1, run)
    run.kill()  # SIGKILL the driver, its process group and the Ray processes it started
    finished = summaries(sweep)  # what had ended before the kill
    assert 1 <= len(finished) < len(planned), "the kill came too late to interrupt the sweep"
    assert run.alive() == []  # nothing of the killed run is left

    code, out, err = cli("run", spec, "--results", "results", "--num-cpus", "2").wait()

    assert code == 0, err[-3000:]
    todo = len(planned) - len(finished)
    assert f"{todo} to run, {len(finished)} already ended" in err
    assert f"skipped {len(finished)} already ended" in out
    after = summaries(sweep)
    assert sorted(after) == planned  # none missing
    for trial_id, stamp in finished.items():
        assert after[trial_id] == stamp, f"{trial_id} ran again"
    got = pd.read_parquet(sweep / "trials")
    assert sorted(got["trial_id"]) == planned  # none duplicated
    want = pd.read_parquet(reference / "trials")
    pd.testing.assert_frame_equal(
        got.drop(columns=TIMING_COLUMNS).sort_values("trial_id").reset_index(drop=True),
        want.drop(columns=TIMING_COLUMNS).sort_values("trial_id").reset_index(drop=True),
    )
    got_steps = pd.read_parquet(sweep / "steps").sort_values(["trial_id", "step"])
    want_steps = pd.read_parquet(reference / "steps").sort_values(["trial_id", "step"])
    pd.testing.assert_frame_equal(
        got_steps.reset_index(drop=True), want_steps.reset_index(drop=True)
    )


def test_killed_trial_resumes_from_its_tune_checkpoint_with_the_same_values(cli, write_spec):
    data = long_spec("checkpoint-kill", 2000, failure={"retries": 1}, grid={"eta_trgt": [0.1]})
    data["base"]["checkpoint_every"] = 200
    data["base"]["batch_size"] = 32  # minibatches: the data order has to resume too
    run = cli("run", str(write_spec(data)), "--results", "results", "--num-cpus", "2")
    sweep = run.cwd / "results" / "checkpoint-kill"

    def checkpointed_worker() -> int | None:
        has_checkpoint = any((sweep / "tune").glob("*/checkpoint_*/trial_state.pt"))
        worker = next((pid for pid, t in run.children().items() if t == TRAINABLE_TITLE), None)
        return worker if has_checkpoint else None

    victim = wait_for(checkpointed_worker, run)
    os.kill(victim, signal.SIGKILL)
    code, _, err = run.wait()
    assert code == 0, err[-3000:]

    trial_dir = next(d for d in (sweep / "tune").iterdir() if (d / "error.txt").exists())
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    # The restarted worker (another pid) continues after the checkpoint, not from step 1.
    first_after_restart = next(r for r in results if r["pid"] != victim)
    assert first_after_restart["step"] > data["base"]["checkpoint_every"]

    (planned,) = expand(parse_spec(data))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray worker (resources.cpu = 1): same float sums
    try:
        reference = run_trial(planned.config)
    finally:
        torch.set_num_threads(threads)
    steps = pd.read_parquet(sweep / "steps").sort_values("step").reset_index(drop=True)
    assert steps["step"].tolist() == reference.steps["step"]
    assert steps["train_loss"].tolist() == reference.steps["train_loss"]
    summary = pd.read_parquet(sweep / "trials").iloc[0]
    assert summary["final_test_loss"] == reference.summary["final_test_loss"]


def test_killed_pack_resumes_from_its_tune_checkpoint_with_every_members_values(cli, write_spec):
    data = long_spec("pack-kill", 2000, failure={"retries": 1}, grid={"eta_trgt": [0.1, 0.2]})
    data.update(pack_size=2)
    data["base"]["checkpoint_every"] = 200
    data["base"]["batch_size"] = 32
    # One CPU: one worker, so the two trials stay one pack.
    run = cli("run", str(write_spec(data)), "--results", "results", "--num-cpus", "1")
    sweep = run.cwd / "results" / "pack-kill"

    def checkpointed_worker() -> int | None:
        has_checkpoint = any((sweep / "tune").glob("*/checkpoint_*/trial_state.pt"))
        worker = next((pid for pid, t in run.children().items() if t == TRAINABLE_TITLE), None)
        return worker if has_checkpoint else None

    victim = wait_for(checkpointed_worker, run)
    os.kill(victim, signal.SIGKILL)
    code, _, err = run.wait()
    assert code == 0, err[-3000:]

    trial_dir = next(d for d in (sweep / "tune").iterdir() if (d / "error.txt").exists())
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    first_after_restart = next(r for r in results if r["pid"] != victim)
    assert first_after_restart["step"] > data["base"]["checkpoint_every"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # An uninterrupted pack of the same two trials (float sums as the worker's).
        done = run_pack([p.config for p in expand(parse_spec(data))])
        reference = {r.trial_id: r for r in done}
    finally:
        torch.set_num_threads(threads)
    steps = pd.read_parquet(sweep / "steps")
    assert sorted(steps["trial_id"].unique()) == sorted(reference)
    for trial_id, ref in reference.items():
        mine = steps[steps["trial_id"] == trial_id].sort_values("step")
        assert mine["step"].tolist() == ref.steps["step"]
        assert mine["train_loss"].tolist() == ref.steps["train_loss"]
