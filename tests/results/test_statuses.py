"""Trial statuses of a sweep and the status cache: real files in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from results import STATUS_CACHE, completed_trial_ids, load, read_statuses, write_trial
from tests.results.rows import steps_of, summary


def test_completed_trial_ids_reads_status_and_skips_unreadable(tmp_path):
    write_trial(tmp_path, "sw", summary("a"), steps_of())
    write_trial(tmp_path, "sw", summary("b", "diverged", diverged_step=1), steps_of())
    (tmp_path / "sw" / "trials" / "c.parquet").write_bytes(b"PAR1 truncated")
    assert completed_trial_ids(tmp_path, "sw") == {"a": "completed", "b": "diverged"}
    assert completed_trial_ids(tmp_path, "absent") == {}


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
    column = table.schema.get_field_index("status")
    pq.write_table(
        table.set_column(column, "status", pa.array(forged, pa.string())), sweep / STATUS_CACHE
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


def _cache_as_first_written(sweep: Path, statuses: dict[str, tuple[str, str]]) -> pa.Table:
    """A cache file in the layout the first status cache wrote (these five columns, in
    this order), holding `statuses` ({file: (trial_id, status)}) for the current
    size and mtime of each summary file."""
    stats = [(sweep / "trials" / name).stat() for name in statuses]
    return pa.table(
        {
            "file": list(statuses),
            "size": pa.array([st.st_size for st in stats], pa.int64()),
            "mtime_ns": pa.array([st.st_mtime_ns for st in stats], pa.int64()),
            "trial_id": [trial_id for trial_id, _ in statuses.values()],
            "status": [status for _, status in statuses.values()],
        }
    )


def test_a_cache_in_the_first_layout_is_read(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    # Statuses unlike the files', so the answer shows they came from the cache.
    forged = {"a.parquet": ("a", "stuck"), "b.parquet": ("b", "stopped")}
    pq.write_table(_cache_as_first_written(sweep, forged), sweep / STATUS_CACHE)
    expected = {"a": "stuck", "b": "stopped", "c": "error", "d": "completed"}
    assert read_statuses(tmp_path, "sw") == expected
    assert read_statuses(tmp_path, "sw", update_cache=True) == expected
    assert _cache_rows(sweep) == {
        "a.parquet": ("a", "stuck"),
        "b.parquet": ("b", "stopped"),
        "c.parquet": ("c", "error"),
    }


def test_a_cache_of_another_layout_is_ignored_and_replaced(tmp_path):
    sweep = _sweep_with_settled_and_fresh(tmp_path)
    forged = {"a.parquet": ("a", "stuck"), "b.parquet": ("b", "stopped")}
    table = _cache_as_first_written(sweep, forged)
    truth = {"a": "completed", "b": "diverged", "c": "error", "d": "completed"}
    layouts = {
        "no status column": table.drop_columns(["status"]),
        "columns by position": table.rename_columns(["0", "1", "2", "3", "4"]),
        "size as text": table.set_column(1, "size", pa.array(["many", "more"])),
    }
    for layout, other in layouts.items():
        pq.write_table(other, sweep / STATUS_CACHE)
        assert read_statuses(tmp_path, "sw") == truth, layout
        assert read_statuses(tmp_path, "sw", update_cache=True) == truth, layout
        assert _cache_rows(sweep) == {
            "a.parquet": ("a", "completed"),
            "b.parquet": ("b", "diverged"),
            "c.parquet": ("c", "error"),
        }, layout
