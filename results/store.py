"""Write one trial's Parquet files atomically, and load a sweep (or many) back into pandas.

Layout (a public contract, see DESIGN.md section 3):

    <results>/<sweep>/spec.yaml
    <results>/<sweep>/trials/<trial_id>.parquet   one summary row
    <results>/<sweep>/steps/<trial_id>.parquet    per-step rows

`<results>` is a local path or any URI `pyarrow.fs.FileSystem.from_uri` understands.
Each file appears whole or not at all: it is written under a hidden temporary name
(leading '.', which pyarrow and pandas skip when reading a directory) and renamed
into place. The steps file is written first and the summary last, so a summary file
means "this trial ended".

Loaded dtypes: name columns (see `schema.CATEGORY_COLUMNS`) are `category`, with
`status` categories fixed to completed, diverged, stuck, error; integer columns are
nullable `Int64` (a trial that did not diverge has `diverged_step` <NA>), except the
steps table's `step`, which is never null and is plain `int64`; float columns are
`float64` with NaN for null (so "not measured" and a NaN loss both read as NaN);
`trial_id`, `error` and other text are pandas strings (`trial_id` is `category` in the
steps table, where it repeats on every row).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.schema import (
    CATEGORY_COLUMNS,
    STATUSES,
    STEP_SCHEMA,
    TRIAL_SCHEMA,
    steps_table,
    trial_table,
    validate_name,
)

TRIALS_DIR = "trials"
STEPS_DIR = "steps"
SPEC_FILE = "spec.yaml"

# Object stores have no rename, but a single PUT is atomic, so write there directly.
_NO_RENAME_FILESYSTEMS = frozenset({"s3", "gcs"})


# --------------------------------------------------------------------------- paths


def _resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path inside it for a local path or a URI."""
    location = os.fspath(location)
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _join(fs: pafs.FileSystem, *parts: str) -> str:
    if fs.type_name == "local":
        return os.path.join(*parts)
    return posixpath.join(*parts)


def sweep_dir(results: str | os.PathLike, sweep: str) -> str:
    """Path (or URI) of a sweep's directory under the results root."""
    validate_name("sweep", sweep)
    results = os.fspath(results)
    if "://" in results:
        return results.rstrip("/") + "/" + sweep
    return os.path.join(os.path.abspath(results), sweep)


# --------------------------------------------------------------------------- writing


def _write_atomic(fs: pafs.FileSystem, path: str, write: Any) -> None:
    """Call `write(target_path)` so that `path` ends up complete or untouched."""
    directory = os.path.dirname(path) if fs.type_name == "local" else posixpath.dirname(path)
    fs.create_dir(directory, recursive=True)
    if fs.type_name in _NO_RENAME_FILESYSTEMS:
        write(path)
        return
    base = os.path.basename(path) if fs.type_name == "local" else posixpath.basename(path)
    tmp = _join(fs, directory, f".{base}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fs.move(tmp, path)  # rename within one directory: atomic, replaces an old file
    except BaseException:
        with contextlib.suppress(OSError, pa.ArrowException):  # it may never have been created
            fs.delete_file(tmp)
        raise


def _write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    # Looked up on the module at call time, so tests can inject a failing writer.
    _write_atomic(fs, path, lambda target: pq.write_table(table, target, filesystem=fs))


def _known_trial_types(fs: pafs.FileSystem, trials_dir: str, skip: str) -> dict[str, pa.DataType]:
    """Column types of one readable sibling trial file, so a new file matches it."""
    for path in _parquet_files(fs, trials_dir):
        if os.path.basename(path) == skip:
            continue
        try:
            schema = pq.read_schema(path, filesystem=fs)
        except (OSError, pa.ArrowException):
            continue
        return {f.name: f.type for f in schema}
    return {}


def write_trial(
    results: str | os.PathLike,
    sweep: str,
    summary: Mapping[str, Any],
    steps: Mapping[str, Sequence] | pd.DataFrame | pa.Table | None,
) -> None:
    """Write a trial's steps file, then its one-row summary file, each atomically.

    `summary` holds the core columns (`results.schema.TRIAL_SCHEMA`; missing ones are
    null) plus any flat extra config columns. A rerun of the same `trial_id` replaces
    both files; `steps=None` writes (replaces) the summary only. Raises ValueError
    naming the field for a bad name, status or value.
    """
    validate_name("sweep", sweep)
    trial_id = validate_name("trial_id", summary.get("trial_id"))
    if summary.get("sweep", sweep) != sweep:
        raise ValueError(f"summary sweep {summary.get('sweep')!r} differs from sweep {sweep!r}")
    fs, root = _resolve(results)
    base = _join(fs, root, sweep)
    trials_dir = _join(fs, base, TRIALS_DIR)
    file_name = f"{trial_id}.parquet"
    # Build both tables before writing anything, so bad input writes nothing.
    step_rows = None if steps is None else steps_table(steps, trial_id)
    known = _known_trial_types(fs, trials_dir, skip=file_name)
    row = trial_table({**summary, "sweep": sweep}, known_types=known)
    if step_rows is not None:
        _write_parquet(fs, _join(fs, base, STEPS_DIR, file_name), step_rows)
    _write_parquet(fs, _join(fs, trials_dir, file_name), row)


def write_spec(results: str | os.PathLike, sweep: str, yaml_text: str) -> str:
    """Write the resolved spec as `<results>/<sweep>/spec.yaml` atomically; return its path."""
    fs, root = _resolve(results)
    path = _join(fs, root, validate_name("sweep", sweep), SPEC_FILE)

    def write(target: str) -> None:
        with fs.open_output_stream(target) as out:
            out.write(yaml_text.encode("utf-8"))

    _write_atomic(fs, path, write)
    return path


# --------------------------------------------------------------------------- reading


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


def _parquet_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    """Sorted `*.parquet` files of a directory, skipping hidden/temporary ones; [] if absent."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((".", "_"))
    )


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _sweep_dirs(fs: pafs.FileSystem, path: str) -> list[str]:
    """`path` itself if it is a sweep directory, else its sweep subdirectories."""
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"results directory not found: {path}")
    if _is_dir(fs, _join(fs, path, TRIALS_DIR)) or _is_dir(fs, _join(fs, path, STEPS_DIR)):
        return [path]
    children = fs.get_file_info(pafs.FileSelector(path))
    return sorted(
        c.path
        for c in children
        if c.type == pafs.FileType.Directory
        and not c.base_name.startswith((".", "_"))
        and (
            _is_dir(fs, _join(fs, c.path, TRIALS_DIR)) or _is_dir(fs, _join(fs, c.path, STEPS_DIR))
        )
    )


def _read_tables(
    fs: pafs.FileSystem,
    files: Iterable[str],
    unreadable: list[tuple[str, str]],
    columns: list[str] | None = None,
) -> list[pa.Table]:
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, filesystem=fs, columns=columns))
        except (OSError, pa.ArrowException, ValueError) as exc:
            # A writer killed mid-file or a sweep still running: report, never fail the load.
            reason = f"{type(exc).__name__}: {exc}"
            unreadable.append((path, reason))
            warnings.warn(f"unreadable results file {path}: {reason}", stacklevel=3)
    return tables


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate per-file tables whose extra columns may differ; empty -> `schema`'s columns."""
    if not tables:
        return schema.empty_table()
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException:
        # Incompatible extra columns across files (e.g. float in one, text in another):
        # fall back to pandas, which stores such a column as object.
        frames = [t.to_pandas() for t in tables]
        return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)


def _to_pandas(table: pa.Table, category_columns: Iterable[str]) -> pd.DataFrame:
    df = table.to_pandas(ignore_metadata=True)
    for field in table.schema:
        name = field.name
        if pa.types.is_integer(field.type) and name != "step":
            df[name] = df[name].astype("Int64")
        elif pa.types.is_null(field.type):
            df[name] = df[name].astype("float64")
    for name in category_columns:
        if name in df.columns:
            df[name] = df[name].astype("category")
    if "status" in df.columns:
        df["status"] = df["status"].astype(pd.CategoricalDtype(list(STATUSES)))
    if "step" in df.columns:
        df["step"] = df["step"].astype("int64")
    return df


def load(path: str | os.PathLike) -> Loaded:
    """Load the trials and steps of a sweep directory, or of every sweep under a results root.

    Files are read one by one: a truncated or corrupt file is listed in
    `.unreadable` (and warned about) while everything else loads.
    """
    fs, root = _resolve(path)
    unreadable: list[tuple[str, str]] = []
    trial_tables, step_tables = [], []
    for directory in _sweep_dirs(fs, root):
        trial_tables += _read_tables(
            fs, _parquet_files(fs, _join(fs, directory, TRIALS_DIR)), unreadable
        )
        step_tables += _read_tables(
            fs, _parquet_files(fs, _join(fs, directory, STEPS_DIR)), unreadable
        )
    trials = _to_pandas(_concat(trial_tables, TRIAL_SCHEMA), CATEGORY_COLUMNS)
    steps = _to_pandas(_concat(step_tables, STEP_SCHEMA), ("trial_id",))
    if "trial_id" in trials.columns:
        trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    return Loaded(trials, steps, unreadable)


def completed_trial_ids(results: str | os.PathLike, sweep: str) -> dict[str, str]:
    """`{trial_id: status}` of every trial of a sweep whose summary file is readable."""
    fs, root = _resolve(results)
    trials_dir = _join(fs, root, validate_name("sweep", sweep), TRIALS_DIR)
    ended: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unreadable summary simply means "rerun it"
        tables = _read_tables(fs, _parquet_files(fs, trials_dir), [], ["trial_id", "status"])
    for table in tables:
        for trial_id, status in zip(
            table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True
        ):
            ended[trial_id] = status
    return ended


# --------------------------------------------------------------------------- helpers


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
