"""Write one trial's Parquet files, and a sweep's spec, atomically (layout: `results.location`).

Each file appears whole or not at all: it is written under a hidden temporary name
(leading '.', which pyarrow and pandas skip when reading a directory) and renamed
into place. The steps file is written first and the summary last, so a summary file
means "this trial ended". A write never lists a directory, so its cost does not grow
with the sweep.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.location import SPEC_FILE, STEPS_DIR, TRIALS_DIR, join, resolve, split
from results.schema import steps_table, trial_table, validate_name

__all__ = ["write_atomic", "write_parquet", "write_spec", "write_trial"]

# Object stores have no rename, but a single PUT is atomic, so write there directly.
_NO_RENAME_FILESYSTEMS = frozenset({"s3", "gcs"})


def write_atomic(fs: pafs.FileSystem, path: str, write: Callable[[str], None]) -> None:
    """Call `write(target_path)` so that `path` ends up complete or untouched."""
    if fs.type_name in _NO_RENAME_FILESYSTEMS:
        # No directories to make and no rename; an object appears whole on its single
        # PUT (or multipart completion), so readers never see half of it.
        write(path)
        return
    directory, base = split(fs, path)
    fs.create_dir(directory, recursive=True)
    tmp = join(fs, directory, f".{base}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fs.move(tmp, path)  # rename within one directory: atomic, replaces an old file
    except BaseException:
        with contextlib.suppress(OSError, pa.ArrowException):  # it may never have been created
            fs.delete_file(tmp)
        raise


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write `table` as the Parquet file `path` of `fs`, atomically (`write_atomic`)."""
    write_atomic(fs, path, lambda target: pq.write_table(table, target, filesystem=fs))


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
    base = join(fs, root, sweep)
    file_name = f"{trial_id}.parquet"
    # Build both tables before writing anything, so bad input writes nothing.
    step_rows = None if steps is None else steps_table(steps, trial_id)
    row = trial_table({**summary, "sweep": sweep})
    if step_rows is not None:
        write_parquet(fs, join(fs, base, STEPS_DIR, file_name), step_rows)
    write_parquet(fs, join(fs, base, TRIALS_DIR, file_name), row)


def write_spec(results: str | os.PathLike, sweep: str, yaml_text: str) -> str:
    """Write the resolved spec as `<results>/<sweep>/spec.yaml` atomically; return its path."""
    fs, root = resolve(results)
    path = join(fs, root, validate_name("sweep", sweep), SPEC_FILE)

    def write(target: str) -> None:
        with fs.open_output_stream(target) as out:
            out.write(yaml_text.encode("utf-8"))

    write_atomic(fs, path, write)
    return path
