"""What a sweep run knows of its trials' statuses, and the outcome it reports.

The driver reads the sweep's statuses once, at planning, and keeps them current
from the trials' own final reports (`Ledger`); only trials that never reported
an ending are looked up again, by their own files. A run also keeps the sweep's
status cache (`results.STATUS_CACHE`) current, every `CACHE_REFRESH_S`
seconds while trials run and when they are done (`refreshing_cache`), so that
planning a resume opens only the summaries written since, not the whole sweep's.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from results import ENDED, STATUSES, read_statuses, read_summaries

__all__ = ["CACHE_REFRESH_S", "Ledger", "SweepOutcome", "refreshing_cache"]

# How often a running sweep brings its status cache up to date (reading the summaries
# written since the last time).
CACHE_REFRESH_S = 300.0


@dataclass
class SweepOutcome:
    """How a sweep run ended: statuses of its trials and the CLI exit code."""

    planned: int
    skipped: int
    counts: Counter = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    stopped_early: int = 0  # trials a scheduler (ASHA) stopped; also counted as `stopped`

    @property
    def exit_code(self) -> int:
        """0 when every trial ended (stopped by a scheduler counts as ended), 1 when some
        ended in error or never wrote a summary."""
        return 1 if self.counts.get("error", 0) or self.missing else 0


class Ledger:
    """`{trial_id: status}` of a sweep: read from its files once, then kept current from
    the trials' final reports.

    `update_cache=True` (a run, not a dry run) also writes the sweep's status cache
    when it reads the statuses, and on `refresh_cache`.
    """

    def __init__(self, results: str, sweep: str, update_cache: bool = False) -> None:
        self.results, self.sweep, self.update_cache = results, sweep, update_cache
        self.statuses: dict[str, str] = read_statuses(results, sweep, update_cache=update_cache)
        self.reported: set[str] = set()

    def refresh_cache(self) -> None:
        """Bring the status cache up to date with the summary files (reads the new ones)."""
        if self.update_cache:
            read_statuses(self.results, self.sweep, update_cache=True)

    def record(self, trial_id: str, status: str) -> None:
        """A trial reported how it ended (after writing its files)."""
        if status in STATUSES:
            self.statuses[trial_id] = status
            self.reported.add(trial_id)

    def ended(self, trial_id: str) -> bool:
        """Whether the trial has an ending a rerun keeps (anything but error)."""
        return self.statuses.get(trial_id) in ENDED

    def settle(self, trial_ids: Iterable[str]) -> None:
        """Look up, by their own summary files, the trials that have not ended and did not
        report in this run (a worker that died after writing, a trial a scheduler stopped)."""
        unknown = [t for t in trial_ids if t not in self.reported and not self.ended(t)]
        if unknown:
            self.statuses.update(read_summaries(self.results, self.sweep, unknown))

    def outcome(self, trial_ids: list[str], skipped: int) -> SweepOutcome:
        """The outcome of a run over `trial_ids` (settled first), `skipped` of which had
        ended before it."""
        self.settle(trial_ids)
        outcome = SweepOutcome(planned=len(trial_ids), skipped=skipped)
        for trial_id in trial_ids:
            status = self.statuses.get(trial_id)
            if status is None:
                outcome.missing.append(trial_id)
            else:
                outcome.counts[status] += 1
        return outcome


@contextlib.contextmanager
def refreshing_cache(ledger: Ledger, every_s: float | None = None) -> Iterator[None]:
    """While the body runs trials, refresh the ledger's status cache every `every_s`
    seconds (default `CACHE_REFRESH_S`) in the background, and once more after it (not
    when the body raised)."""
    stop = threading.Event()

    def refresh_until_stopped() -> None:
        while not stop.wait(CACHE_REFRESH_S if every_s is None else every_s):
            # The cache only saves reading: an error here (a store hiccup) must not end
            # the run, and the next refresh, or the next run's planning, reads what it missed.
            with contextlib.suppress(Exception):
                ledger.refresh_cache()

    thread = threading.Thread(target=refresh_until_stopped, name="status-cache", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    ledger.refresh_cache()
