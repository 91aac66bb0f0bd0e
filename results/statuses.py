"""`{trial_id: status}` of a sweep's trials, read without opening what was read before.

`read_statuses` reads only the `trial_id` and `status` columns of a sweep's summaries,
and can keep what it read in a hidden file of the sweep directory, the status cache
(`STATUS_CACHE`, one `CacheRow` per row): a later read takes every summary whose size
and modification time still match its cache entry from the cache, and opens only the
summaries written (or rewritten) since. The cache is safe to delete; a cache that
cannot be read, or that lacks a column of `CacheRow`, counts as no cache and is
replaced on the next update.

A summary enters the cache only once it is `_SETTLED_NS` older than the newest time
the store itself has shown (the newest summary's or the cache file's own modification
time, both from the store's clock, never this machine's): any later rewrite of it
then has a later modification time, so a file whose (size, modification time)
matches its cache entry still holds what was read. (Two writes of one trial within
one tick of the store's clock, read in between, are what this cannot tell apart.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results.location import TRIALS_DIR, base_name, join, parquet_files, resolve
from results.scan import scan
from results.schema import TRIAL_SCHEMA, validate_name
from results.store import write_parquet

__all__ = [
    "CACHE_SCHEMA",
    "STATUS_CACHE",
    "CacheRow",
    "completed_trial_ids",
    "read_statuses",
    "read_summaries",
]

STATUS_CACHE = ".statuses.parquet"
_SETTLED_NS = 2_000_000_000


class CacheRow(NamedTuple):
    """One row of the status cache file: a summary file as it was read, and one of its trials."""

    file: str  # base name of the summary file
    size: int  # its size in bytes when read
    mtime_ns: int  # its modification time when read, in ns from the store's clock
    trial_id: str
    status: str


_ARROW_TYPES = {
    "file": pa.string(),
    "size": pa.int64(),
    "mtime_ns": pa.int64(),
    "trial_id": pa.string(),
    "status": pa.string(),
}
# The cache file's columns: `CacheRow`'s fields, in its order.
CACHE_SCHEMA = pa.schema([(name, _ARROW_TYPES[name]) for name in CacheRow._fields])


@dataclass
class _SummaryRead:
    """One summary file as read: its size and modification time then, and what it held."""

    size: int
    mtime_ns: int | None  # None where the store gives no modification time
    statuses: dict[str, str]  # trial_id -> status

    @property
    def stamp(self) -> tuple[int, int | None]:
        """(size, mtime_ns): what tells one version of the file from another."""
        return self.size, self.mtime_ns

    def is_current(self, info: pafs.FileInfo) -> bool:
        """Whether the file `info` describes still holds what was read."""
        return info.mtime_ns is not None and self.stamp == (info.size, info.mtime_ns)


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
    directory = root if sweep is None else join(fs, root, validate_name("sweep", sweep))
    infos = parquet_files(fs, join(fs, directory, TRIALS_DIR))
    if not infos:
        return {}
    cache_path = join(fs, directory, STATUS_CACHE)
    cached, cache_mtime = _read_cache(fs, cache_path)
    reads = {
        info.base_name: cached[info.base_name]
        for info in infos
        if info.base_name in cached and cached[info.base_name].is_current(info)
    }
    to_read = [info.path for info in infos if info.base_name not in reads]
    fresh = _scan_statuses(fs, to_read, [] if unreadable is None else unreadable)
    statuses: dict[str, str] = {}
    for info in infos:  # in file order, as one scan of every summary gives them
        if info.base_name not in reads and info.base_name in fresh:
            reads[info.base_name] = _SummaryRead(
                info.size, info.mtime_ns, fresh.pop(info.base_name)
            )
        if info.base_name in reads:
            statuses.update(reads[info.base_name].statuses)
    for rows in fresh.values():  # rows of a file not listed (none expected): kept, not cached
        statuses.update(rows)
    if update_cache:
        newest = max([cache_mtime, *(info.mtime_ns or 0 for info in infos)])
        _update_cache(fs, cache_path, cached, reads, newest)
    return statuses


def _scan_statuses(
    fs: pafs.FileSystem, paths: list[str], unreadable: list[tuple[str, str]]
) -> dict[str, dict[str, str]]:
    """`{file base name: {trial_id: status}}` of the readable summaries among `paths`."""
    if not paths:
        return {}
    columns = ["__filename", "trial_id", "status"]
    table = scan(fs, paths, TRIAL_SCHEMA, unreadable, columns)
    by_file: dict[str, dict[str, str]] = {}
    for path, trial_id, status in zip(*(table[c].to_pylist() for c in columns), strict=True):
        by_file.setdefault(base_name(path), {})[trial_id] = status
    return by_file


def _update_cache(
    fs: pafs.FileSystem,
    path: str,
    cached: dict[str, _SummaryRead],
    reads: dict[str, _SummaryRead],
    newest_ns: int,
) -> None:
    """Rewrite the cache with the `reads` settled before `newest_ns` (the newest time the
    store has shown), unless it holds just those already."""
    timed = {name: read for name, read in reads.items() if read.mtime_ns is not None}
    settled = {n: r for n, r in timed.items() if r.mtime_ns <= newest_ns - _SETTLED_NS}
    changed = settled.keys() != cached.keys() or any(
        settled[n].stamp != cached[n].stamp for n in settled
    )
    # Rewritten also while some summary is too recent: the cache's own, newer
    # modification time lets a later read settle it.
    if changed or len(settled) < len(timed):
        _write_cache(fs, path, settled)


def _read_cache(fs: pafs.FileSystem, path: str) -> tuple[dict[str, _SummaryRead], int]:
    """The cache's summary files by base name, and the cache file's mtime_ns (0: no cache)."""
    try:
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            return {}, 0
        with fs.open_input_file(path) as source:
            table = pq.read_table(source)
        table = table.select(CACHE_SCHEMA.names).cast(CACHE_SCHEMA).drop_null()
    except (OSError, pa.ArrowException, ValueError, KeyError):
        return {}, 0  # a cache that cannot be read, or of another layout, is no cache
    files: dict[str, _SummaryRead] = {}
    columns = (table.column(name).to_pylist() for name in CacheRow._fields)
    for row in map(CacheRow, *columns):
        read = files.setdefault(row.file, _SummaryRead(row.size, row.mtime_ns, {}))
        if read.stamp == (row.size, row.mtime_ns):
            read.statuses[row.trial_id] = row.status
    return files, info.mtime_ns or 0


def _write_cache(fs: pafs.FileSystem, path: str, files: dict[str, _SummaryRead]) -> None:
    """Replace the cache atomically; a store that refuses (read-only) keeps the old one."""
    rows = [
        CacheRow(name, read.size, read.mtime_ns, trial_id, status)
        for name, read in files.items()
        for trial_id, status in read.statuses.items()
    ]
    columns = {field: [getattr(row, field) for row in rows] for field in CacheRow._fields}
    with contextlib.suppress(OSError, pa.ArrowException):
        write_parquet(fs, path, pa.table(columns, schema=CACHE_SCHEMA))


def read_summaries(
    results: str | os.PathLike, sweep: str, trial_ids: Iterable[str]
) -> dict[str, str]:
    """`{trial_id: status}` of the given trials that have a readable summary, read by their
    file names (no listing of the sweep)."""
    fs, root = resolve(results)
    trials_dir = join(fs, root, validate_name("sweep", sweep), TRIALS_DIR)
    paths = [join(fs, trials_dir, f"{validate_name('trial_id', t)}.parquet") for t in trial_ids]
    if not paths:
        return {}
    present = [i.path for i in fs.get_file_info(paths) if i.type == pafs.FileType.File]
    table = scan(fs, present, TRIAL_SCHEMA, [], ["trial_id", "status"])
    return dict(
        zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist(), strict=True)
    )


def completed_trial_ids(results: str | os.PathLike, sweep: str) -> dict[str, str]:
    """`{trial_id: status}` of every trial of a sweep whose summary file is readable."""
    return read_statuses(results, sweep)
