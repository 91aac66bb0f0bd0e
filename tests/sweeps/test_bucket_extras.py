"""The Optuna study and the TensorBoard runs of a sweep whose results are in a bucket
(a real S3-compatible server on loopback). No Ray started."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pyarrow.fs as pafs
import pytest

from results import child
from results.store import resolve
from sweeps import expand, parse_spec
from sweeps.study import STUDY_FILE, persisted_study
from sweeps.tracking import TENSORBOARD_DIR, Tracking
from tests.sweeps.conftest import tiny_spec
from trials import run_trial

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.integration,
]  # an S3-compatible server on loopback


def kind_of(uri: str) -> pafs.FileType:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type


def test_the_study_is_put_in_the_bucket_and_taken_up_again(bucket) -> None:
    with persisted_study(bucket, "sw") as storage:
        study = optuna.create_study(study_name="sw", storage=storage)
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert kind_of(child(child(bucket, "sw"), STUDY_FILE)) == pafs.FileType.File
    with persisted_study(bucket, "sw") as storage:
        again = optuna.load_study(study_name="sw", storage=storage)
        assert [t.value for t in again.trials] == [0.5]


def test_tensorboard_runs_are_written_to_the_bucket(bucket) -> None:
    spec = parse_spec(tiny_spec(grid={"eta_trgt": [0.05]}, logging={"tensorboard": True}))
    (planned,) = expand(spec)
    run_trial(planned.config, results=bucket, sweep=spec.name)
    tracking = Tracking(spec, bucket)
    tune_trial = SimpleNamespace(trial_id="t", config={"overrides": planned.overrides})
    tracking.on_trial_result(
        0, [], tune_trial, {"members": {planned.trial_id: {"status": "completed"}}}
    )
    tracking.on_experiment_end([])
    run = child(child(child(bucket, spec.name), TENSORBOARD_DIR), planned.trial_id)
    fs, path = resolve(run)
    (events,) = fs.get_file_info(pafs.FileSelector(path))
    assert events.base_name.startswith("events.out.tfevents") and events.size > 0
