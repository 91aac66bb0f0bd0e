"""Writing a trial's Parquet files and a sweep's spec: real files in tmp_path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results import load, sweep_dir, write_spec, write_trial
from results.schema import STEP_SCHEMA, TRIAL_SCHEMA
from tests.results.rows import steps_of, summary


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


def test_rewrite_overwrites_instead_of_duplicating(tmp_path):
    write_trial(tmp_path, "sw", summary("t1", "error", error="oom"), steps_of(5))
    write_trial(tmp_path, "sw", summary("t1", final_test_loss=0.125), steps_of(3))
    trials, steps = load(tmp_path / "sw")
    assert len(trials) == 1
    assert trials.loc[0, "status"] == "completed"
    assert trials.loc[0, "final_test_loss"] == 0.125
    assert len(steps) == 3
    assert sorted(os.listdir(tmp_path / "sw" / "trials")) == ["t1.parquet"]


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
