"""The experiment trackers get every measurement of each ended trial, under its trial id.

Real trials write their files (no Ray); the `Tracking` callback is then told of their
endings as Tune tells it, for an unpacked and a packed Tune trial, and each tracker's
own files are read back: TensorBoard's event file, MLflow's SQLite store, and W&B's
offline run file (`WANDB_MODE=offline`).
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from sweeps import expand, parse_spec
from sweeps.tracking import Tracking, check_trackers
from tests.sweeps.conftest import tiny_spec
from trials import run_trial

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.integration,
]  # W&B and MLflow start helper processes

MEASURED = ("lr", "train_loss", "sharpness", "threshold")


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> SimpleNamespace:
    """Three trials of a tiny sweep, one alone in its Tune trial and two in a pack,
    logged to every tracker."""
    root = tmp_path_factory.mktemp("tracking")
    results = str(root / "results")
    data = tiny_spec(
        logging={
            "tensorboard": True,
            "mlflow": True,
            "mlflow_tracking_uri": f"sqlite:///{root}/mlflow.db",
            "wandb": {"project": "warmup-tests", "mode": "offline", "tags": ["test"]},
        }
    )
    data["base"]["sharpness_every"] = 5  # measured at steps 1, 6, 11, 16 of 20
    data["grid"] = {"eta_trgt": [0.05, 0.1, 4.0]}  # the last one diverges
    spec = parse_spec(data)
    planned = expand(spec)
    for p in planned:
        run_trial(p.config, results=results, sweep=spec.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_SILENT", "true")
        tracking = Tracking(spec, results)
        alone = SimpleNamespace(trial_id="tune1", config={"overrides": planned[0].overrides})
        pack = SimpleNamespace(
            trial_id="tune2", config={"pack": [p.overrides for p in planned[1:]]}
        )
        ending = {"status": "completed"}  # what the callback reads: which trials ended
        tracking.on_trial_result(0, [], alone, {"members": {planned[0].trial_id: ending}})
        tracking.on_trial_result(0, [], pack, {"ended_members": {planned[2].trial_id: ending}})
        final = {p.trial_id: ending for p in planned[1:]}
        tracking.on_trial_result(0, [], pack, {"members": final})
        tracking.on_trial_result(0, [], pack, {"members": final})  # Tune repeats results
        tracking.on_experiment_end([])
    steps = pd.read_parquet(Path(results) / spec.name / "steps")
    trials = pd.read_parquet(Path(results) / spec.name / "trials")
    return SimpleNamespace(
        root=root, sweep=Path(results) / spec.name, planned=planned, steps=steps, trials=trials
    )


def expected(logged, trial_id: str, column: str) -> list[tuple[int, float]]:
    """(step, value) of the steps table where the column was measured (finite)."""
    rows = logged.steps[logged.steps.trial_id == trial_id]
    return [
        (int(s), float(v)) for s, v in zip(rows.step, rows[column], strict=True) if math.isfinite(v)
    ]


def test_the_sweep_has_a_diverged_trial_and_sparse_sharpness(logged) -> None:
    statuses = dict(zip(logged.trials.trial_id, logged.trials.status, strict=True))
    assert sorted(statuses.values()) == ["completed", "completed", "diverged"]
    first = logged.planned[0].trial_id
    assert [s for s, _ in expected(logged, first, "sharpness")] == [1, 6, 11, 16]


# ---------------------------------------------------------------------------- TensorBoard


def tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard event file: TFRecord framing (length, its CRC, the
    Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    raw, pos, scalars = path.read_bytes(), 0, {}
    while pos < len(raw):
        (length,) = struct.unpack("<Q", raw[pos : pos + 8])
        event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + length])
        pos += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_gets_every_measurement_in_a_run_per_trial(logged) -> None:
    runs = sorted(p.name for p in (logged.sweep / "tensorboard").iterdir())
    assert runs == sorted(p.trial_id for p in logged.planned)  # packed ones under their own ids
    for p in logged.planned:
        (events,) = (logged.sweep / "tensorboard" / p.trial_id).glob("events.out.tfevents*")
        scalars = tensorboard_scalars(events)
        for column in MEASURED:
            want = expected(logged, p.trial_id, column)
            assert [s for s, _ in scalars[column]] == [s for s, _ in want], column
            assert [v for _, v in scalars[column]] == pytest.approx([v for _, v in want])


# ---------------------------------------------------------------------------- MLflow


def test_mlflow_gets_a_run_per_trial_named_by_its_id(logged) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{logged.root}/mlflow.db")
    experiment = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {p.trial_id for p in logged.planned}
    statuses = dict(zip(logged.trials.trial_id, logged.trials.status, strict=True))
    for p in logged.planned:
        run = runs[p.trial_id]
        assert run.data.tags["status"] == statuses[p.trial_id]
        assert float(run.data.params["eta_trgt"]) == p.overrides["eta_trgt"]
        for column in MEASURED:
            history = client.get_metric_history(run.info.run_id, column)
            got = sorted((m.step, m.value) for m in history)
            want = expected(logged, p.trial_id, column)
            assert [s for s, _ in got] == [s for s, _ in want], column
            assert [v for _, v in got] == pytest.approx([v for _, v in want])


# ---------------------------------------------------------------------------- W&B


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file: a 7-byte header, then 32 KiB blocks of
    LevelDB-log records (CRC, length, type), a record's pieces joined by type."""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos = path.read_bytes(), 32768, 7
    records, piece = [], b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        piece += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            records.append(wandb_internal_pb2.Record.FromString(piece))
            piece = b""
    return records


def test_wandb_offline_gets_a_run_per_trial_named_by_its_id(logged) -> None:
    runs = {}
    for path in (logged.sweep / "wandb").glob("offline-run-*/run-*.wandb"):
        records = wandb_records(path)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        history = {}
        for r in records:
            if r.WhichOneof("record_type") == "history":
                items = {"/".join(i.nested_key) or i.key: i.value_json for i in r.history.item}
                history[int(items["_step"])] = items
        runs[run.display_name] = (run, history)
    assert set(runs) == {p.trial_id for p in logged.planned}
    for p in logged.planned:
        run, history = runs[p.trial_id]
        assert run.project == "warmup-tests" and run.run_group == "tiny"
        assert "test" in run.tags
        for column in MEASURED:
            want = expected(logged, p.trial_id, column)
            got = [(s, float(h[column])) for s, h in sorted(history.items()) if column in h]
            assert [s for s, _ in got] == [s for s, _ in want], column
            assert [v for _, v in got] == pytest.approx([v for _, v in want])


def test_a_tracker_that_cannot_work_is_refused_before_anything_runs(monkeypatch) -> None:
    data = tiny_spec(logging={"wandb": {"project": "p", "mode": "online"}})
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", "/nonexistent-wandb-config")
    monkeypatch.setenv("NETRC", "/nonexistent-netrc")
    with pytest.raises(ValueError, match=r"logging\.wandb: no W&B credentials"):
        check_trackers(parse_spec(data))
    data["logging"]["wandb"]["mode"] = "offline"
    check_trackers(parse_spec(data))  # offline needs no credentials


def test_a_tracker_that_fails_is_left_out_with_one_warning(tmp_path) -> None:
    data = tiny_spec(
        grid={"eta_trgt": [0.05]},
        logging={"tensorboard": True, "mlflow": True, "mlflow_tracking_uri": "nosuchscheme://x"},
    )
    spec = parse_spec(data)
    (planned,) = expand(spec)
    run_trial(planned.config, results=str(tmp_path), sweep=spec.name)
    warnings = io.StringIO()
    tracking = Tracking(spec, str(tmp_path), stream=warnings)
    tune_trial = SimpleNamespace(trial_id="t", config={"overrides": planned.overrides})
    ending = {"members": {planned.trial_id: {"status": "completed"}}}
    tracking.on_trial_result(0, [], tune_trial, ending)
    tracking.on_experiment_end([])
    (line,) = warnings.getvalue().splitlines()
    assert line.startswith("warning: mlflow: ")
    assert list((tmp_path / spec.name / "tensorboard" / planned.trial_id).glob("events*"))
