"""Write one trial's Parquet files atomically, and load a sweep (or many) back into pandas.

Layout (a public contract, see DESIGN.md section 3):

    <results>/<sweep>/spec.yaml
    <results>/<sweep>/trials/<trial_id>.parquet   one summary row
    <results>/<sweep>/steps/<trial_id>.parquet    per-step rows

`<results>` is a local path or any URI `pyarrow.fs.FileSystem.from_uri` understands
(`s3://bucket/prefix`, `gs://bucket/prefix`, with options such as
`?endpoint_override=host:port&scheme=http` for an S3-compatible server).
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
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


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path inside it for a local path or a URI.

    On S3, file opens are delayed, so a small file (every summary, most steps files)
    goes up in one PutObject request instead of a three-request multipart upload.
    """
    location = os.fspath(location)
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(location)
    if location.startswith("s3://") and "allow_delayed_open" not in location:
        location += ("&" if "?" in location else "?") + "allow_delayed_open=true"
    return pafs.FileSystem.from_uri(location)


def _join(fs: pafs.FileSystem, *parts: str) -> str:
    if fs.type_name == "local":
        return os.path.join(*parts)
    return posixpath.join(*parts)


def child(location: str | os.PathLike, name: str) -> str:
    """`location/name` for a local path or a URI; a URI keeps its query options
    (e.g. `s3://bucket/res?endpoint_override=host:9000&scheme=http`)."""
    location = os.fspath(location)
    if "://" not in location:
        return os.path.join(location, name)
    base, sep, query = location.partition("?")
    return base.rstrip("/") + "/" + name + sep + query


def sweep_dir(results: str | os.PathLike, sweep: str) -> str:
    """Path (or URI) of a sweep's directory under the results root."""
    validate_name("sweep", sweep)
    results = os.fspath(results)
    return child(results if "://" in results else os.path.abspath(results), sweep)


# --------------------------------------------------------------------------- writing


def _write_atomic(fs: pafs.FileSystem, path: str, write: Any) -> None:
    """Call `write(target_path)` so that `path` ends up complete or untouched.

    Never lists a directory: the cost of a write does not grow with the sweep.
    """
    if fs.type_name in _NO_RENAME_FILESYSTEMS:
        # No directories to make and no rename; an object appears whole on its single
        # PUT (or multipart completion), so readers never see half of it.
        write(path)
        return
    directory, base = os.path.split(path) if fs.type_name == "local" else posixpath.split(path)
    fs.create_dir(directory, recursive=True)
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


def write_trial(
    results: str | os.PathLike,
    sweep: str,
    summary: Mapping[str, Any],
    steps: Mapping[str, Sequence] | pd.DataFrame | pa.Table | None,
) -> None:
    """Write a trial's steps file, then its one-row summary file, each atomically.

    `summary` holds the `results.schema.TRIAL_SCHEMA` columns (missing ones are
    null) plus any other flat columns. A rerun of the same `trial_id` replaces
    both files; `steps=None` writes (replaces) the summary only. Raises ValueError
    naming the field for a bad name, status or value, and then writes nothing.
    """
    validate_name("sweep", sweep)
    trial_id = validate_name("trial_id", summary.get("trial_id"))
    if summary.get("sweep", sweep) != sweep:
        raise ValueError(f"summary sweep {summary.get('sweep')!r} differs from sweep {sweep!r}")
    fs, root = resolve(results)
    base = _join(fs, root, sweep)
    file_name = f"{trial_id}.parquet"
    # Build both tables before writing anything, so bad input writes nothing.
    step_rows = None if steps is None else steps_table(steps, trial_id)
    row = trial_table({**summary, "sweep": sweep})
    if step_rows is not None:
        _write_parquet(fs, _join(fs, base, STEPS_DIR, file_name), step_rows)
    _write_parquet(fs, _join(fs, base, TRIALS_DIR, file_name), row)


def write_spec(results: str | os.PathLike, sweep: str, yaml_text: str) -> str:
    """Write the resolved spec as `<results>/<sweep>/spec.yaml` atomically; return its path."""
    fs, root = resolve(results)
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


def _parquet_infos(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    """`*.parquet` files of a directory (sorted by path), skipping hidden/temporary ones;
    [] if absent."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        (
            info
            for info in infos
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        ),
        key=lambda info: info.path,
    )


def _parquet_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    """Sorted `*.parquet` files of a directory, skipping hidden/temporary ones; [] if absent."""
    return [info.path for info in _parquet_infos(fs, directory)]


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


def _dataset_schema(fs: pafs.FileSystem, files: list[str], declared: pa.Schema) -> pa.Schema:
    """The declared schema plus any extra columns of the first file (as `pandas.read_parquet`
    of the directory would see them)."""
    try:
        first = pq.read_schema(files[0], filesystem=fs)
    except (OSError, pa.ArrowException):
        return declared
    extras = [f for f in first if f.name not in declared.names]
    return pa.schema([*declared, *extras])


# Files scanned as one dataset at a time. A Parquet dataset keeps every scanned file's
# parsed footer until it is freed (~200 KB for a ~75-column summary), and a table
# holds one chunk per file: so a sweep is scanned a group of files at a time, each
# group's table combined into one chunk, and memory stays flat however many trials.
SCAN_GROUP = 1000


def _scan(
    fs: pafs.FileSystem,
    files: list[str],
    declared: pa.Schema,
    unreadable: list[tuple[str, str]],
    columns: list[str] | None = None,
) -> pa.Table:
    """All `files` as one table with the declared column types, scanned as datasets of
    `SCAN_GROUP` files each.

    If a file of a group cannot be read (truncated, corrupt, another schema), each file
    of the group is scanned on its own: the bad ones go to `unreadable` with a reason,
    the rest load.
    """
    schema = _dataset_schema(fs, files, declared) if files else declared
    columns = columns or schema.names
    tables = [
        _scan_group(fs, files[start : start + SCAN_GROUP], schema, unreadable, columns)
        for start in range(0, len(files), SCAN_GROUP)
    ]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return _empty(schema, columns)
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _scan_group(
    fs: pafs.FileSystem,
    files: list[str],
    schema: pa.Schema,
    unreadable: list[tuple[str, str]],
    columns: list[str],
) -> pa.Table:
    # From the paths as listed: `ds.dataset(files)` would look up every file once more.
    dataset = ds.FileSystemDataset.from_paths(
        files, schema=schema, format=ds.ParquetFileFormat(), filesystem=fs
    )
    try:
        return dataset.to_table(columns=columns).combine_chunks()
    except (OSError, pa.ArrowException, ValueError):
        pass  # find the bad files below

    def read_one(fragment: ds.Fragment) -> pa.Table | tuple[str, str]:
        try:
            return fragment.to_table(schema=schema, columns=columns)
        except (OSError, pa.ArrowException, ValueError) as exc:
            return (fragment.path, f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as pool:
        parts = list(pool.map(read_one, dataset.get_fragments()))
    tables = []
    for part in parts:
        if isinstance(part, tuple):
            # A writer killed mid-file or a foreign file: report, never fail the load.
            unreadable.append(part)
        else:
            tables.append(part)
    return pa.concat_tables(tables).combine_chunks() if tables else _empty(schema, columns)


def _empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    """No rows, with `columns` of `schema` (and a string `__filename`, if asked for)."""
    fields = [schema.field(c) if c in schema.names else pa.field(c, pa.string()) for c in columns]
    return pa.schema(fields).empty_table()


def _concat(tables: list[pa.Table]) -> pa.Table:
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


def load(path: str | os.PathLike) -> Loaded:
    """Load the trials and steps of a sweep directory, or of every sweep under a results root.

    `path` is a local path or an `s3://` / `gs://` URI. Each sweep's files are
    scanned as one dataset; a truncated or corrupt file is listed in `.unreadable`
    (and warned about) while everything else loads.
    """
    fs, root = resolve(path)
    unreadable: list[tuple[str, str]] = []
    trial_tables, step_tables = [], []
    for directory in _sweep_dirs(fs, root):
        trial_files = _parquet_files(fs, _join(fs, directory, TRIALS_DIR))
        step_files = _parquet_files(fs, _join(fs, directory, STEPS_DIR))
        trial_tables.append(_scan(fs, trial_files, TRIAL_SCHEMA, unreadable))
        step_tables.append(_scan(fs, step_files, STEP_SCHEMA, unreadable))
    for file, reason in unreadable:
        warnings.warn(f"unreadable results file {file}: {reason}", stacklevel=2)
    trials = _to_pandas(_concat(trial_tables or [TRIAL_SCHEMA.empty_table()]), CATEGORY_COLUMNS)
    steps = _to_pandas(_concat(step_tables or [STEP_SCHEMA.empty_table()]), ("trial_id",))
    if "trial_id" in trials.columns:
        trials = trials.sort_values("trial_id", kind="stable").reset_index(drop=True)
    return Loaded(trials, steps, unreadable)


# `read_statuses` keeps what it read in this hidden file of the sweep directory, so a
# later read opens only the summaries written (or rewritten) since. Safe to delete.
STATUS_CACHE = ".statuses.parquet"
_STATUS_CACHE_SCHEMA = pa.schema(
    [
        ("file", pa.string()),  # base name of the summary file
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("trial_id", pa.string()),
        ("status", pa.string()),
    ]
)
# A summary enters the cache only once it is this much older than the newest time the
# store itself has shown (the newest summary's or the cache file's own modification
# time, both from the store's clock, never this machine's): any later rewrite of it
# then has a later modification time, so a file whose (size, modification time)
# matches its cache entry still holds what was read. (Two writes of one trial within
# one tick of the store's clock, read in between, are what this cannot tell apart.)
_SETTLED_NS = 2_000_000_000

_CacheEntry = tuple[int, int, list[tuple[str, str]]]  # size, mtime_ns, (trial_id, status)s


def _read_status_cache(fs: pafs.FileSystem, path: str) -> tuple[dict[str, _CacheEntry], int]:
    """The cache's entries by file name, and the cache file's mtime_ns (0: none or unreadable)."""
    try:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            return {}, 0
        with fs.open_input_file(path) as source:
            table = pq.read_table(source, schema=_STATUS_CACHE_SCHEMA)
    except (OSError, pa.ArrowException, ValueError):
        return {}, 0  # a cache that cannot be read is no cache
    entries: dict[str, _CacheEntry] = {}
    columns = [table.column(name).to_pylist() for name in _STATUS_CACHE_SCHEMA.names]
    for name, size, mtime_ns, trial_id, status in zip(*columns, strict=True):
        entry = entries.setdefault(name, (size, mtime_ns, []))
        if entry[:2] == (size, mtime_ns):
            entry[2].append((trial_id, status))
    return entries, info.mtime_ns or 0


def _write_status_cache(fs: pafs.FileSystem, path: str, rows: dict[str, _CacheEntry]) -> None:
    """Replace the cache atomically; a store that refuses (read-only) keeps the old one."""
    columns: dict[str, list] = {name: [] for name in _STATUS_CACHE_SCHEMA.names}
    for name, (size, mtime_ns, pairs) in rows.items():
        for trial_id, status in pairs:
            for key, value in zip(columns, (name, size, mtime_ns, trial_id, status), strict=True):
                columns[key].append(value)
    table = pa.table(columns, schema=_STATUS_CACHE_SCHEMA)
    with contextlib.suppress(OSError, pa.ArrowException):
        _write_parquet(fs, path, table)


def read_statuses(
    results: str | os.PathLike,
    sweep: str | None = None,
    unreadable: list[tuple[str, str]] | None = None,
    *,
    update_cache: bool = False,
) -> dict[str, str]:
    """`{trial_id: status}` of every readable summary of a sweep.

    `results` is the results root and `sweep` the sweep's name, or `results` is the
    sweep directory itself and `sweep` is None. Reads only the two columns; a
    missing sweep has no statuses. Unreadable summaries are left out, and listed
    as (path, reason) in `unreadable` when given.

    Summaries whose size and modification time match the sweep's status cache
    (`STATUS_CACHE`) are taken from it instead of being opened; `update_cache=True`
    then rewrites the cache with what was read (what `run` does, so that a resume
    opens only the summaries written since). Listing the sweep is the one cost that
    grows with it.
    """
    fs, root = resolve(results)
    directory = root if sweep is None else _join(fs, root, validate_name("sweep", sweep))
    infos = _parquet_infos(fs, _join(fs, directory, TRIALS_DIR))
    if not infos:
        return {}
    cache_path = _join(fs, directory, STATUS_CACHE)
    cached, cache_mtime = _read_status_cache(fs, cache_path)
    rows = {
        info.base_name: cached[info.base_name]
        for info in infos
        if info.base_name in cached
        and info.mtime_ns is not None
        and cached[info.base_name][:2] == (info.size, info.mtime_ns)
    }
    to_read = [info.path for info in infos if info.base_name not in rows]
    fresh: dict[str, list[tuple[str, str]]] = {}  # by file name
    if to_read:
        unreadable = [] if unreadable is None else unreadable
        columns = ["__filename", "trial_id", "status"]
        table = _scan(fs, to_read, TRIAL_SCHEMA, unreadable, columns)
        for path, trial_id, status in zip(*(table[c].to_pylist() for c in columns), strict=True):
            fresh.setdefault(_base_name(path), []).append((trial_id, status))
    statuses: dict[str, str] = {}
    for info in infos:  # in file order, as one scan of every summary gives them
        if info.base_name not in rows and info.base_name in fresh:
            rows[info.base_name] = (info.size, info.mtime_ns, fresh.pop(info.base_name))
        for trial_id, status in rows.get(info.base_name, (0, 0, []))[2]:
            statuses[trial_id] = status
    for pairs in fresh.values():  # rows of a file not listed (none expected): kept, not cached
        statuses.update(pairs)
    if update_cache:
        # The newest time this store has shown; entries settled before it are kept.
        newest = max([cache_mtime, *(info.mtime_ns or 0 for info in infos)])
        timed = {name: entry for name, entry in rows.items() if entry[1] is not None}
        settled = {n: e for n, e in timed.items() if e[1] <= newest - _SETTLED_NS}
        changed = settled.keys() != cached.keys() or any(
            settled[n][:2] != cached[n][:2] for n in settled
        )
        # Rewritten also while some summary is too recent: the cache's own, newer
        # modification time lets a later read settle it.
        if changed or len(settled) < len(timed):
            _write_status_cache(fs, cache_path, settled)
    return statuses


def _base_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def read_summaries(
    results: str | os.PathLike, sweep: str, trial_ids: Iterable[str]
) -> dict[str, str]:
    """`{trial_id: status}` of the given trials that have a readable summary, read by their
    file names (no listing of the sweep)."""
    fs, root = resolve(results)
    trials_dir = _join(fs, root, validate_name("sweep", sweep), TRIALS_DIR)
    paths = [_join(fs, trials_dir, f"{validate_name('trial_id', t)}.parquet") for t in trial_ids]
    if not paths:
        return {}
    present = [i.path for i in fs.get_file_info(paths) if i.type == pafs.FileType.File]
    table = _scan(fs, present, TRIAL_SCHEMA, [], ["trial_id", "status"])
    return dict(
        zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True)
    )


def completed_trial_ids(results: str | os.PathLike, sweep: str) -> dict[str, str]:
    """`{trial_id: status}` of every trial of a sweep whose summary file is readable."""
    return read_statuses(results, sweep)


def read_text(location: str | os.PathLike) -> str | None:
    """The text of a small file (e.g. a sweep's spec.yaml) at a local path or URI; None if absent."""
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode("utf-8")
    except FileNotFoundError:
        return None


def is_sweep_dir(location: str | os.PathLike) -> bool:
    """Whether `location` (local path or URI) holds a sweep: a trials/ directory or a spec.yaml."""
    fs, path = resolve(location)
    kinds = fs.get_file_info([_join(fs, path, TRIALS_DIR), _join(fs, path, SPEC_FILE)])
    return kinds[0].type == pafs.FileType.Directory or kinds[1].type == pafs.FileType.File


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
