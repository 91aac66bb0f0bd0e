"""The status cache as a sweep run keeps it: `Ledger` and the refresher around a run.

Nothing here starts Ray: summaries are written with `results.write_trial`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from results import STATUS_CACHE, write_trial
from sweeps import expand, parse_spec, pending_trials
from sweeps.ledger import Ledger, refreshing_cache
from tests.sweeps.conftest import tiny_spec


def _ended(results: Path, sweep: str, trial_ids: list[str], age_s: float = 60) -> None:
    """Summaries of ended trials, written `age_s` seconds ago (settled)."""
    for trial_id in trial_ids:
        write_trial(results, sweep, {"trial_id": trial_id, "status": "completed"}, None)
        path = results / sweep / "trials" / f"{trial_id}.parquet"
        stamp = path.stat().st_mtime_ns - int(age_s * 1e9)
        os.utime(path, ns=(stamp, stamp))


def test_a_dry_run_ledger_reads_but_never_writes_the_cache(tmp_path: Path) -> None:
    data = tiny_spec()
    planned = expand(parse_spec(data))
    _ended(tmp_path, data["name"], [planned[0].trial_id, planned[1].trial_id])
    pending, skipped = pending_trials(parse_spec(data), str(tmp_path))
    assert skipped == 2 and [p.trial_id for p in pending] == [p.trial_id for p in planned[2:]]
    ledger = Ledger(str(tmp_path), data["name"])
    ledger.refresh_cache()
    assert not (tmp_path / data["name"] / STATUS_CACHE).exists()


def test_a_run_ledger_writes_the_cache_and_refreshes_it(tmp_path: Path) -> None:
    _ended(tmp_path, "sw", ["a", "b"])
    ledger = Ledger(str(tmp_path), "sw", update_cache=True)
    assert ledger.statuses == {"a": "completed", "b": "completed"}
    cache = tmp_path / "sw" / STATUS_CACHE
    assert cache.exists()
    _ended(tmp_path, "sw", ["c"])
    ledger.refresh_cache()
    assert sorted(pq.read_table(cache)["trial_id"].to_pylist()) == ["a", "b", "c"]
    statuses = Ledger(str(tmp_path), "sw").statuses
    assert statuses == {"a": "completed", "b": "completed", "c": "completed"}


class _CountingLedger:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = 0, fail
        self.lock = threading.Lock()

    def refresh_cache(self) -> None:
        with self.lock:
            self.calls += 1
        if self.fail and threading.current_thread() is not threading.main_thread():
            raise OSError("the store hiccuped")


def test_the_refresher_runs_while_trials_run_and_once_after() -> None:
    ledger = _CountingLedger(fail=True)  # errors in the background must not end the run
    with refreshing_cache(ledger, every_s=0.01):  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while ledger.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ledger.calls >= 3
    after = ledger.calls
    time.sleep(0.1)
    assert ledger.calls == after  # stopped


def test_a_run_that_fails_stops_the_refresher_without_a_last_refresh() -> None:
    ledger = _CountingLedger()
    with pytest.raises(KeyboardInterrupt), refreshing_cache(ledger, every_s=60):  # type: ignore[arg-type]
        raise KeyboardInterrupt
    assert ledger.calls == 0
    assert not [t for t in threading.enumerate() if t.name == "status-cache"]
