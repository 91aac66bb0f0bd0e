"""The Optuna study of an Optuna sweep, kept in `<results>/<sweep>/optuna.db` (SQLite),
so that `optuna-dashboard sqlite:///<results>/<sweep>/optuna.db` opens it and a rerun
continues it.

SQLite needs a local file: for results in a bucket the study is kept in a
temporary local copy of `<sweep>/optuna.db` while the sweep runs, fetched from the
bucket first (when there is one) and put back after, so a rerun still continues it;
to open it with optuna-dashboard, copy it from the bucket first.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import pyarrow.fs as pafs
from optuna.storages import RDBStorage

from results import child
from results.store import resolve

__all__ = ["STUDY_FILE", "persisted_study"]

STUDY_FILE = "optuna.db"


@contextlib.contextmanager
def persisted_study(results: str, sweep: str) -> Iterator[RDBStorage]:
    """An Optuna storage for sweep `sweep` under `results` (a local path or URI), kept in
    the sweep's `optuna.db` (see the module docstring)."""
    location = child(child(results, sweep), STUDY_FILE)
    if "://" not in location:
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
        yield _storage(os.path.abspath(location))
        return
    fs, path = resolve(location)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, STUDY_FILE)
        if fs.get_file_info(path).type == pafs.FileType.File:
            pafs.copy_files(path, local, fs, pafs.LocalFileSystem())
        storage = _storage(local)
        try:
            yield storage
        finally:
            storage.engine.dispose()  # every write is committed: the file is whole
            pafs.copy_files(local, path, pafs.LocalFileSystem(), fs)


def _storage(path: str) -> RDBStorage:
    return RDBStorage(f"sqlite:///{path}")
