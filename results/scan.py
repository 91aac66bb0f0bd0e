"""Read many small Parquet files as one Arrow table, with flat memory and bad files set aside.

A sweep holds one summary file and one steps file per trial. They are scanned as
`pyarrow.dataset`s of `SCAN_GROUP` files at a time with the declared column types
(`results.schema`); a file that cannot be read (a writer killed mid-file, a foreign
file) is reported as (path, reason) instead of failing the scan.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["SCAN_GROUP", "scan"]

# Files scanned as one dataset at a time. A Parquet dataset keeps every scanned file's
# parsed footer until it is freed (~200 KB for a ~75-column summary), and a table
# holds one chunk per file: so a sweep is scanned a group of files at a time, each
# group's table combined into one chunk, and memory stays flat however many trials.
SCAN_GROUP = 1000

_READ_ERRORS = (OSError, pa.ArrowException, ValueError)


def scan(
    fs: pafs.FileSystem,
    files: list[str],
    declared: pa.Schema,
    unreadable: list[tuple[str, str]],
    columns: list[str] | None = None,
) -> pa.Table:
    """All `files` as one table with the `declared` column types (plus any extra columns of
    the first file), scanned as datasets of `SCAN_GROUP` files each.

    `columns` picks columns (default all; `__filename` gives each row's file). If a
    file of a group cannot be read (truncated, corrupt, another schema), each file of
    the group is scanned on its own: the bad ones are appended to `unreadable` as
    (path, reason), the rest load.
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


def _dataset_schema(fs: pafs.FileSystem, files: list[str], declared: pa.Schema) -> pa.Schema:
    """The declared schema plus any extra columns of the first file (as `pandas.read_parquet`
    of the directory would see them)."""
    try:
        first = pq.read_schema(files[0], filesystem=fs)
    except (OSError, pa.ArrowException):
        return declared
    extras = [f for f in first if f.name not in declared.names]
    return pa.schema([*declared, *extras])


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
    except _READ_ERRORS:
        return _scan_file_by_file(dataset, schema, unreadable, columns)


def _scan_file_by_file(
    dataset: ds.FileSystemDataset,
    schema: pa.Schema,
    unreadable: list[tuple[str, str]],
    columns: list[str],
) -> pa.Table:
    """The readable files of a group that failed as a whole; the others go to `unreadable`."""

    def read_one(fragment: ds.Fragment) -> pa.Table | tuple[str, str]:
        try:
            return fragment.to_table(schema=schema, columns=columns)
        except _READ_ERRORS as exc:
            return (fragment.path, f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as pool:
        parts = list(pool.map(read_one, dataset.get_fragments()))
    tables = []
    for part in parts:
        if isinstance(part, tuple):
            unreadable.append(part)
        else:
            tables.append(part)
    return pa.concat_tables(tables).combine_chunks() if tables else _empty(schema, columns)


def _empty(schema: pa.Schema, columns: list[str]) -> pa.Table:
    """No rows, with `columns` of `schema` (and a string `__filename`, if asked for)."""
    fields = [schema.field(c) if c in schema.names else pa.field(c, pa.string()) for c in columns]
    return pa.schema(fields).empty_table()
