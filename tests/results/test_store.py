"""Parquet writer and loader: real files in tmp_path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results import (
    completed_trial_ids,
    join_steps,
    load,
    select,
    store,
    sweep_dir,
    write_spec,
    write_trial,
)
from results.schema import STEP_SCHEMA, TRIAL_SCHEMA
from results.store import STATUS_CACHE, read_statuses


def summary(trial_id: str, status: str = "completed", **extra) -> dict:
    row = {
        "trial_id": trial_id,
        "status": status,
        "model": "fcn",
        "dataset": "digits",
        "loss": "mse",
        "parameterization": "sp",
        "init_scale": 1.0,
        "optimizer": "sgd",
        "eta_trgt": 0.1,
        "eta_init": 0.0,
        "eta_init_mode": "zero",
        "warmup_steps": 16,
        "warmup_shape": "linear",
        "schedule": "constant",
        "num_steps": 3,
        "batch_size": 64,
        "init_seed": 0,
        "data_seed": 0,
        "lambda0": 20.0,
        "final_test_loss": 0.25,
        "device": "cpu",
        "package_version": "0.1.0",
    }
    row.update(extra)
    return row


def steps_of(n: int = 3, **columns) -> dict:
    data = {
        "step": list(range(n)),
        "lr": [0.1] * n,
        "train_loss": [1.0 / (i + 1) for i in range(n)],
    }
    data.update(columns)
    return data


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


def test_files_land_in_documented_layout(tmp_path):
    write_trial(str(tmp_path), "sw", summary("t1"), steps_of())
    spec = write_spec(str(tmp_path), "sw", "name: sw\n")
    assert sweep_dir(str(tmp_path), "sw") == os.path.join(str(tmp_path), "sw")
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["spec.yaml", "steps", "trials"]
    assert (tmp_path / "sw" / "trials" / "t1.parquet").is_file()
    assert (tmp_path / "sw" / "steps" / "t1.parquet").is_file()
    assert Path(spec).read_text() == "name: sw\n"


def test_plain_pandas_reads_trials_dir_whose_files_differ_in_nulls(tmp_path):
    # The first file (sorted) has null diverged_step/error and a null extra column.
    write_trial(tmp_path, "sw", summary("a", model_width=None, optimizer_beta1=None), steps_of())
    write_trial(
        tmp_path,
        "sw",
        summary(
            "b",
            "diverged",
            diverged_step=7,
            final_test_loss=float("nan"),
            model_width=512,
            optimizer_beta1=0.9,
        ),
        steps_of(),
    )
    write_trial(tmp_path, "sw", summary("c", "error", error="boom", model_width=256), steps_of())
    df = pd.read_parquet(tmp_path / "sw" / "trials").sort_values("trial_id")
    assert df["trial_id"].tolist() == ["a", "b", "c"]
    assert df["diverged_step"].iloc[1] == 7
    assert df["error"].iloc[2] == "boom"
    assert df["model_width"].tolist()[1:] == [512.0, 256.0]
    assert df["optimizer_beta1"].iloc[1] == 0.9
    assert pd.read_parquet(tmp_path / "sw" / "steps").shape[0] == 9


def test_every_trial_file_has_the_core_arrow_types_even_when_null(tmp_path):
    write_trial(tmp_path, "sw", {"trial_id": "bare", "status": "stuck"}, {"step": [0]})
    schema = pq.read_schema(tmp_path / "sw" / "trials" / "bare.parquet")
    for field in TRIAL_SCHEMA:
        assert schema.field(field.name).type == field.type, field.name
    step_schema = pq.read_schema(tmp_path / "sw" / "steps" / "bare.parquet")
    for field in STEP_SCHEMA:
        assert step_schema.field(field.name).type == field.type, field.name


def test_extra_numbers_are_float64_so_int_and_float_values_agree(tmp_path):
    write_trial(
        tmp_path, "sw", summary("a", optimizer_momentum=0, use_bias=True, note="x"), steps_of()
    )
    write_trial(
        tmp_path, "sw", summary("b", optimizer_momentum=0.9, use_bias=False, note="y"), steps_of()
    )
    schema = pq.read_schema(tmp_path / "sw" / "trials" / "a.parquet")
    assert schema.field("optimizer_momentum").type == pa.float64()
    assert schema.field("use_bias").type == pa.bool_()
    assert schema.field("note").type == pa.string()
    df = pd.read_parquet(tmp_path / "sw" / "trials").sort_values("trial_id")
    assert df["optimizer_momentum"].tolist() == [0.0, 0.9]


def test_null_config_columns_have_their_declared_type_in_every_file(tmp_path):
    # Written alone, with nothing else in the sweep: the type comes from the schema.
    write_trial(tmp_path, "sw", summary("a", model_activation=None, model_bias=None), steps_of())
    schema = pq.read_schema(tmp_path / "sw" / "trials" / "a.parquet")
    assert schema.field("model_activation").type == pa.string()
    assert schema.field("model_bias").type == pa.bool_()
    assert schema.field("model_width").type == pa.int64()
    write_trial(tmp_path, "sw", summary("b", model_activation="relu", model_width=64), steps_of())
    df = pd.read_parquet(tmp_path / "sw" / "trials").sort_values("trial_id")
    assert df["model_activation"].isna().tolist() == [True, False]
    assert df["model_activation"].iloc[1] == "relu"
    assert df["model_width"].tolist()[1] == 64


def test_a_file_is_the_same_whatever_else_the_sweep_holds(tmp_path):
    write_trial(tmp_path / "alone", "sw", summary("t"), steps_of())
    for i in range(3):
        write_trial(tmp_path / "crowd", "sw", summary(f"other{i}", data_note="x"), steps_of())
    write_trial(tmp_path / "crowd", "sw", summary("t"), steps_of())
    alone = pq.read_schema(tmp_path / "alone" / "sw" / "trials" / "t.parquet")
    crowded = pq.read_schema(tmp_path / "crowd" / "sw" / "trials" / "t.parquet")
    assert alone.equals(crowded)
    assert "data_note" not in crowded.names


def test_unknown_null_extra_is_float64(tmp_path):
    write_trial(tmp_path, "sw", summary("a", my_extra=None), steps_of())
    schema = pq.read_schema(tmp_path / "sw" / "trials" / "a.parquet")
    assert schema.field("my_extra").type == pa.float64()


def test_stopped_trial_keeps_its_status_and_step(tmp_path):
    write_trial(tmp_path, "sw", summary("s", "stopped", stopped_step=40), steps_of())
    trials, _ = load(tmp_path / "sw")
    assert trials.loc[0, "status"] == "stopped"
    assert trials.loc[0, "stopped_step"] == 40
    assert completed_trial_ids(tmp_path, "sw") == {"s": "stopped"}


def test_rewrite_overwrites_instead_of_duplicating(tmp_path):
    write_trial(tmp_path, "sw", summary("t1", "error", error="oom"), steps_of(5))
    write_trial(tmp_path, "sw", summary("t1", final_test_loss=0.125), steps_of(3))
    trials, steps = load(tmp_path / "sw")
    assert len(trials) == 1
    assert trials.loc[0, "status"] == "completed"
    assert trials.loc[0, "final_test_loss"] == 0.125
    assert len(steps) == 3
    assert sorted(os.listdir(tmp_path / "sw" / "trials")) == ["t1.parquet"]


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
    monkeypatch.setattr(store, "SCAN_GROUP", 2)  # groups a-b, c-d, e
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


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "", ".hidden", "a\\b", "x" * 200, "a..b"])
def test_names_that_could_escape_the_results_dir_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="trial_id"):
        write_trial(tmp_path, "sw", summary(bad), steps_of())
    with pytest.raises(ValueError, match="sweep"):
        write_trial(tmp_path, bad, summary("ok"), steps_of())
    assert not any(p.suffix == ".parquet" for p in tmp_path.rglob("*"))


def test_bad_status_and_mismatched_steps_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="status"):
        write_trial(tmp_path, "sw", summary("t", "exploded"), steps_of())
    with pytest.raises(ValueError, match="trial_id"):
        write_trial(tmp_path, "sw", summary("t"), steps_of(trial_id=["other"] * 3))
    with pytest.raises(ValueError, match="length"):
        write_trial(tmp_path, "sw", summary("t"), {"step": [0, 1], "lr": [0.1]})
    assert not list(tmp_path.rglob("*.parquet"))


def test_steps_accept_dataframe_and_arrow_table(tmp_path):
    frame = pd.DataFrame({"step": [0, 1], "train_loss": [1.0, np.nan], "grad_norm": [3, 4]})
    write_trial(tmp_path, "sw", summary("df"), frame)
    write_trial(tmp_path, "sw", summary("tbl"), pa.table({"step": [0, 1], "lr": [0.5, 0.5]}))
    _, steps = load(tmp_path / "sw")
    df_rows = steps[steps["trial_id"] == "df"]
    assert df_rows["grad_norm"].tolist() == [3.0, 4.0]
    assert math.isnan(df_rows["train_loss"].iloc[1])
    assert steps[steps["trial_id"] == "tbl"]["lr"].tolist() == [0.5, 0.5]


def _half_then_fail(table, where, **kwargs):
    """A writer killed mid-file: leaves half a Parquet file at `where`, then raises."""
    with kwargs["filesystem"].open_output_stream(where) as out:
        out.write(b"PAR1" + b"\0" * 64)
    raise OSError("disk full")


def test_failed_write_leaves_no_partial_file_and_keeps_old_one(tmp_path, monkeypatch):
    write_trial(tmp_path, "sw", summary("keep", final_test_loss=0.5), steps_of())
    monkeypatch.setattr(pq, "write_table", _half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_trial(tmp_path, "sw", summary("new"), steps_of())
    with pytest.raises(OSError, match="disk full"):
        write_trial(tmp_path, "sw", summary("keep", final_test_loss=0.9), steps_of())
    monkeypatch.undo()
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["keep.parquet", "keep.parquet"]  # trials/ and steps/, no temp files
    trials, _ = load(tmp_path / "sw")
    assert trials["final_test_loss"].tolist() == [0.5]


def test_summary_is_written_after_steps(tmp_path, monkeypatch):
    written = []
    real = pq.write_table

    def record(table, where, **kwargs):
        written.append(os.path.basename(os.path.dirname(where)))
        real(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", record)
    write_trial(tmp_path, "sw", summary("t"), steps_of())
    assert written == ["steps", "trials"]


def test_completed_trial_ids_reads_status_and_skips_unreadable(tmp_path):
    write_trial(tmp_path, "sw", summary("a"), steps_of())
    write_trial(tmp_path, "sw", summary("b", "diverged", diverged_step=1), steps_of())
    (tmp_path / "sw" / "trials" / "c.parquet").write_bytes(b"PAR1 truncated")
    assert completed_trial_ids(tmp_path, "sw") == {"a": "completed", "b": "diverged"}
    assert completed_trial_ids(tmp_path, "absent") == {}


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


# --------------------------------------------------------------------------- status cache


def _age(path: Path, seconds: float) -> None:
    """Set a file's modification time `seconds` into the past."""
    stamp = path.stat().st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(stamp, stamp))


def _cache_rows(sweep: Path) -> dict[str, tuple[str, str]]:
    table = pq.read_table(sweep / STATUS_CACHE)
    return {
        f: (t, s)
        for f, t, s in zip(
            table["file"].to_pylist(),
            table["trial_id"].to_pylist(),
            table["status"].to_pylist(),
            strict=True,
        )
    }


def _forge_cache(sweep: Path, statuses: dict[str, str]) -> None:
    """Rewrite the cached status of some files (keeping size and mtime), as a check that
    a read takes them from the cache."""
    table = pq.read_table(sweep / STATUS_CACHE)
    files = table["file"].to_pylist()
    forged = [statuses.get(f, s) for f, s in zip(files, table["status"].to_pylist(), strict=True)]
    pq.write_table(
        table.set_column(4, "status", pa.array(forged, pa.string())), sweep / STATUS_CACHE
    )


def _sweep_with_settled_and_fresh(tmp_path: Path) -> Path:
    write_trial(tmp_path, "sw", summary("a"), steps_of())
    write_trial(tmp_path, "sw", summary("b", "diverged", diverged_step=1), steps_of())
    write_trial(tmp_path, "sw", summary("c", "error", error="boom"), steps_of())
    sweep = tmp_path / "sw"
    for name in ("a", "b", "c"):
        _age(sweep / "trials" / f"{name}.parquet", 60)
    write_trial(tmp_path, "sw", summary("d"), steps_of())  # just written: not settled
    return sweep


def test_read_statuses_caches_only_settled_summaries_and_only_when_asked(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    expected = {"a": "completed", "b": "diverged", "c": "error", "d": "completed"}
    assert read_statuses(tmp_path, "sw") == expected
    assert not (sweep / STATUS_CACHE).exists()  # a plain read writes nothing
    assert read_statuses(tmp_path, "sw", update_cache=True) == expected
    assert _cache_rows(sweep) == {
        "a.parquet": ("a", "completed"),
        "b.parquet": ("b", "diverged"),
        "c.parquet": ("c", "error"),
    }
    # The cache is hidden: readers of the sweep's directories never see it.
    trials, _ = load(sweep)
    assert sorted(trials["trial_id"]) == ["a", "b", "c", "d"]


def test_cached_statuses_are_used_while_size_and_mtime_match(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    read_statuses(tmp_path, "sw", update_cache=True)
    _forge_cache(sweep, {"a.parquet": "stuck", "b.parquet": "stuck"})
    statuses = read_statuses(tmp_path, "sw")
    assert statuses == {"a": "stuck", "b": "stuck", "c": "error", "d": "completed"}
    # Touched (a new mtime): read again from the file.
    _age(sweep / "trials" / "a.parquet", 30)
    assert read_statuses(tmp_path, "sw")["a"] == "completed"
    # Rewritten (a rerun that ended this time): read again.
    write_trial(tmp_path, "sw", summary("c"), steps_of())
    assert read_statuses(tmp_path, "sw")["c"] == "completed"
    # Deleted: gone, whatever the cache says.
    (sweep / "trials" / "b.parquet").unlink()
    assert "b" not in read_statuses(tmp_path, "sw", update_cache=True)
    assert "b.parquet" not in _cache_rows(sweep)


def test_a_cache_write_settles_what_was_written_before_it(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    read_statuses(tmp_path, "sw", update_cache=True)
    assert "d.parquet" not in _cache_rows(sweep)
    _age(sweep / "trials" / "d.parquet", 10)  # as if the cache had been written 10 s later
    read_statuses(tmp_path, "sw", update_cache=True)
    assert _cache_rows(sweep)["d.parquet"] == ("d", "completed")


def test_a_broken_cache_is_ignored_and_replaced(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    (sweep / STATUS_CACHE).write_bytes(b"PAR1 not really")
    expected = {"a": "completed", "b": "diverged", "c": "error", "d": "completed"}
    assert read_statuses(tmp_path, "sw") == expected
    assert read_statuses(tmp_path, "sw", update_cache=True) == expected
    assert set(_cache_rows(sweep)) == {"a.parquet", "b.parquet", "c.parquet"}


def test_unreadable_summaries_are_never_cached_and_always_reported(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    bad = sweep / "trials" / "bad.parquet"
    bad.write_bytes(b"PAR1 truncated")
    _age(bad, 60)
    for _ in range(2):
        unreadable: list[tuple[str, str]] = []
        statuses = read_statuses(tmp_path, "sw", unreadable=unreadable, update_cache=True)
        assert set(statuses) == {"a", "b", "c", "d"}
        assert [os.path.basename(p) for p, _ in unreadable] == ["bad.parquet"]
    assert "bad.parquet" not in _cache_rows(sweep)


def test_a_store_that_refuses_the_cache_still_gives_statuses(tmp_path, monkeypatch):
    sweep = _sweep_with_settled_and_fresh(tmp_path)

    def refuse(table, where, **kwargs):
        raise PermissionError(13, "read-only", str(where))

    monkeypatch.setattr(pq, "write_table", refuse)
    statuses = read_statuses(tmp_path, "sw", update_cache=True)
    assert statuses == {"a": "completed", "b": "diverged", "c": "error", "d": "completed"}
    assert not (sweep / STATUS_CACHE).exists()
    assert not [p for p in sweep.iterdir() if p.name.endswith(".tmp")]
