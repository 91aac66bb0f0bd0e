"""Loading sweeps into pandas, and picking rows: real files in tmp_path."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from results import (
    completed_trial_ids,
    join_steps,
    load,
    read_statuses,
    select,
    write_trial,
)
from results.schema import STEP_SCHEMA, TRIAL_SCHEMA
from tests.results.rows import steps_of, summary


def test_round_trip_keeps_values_and_step_rows(tmp_path):
    write_trial(
        tmp_path, "sw", summary("t1", final_test_loss=0.5), steps_of(sharpness=[None, 3.0, None])
    )
    trials, steps = load(tmp_path / "sw")
    assert trials["trial_id"].tolist() == ["t1"]
    assert trials.loc[0, "final_test_loss"] == 0.5
    assert trials.loc[0, "sweep"] == "sw"
    assert steps["step"].tolist() == [0, 1, 2]
    assert steps["train_loss"].tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert steps["sharpness"].isna().tolist() == [True, False, True]
    assert steps["preconditioned_sharpness"].isna().all()  # core column filled with nulls


def test_stopped_trial_keeps_its_status_and_step(tmp_path):
    write_trial(tmp_path, "sw", summary("s", "stopped", stopped_step=40), steps_of())
    trials, _ = load(tmp_path / "sw")
    assert trials.loc[0, "status"] == "stopped"
    assert trials.loc[0, "stopped_step"] == 40
    assert completed_trial_ids(tmp_path, "sw") == {"s": "stopped"}


def test_truncated_file_is_reported_and_the_rest_loads(tmp_path):
    for name in ("a", "b", "c"):
        write_trial(tmp_path, "sw", summary(name), steps_of())
    good = (tmp_path / "sw" / "trials" / "b.parquet").read_bytes()
    (tmp_path / "sw" / "trials" / "b.parquet").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="b.parquet"):
        loaded = load(tmp_path / "sw")
    trials, steps = loaded
    assert loaded.trials is trials and loaded.steps is steps
    assert trials["trial_id"].tolist() == ["a", "c"]
    assert len(steps) == 9  # steps of b are intact and still loaded
    assert [os.path.basename(p) for p, _ in loaded.unreadable] == ["b.parquet"]
    assert loaded.unreadable[0][1]  # a reason is given


def test_a_sweep_scanned_in_groups_loads_as_one_scan_would(tmp_path, monkeypatch):
    names = ["a", "b", "c", "d", "e"]
    for i, name in enumerate(names):
        write_trial(tmp_path, "sw", summary(name, final_test_loss=i / 10), steps_of(i + 1))
    whole = load(tmp_path / "sw")
    good = (tmp_path / "sw" / "trials" / "d.parquet").read_bytes()
    monkeypatch.setattr("results.scan.SCAN_GROUP", 2)  # groups a-b, c-d, e
    grouped = load(tmp_path / "sw")
    pd.testing.assert_frame_equal(grouped.trials, whole.trials)
    pd.testing.assert_frame_equal(grouped.steps, whole.steps)
    assert grouped.steps["trial_id"].tolist() == [
        n for i, n in enumerate(names) for _ in range(i + 1)
    ]
    # A bad file spoils only its own group's scan: that group is read file by file.
    (tmp_path / "sw" / "trials" / "d.parquet").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="d.parquet"):
        loaded = load(tmp_path / "sw")
    assert loaded.trials["trial_id"].tolist() == ["a", "b", "c", "e"]
    assert loaded.trials["final_test_loss"].tolist() == [0.0, 0.1, 0.2, 0.4]
    assert [os.path.basename(p) for p, _ in loaded.unreadable] == ["d.parquet"]
    statuses = read_statuses(tmp_path, "sw")
    assert statuses == dict.fromkeys(["a", "b", "c", "e"], "completed")


def test_load_concatenates_sweeps_under_a_results_root(tmp_path):
    write_trial(tmp_path, "one", summary("a"), steps_of())
    write_trial(tmp_path, "two", summary("b", extra_flag=True), steps_of())
    trials, steps = load(tmp_path)
    assert sorted(zip(trials["sweep"], trials["trial_id"], strict=True)) == [
        ("one", "a"),
        ("two", "b"),
    ]
    assert len(steps) == 6
    assert trials["extra_flag"].isna().sum() == 1


def test_load_dtypes(tmp_path):
    write_trial(tmp_path, "sw", summary("a", "diverged", diverged_step=4), steps_of())
    write_trial(tmp_path, "sw", summary("b"), steps_of())
    trials, steps = load(tmp_path / "sw")
    assert list(trials["status"].cat.categories) == [
        "completed",
        "diverged",
        "stuck",
        "stopped",
        "error",
    ]
    for name in ("optimizer", "parameterization", "model", "sweep", "schedule", "device"):
        assert isinstance(trials[name].dtype, pd.CategoricalDtype), name
    assert trials["diverged_step"].dtype == "Int64"
    assert trials["diverged_step"].isna().tolist() == [False, True]
    assert trials["warmup_steps"].dtype == "Int64"
    assert trials["eta_trgt"].dtype == np.float64
    assert steps["step"].dtype == np.int64
    assert isinstance(steps["trial_id"].dtype, pd.CategoricalDtype)
    assert steps["lr"].dtype == np.float64


def test_categories_are_sorted_whatever_order_the_files_hold_them_in(tmp_path):
    # Files are scanned in name order; categories come out sorted, as pandas makes them.
    write_trial(tmp_path, "two", summary("a", model="mlp", optimizer="sgd"), steps_of())
    write_trial(tmp_path, "two", summary("b", model="fcn", optimizer="adam"), steps_of())
    write_trial(tmp_path, "one", summary("z", model="resmlp", optimizer="sgd"), steps_of())
    trials, steps = load(tmp_path)
    assert list(trials["model"].cat.categories) == ["fcn", "mlp", "resmlp"]
    assert list(trials["optimizer"].cat.categories) == ["adam", "sgd"]
    assert list(trials["sweep"].cat.categories) == ["one", "two"]
    assert list(steps["trial_id"].cat.categories) == ["a", "b", "z"]
    assert steps["trial_id"].tolist() == ["z"] * 3 + ["a"] * 3 + ["b"] * 3  # one, then two
    by_id = trials.set_index("trial_id")
    assert by_id["model"].astype(str).to_dict() == {"a": "mlp", "b": "fcn", "z": "resmlp"}


def test_empty_sweep_and_missing_steps_dir_give_empty_frames_with_columns(tmp_path):
    (tmp_path / "sw" / "trials").mkdir(parents=True)
    trials, steps = load(tmp_path / "sw")
    assert trials.empty and steps.empty
    assert set(TRIAL_SCHEMA.names) <= set(trials.columns)
    assert list(steps.columns) == STEP_SCHEMA.names
    assert "stopped" in trials["status"].cat.categories


def test_load_of_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load(tmp_path / "nowhere")


def test_select_matches_values_lists_and_float_tolerance(tmp_path):
    for i, eta in enumerate([0.1, 0.2, 0.1 * 3]):
        write_trial(
            tmp_path,
            "sw",
            summary(f"t{i}", eta_trgt=eta, optimizer="sgd" if i else "adam"),
            steps_of(),
        )
    trials, steps = load(tmp_path / "sw")
    assert select(trials, eta_trgt=0.30000000000000004 - 1e-17)["trial_id"].tolist() == ["t2"]
    assert select(trials, optimizer="sgd", eta_trgt=[0.1, 0.2])["trial_id"].tolist() == ["t1"]
    assert len(select(trials, optimizer=["sgd", "adam"])) == 3
    with pytest.raises(KeyError, match="nope"):
        select(trials, nope=1)
    joined = join_steps(trials, steps, columns=["optimizer", "eta_trgt"])
    assert len(joined) == 9
    assert set(joined.loc[joined["trial_id"] == "t0", "optimizer"].astype(str)) == {"adam"}
