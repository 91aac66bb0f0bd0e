"""Load a sweep (or every sweep under a results root) into pandas, and pick rows from it.

Loaded dtypes: name columns (see `schema.CATEGORY_COLUMNS`) are `category`, with
`status` categories fixed to completed, diverged, stuck, stopped, error; integer
columns are nullable `Int64` (a trial that did not diverge has `diverged_step` <NA>),
except the steps table's `step`, which is never null and is plain `int64`; float
columns are `float64` with NaN for null (so "not measured" and a NaN loss both read as
NaN); `trial_id`, `error` and other text are pandas strings (`trial_id` is `category`
in the steps table, where it repeats on every row).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from results.location import STEPS_DIR, TRIALS_DIR, join, parquet_files, resolve, sweep_dirs
from results.scan import scan
from results.schema import CATEGORY_COLUMNS, STATUSES, STEP_SCHEMA, TRIAL_SCHEMA

__all__ = ["Loaded", "from_tables", "join_steps", "load", "select"]


class Loaded(tuple):
    """Result of `load`: unpacks as `trials, steps = load(...)`; `.unreadable` lists (path, reason)."""

    unreadable: list[tuple[str, str]]

    def __new__(
        cls, trials: pd.DataFrame, steps: pd.DataFrame, unreadable: list[tuple[str, str]]
    ) -> Loaded:
        self = super().__new__(cls, (trials, steps))
        self.unreadable = unreadable
        return self

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial summary."""
        return self[0]

    @property
    def steps(self) -> pd.DataFrame:
        """One row per recorded step of every trial."""
        return self[1]

    def __repr__(self) -> str:
        return (
            f"Loaded(trials={len(self[0])} rows, steps={len(self[1])} rows, "
            f"unreadable={len(self.unreadable)} files)"
        )


def load(path: str | os.PathLike) -> Loaded:
    """Load the trials and steps of a sweep directory, or of every sweep under a results root.

    `path` is a local path or an `s3://` / `gs://` URI. Each sweep's files are
    scanned as one dataset; a truncated or corrupt file is listed in `.unreadable`
    (and warned about) while everything else loads.
    """
    fs, root = resolve(path)
    unreadable: list[tuple[str, str]] = []
    trial_tables, step_tables = [], []
    for directory in sweep_dirs(fs, root):
        trial_files = [i.path for i in parquet_files(fs, join(fs, directory, TRIALS_DIR))]
        step_files = [i.path for i in parquet_files(fs, join(fs, directory, STEPS_DIR))]
        trial_tables.append(scan(fs, trial_files, TRIAL_SCHEMA, unreadable))
        step_tables.append(scan(fs, step_files, STEP_SCHEMA, unreadable))
    for file, reason in unreadable:
        warnings.warn(f"unreadable results file {file}: {reason}", stacklevel=2)
    return from_tables(trial_tables, step_tables, unreadable)


def from_tables(
    trial_tables: Sequence[pa.Table],
    step_tables: Sequence[pa.Table],
    unreadable: list[tuple[str, str]] | None = None,
) -> Loaded:
    """`Loaded` frames, with `load`'s dtypes and row order, from Arrow tables in the
    `results.schema` layout (`trial_table` and `steps_table` rows, or scans of them)."""
    trials = _to_pandas(_concat(trial_tables or [TRIAL_SCHEMA.empty_table()]), CATEGORY_COLUMNS)
    steps = _to_pandas(_concat(step_tables or [STEP_SCHEMA.empty_table()]), ("trial_id",))
    if "trial_id" in trials.columns:
        trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    return Loaded(trials, steps, list(unreadable or []))


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate the tables of several sweeps, whose extra columns may differ."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException:
        # Incompatible extra columns across sweeps (e.g. float in one, text in another):
        # fall back to pandas, which stores such a column as object.
        frames = [t.to_pandas() for t in tables]
        return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)


def _to_pandas(table: pa.Table, category_columns: Iterable[str]) -> pd.DataFrame:
    # Categories are encoded by Arrow before the conversion and integers converted to
    # nullable Int64 during it: no pass over pandas objects after. A sweep's tables
    # hold one chunk per file, so every per-column pass counts.
    for name in category_columns:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pc.dictionary_encode(table.column(i)))
    df = table.to_pandas(ignore_metadata=True, types_mapper=_nullable_integers)
    for field in table.schema:
        if pa.types.is_null(field.type):
            df[field.name] = df[field.name].astype("float64")
        elif pa.types.is_dictionary(field.type):
            # Categories sorted, as pandas makes them (Arrow keeps first appearance).
            column = df[field.name]
            df[field.name] = column.cat.reorder_categories(sorted(column.cat.categories))
        elif field.name in category_columns:
            df[field.name] = df[field.name].astype("category")  # e.g. an extra column
    if "status" in df.columns:
        df["status"] = df["status"].astype(pd.CategoricalDtype(list(STATUSES)))
    if "step" in df.columns:
        df["step"] = df["step"].astype("int64")
    return df


def _nullable_integers(dtype: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    return pd.Int64Dtype() if pa.types.is_integer(dtype) else None


# --------------------------------------------------------------------------- picking rows


def select(trials: pd.DataFrame, **facet_values: Any) -> pd.DataFrame:
    """Rows of `trials` matching every `column=value` (a list/tuple/set matches any member).

    Float columns match to a relative tolerance of 1e-9, so `eta_trgt=0.1` finds 0.1.
    """
    mask = pd.Series(True, index=trials.index)
    for column, wanted in facet_values.items():
        if column not in trials.columns:
            raise KeyError(f"no column {column!r} in trials; columns: {list(trials.columns)}")
        values = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
        col = trials[column]
        if pd.api.types.is_float_dtype(col.dtype):
            data = col.to_numpy(dtype=float, na_value=np.nan)
            hit = np.zeros(len(col), dtype=bool)
            for v in values:
                hit |= (
                    np.isnan(data) if v is None else np.isclose(data, float(v), rtol=1e-9, atol=0)
                )
            mask &= hit
        else:
            mask &= col.isin(values).fillna(False).astype(bool)
    return trials[mask.to_numpy()]


def join_steps(
    trials: pd.DataFrame, steps: pd.DataFrame, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Steps rows with trial columns (`columns`, default all) attached; steps of unknown trials dropped."""
    if columns is None:
        columns = [c for c in trials.columns if c not in steps.columns]
    missing = [c for c in columns if c not in trials.columns]
    if missing:
        raise KeyError(f"no column(s) {missing} in trials")
    right = trials[["trial_id", *[c for c in columns if c != "trial_id"]]]
    left = steps.assign(trial_id=steps["trial_id"].astype(str))
    right = right.assign(trial_id=right["trial_id"].astype(str))
    return left.merge(right, on="trial_id", how="inner", validate="many_to_one")
