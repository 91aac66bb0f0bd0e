"""The one-line progress of a running sweep, as a Ray Tune callback."""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from typing import TextIO

from ray import tune

from results import STATUSES
from sweeps.ledger import Ledger

__all__ = ["Progress"]


class Progress(tune.Callback):
    """One progress line per change: ended trials by status, running, and an ETA.

    Every Tune trial is a pack of trials (`trials.tune.trainable`; one, unless the
    sweep packs): its progress reports carry `ended_members`, the members that ended
    since its last report, and its final report `members`, every member, each as
    `{trial_id: {"status": ..., ...}}`. Each ending is recorded in the sweep's `Ledger`
    once, however often Tune repeats the last result.
    """

    def __init__(self, total: int, ledger: Ledger | None = None, stream: TextIO = sys.stderr):
        self.total, self.ledger, self.stream = total, ledger, stream
        self.ended: dict[str, str] = {}
        self.running: set[str] = set()
        self.start = time.monotonic()
        self._shown: tuple | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment (tuner.pkl); streams such as
        # Jupyter's or pytest's do not pickle, and a restored run prints to stderr.
        return {**self.__dict__, "stream": None, "ledger": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=state["stream"] or sys.stderr)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._print()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        final = "members" in result  # the final report: the Tune trial is done
        members = result.get("members" if final else "ended_members")
        if not isinstance(members, dict):
            return
        endings = {tid: m.get("status") for tid, m in members.items()}
        endings = {t: s for t, s in endings.items() if s in STATUSES}
        if not endings:
            return
        for trial_id, status in endings.items():
            self.ended[trial_id] = status
            if self.ledger is not None:
                self.ledger.record(trial_id, status)
        if final:
            self.running.discard(trial.trial_id)
        self._print()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._print()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        self._print()

    def finish(self) -> None:
        """The last line, without an ETA."""
        self._print(final=True)

    def _print(self, final: bool = False) -> None:
        counts = Counter(self.ended.values())
        key = (tuple(counts[s] for s in STATUSES), len(self.running), final)
        if key == self._shown:
            return
        self._shown = key
        done = len(self.ended)
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else math.nan
        parts = [f"{done}/{self.total} ended"]
        parts += [f"{s} {counts[s]}" for s in STATUSES]
        parts += [f"running {len(self.running)}", f"elapsed {elapsed:.0f}s"]
        if not final:
            parts.append(f"ETA {eta:.0f}s" if math.isfinite(eta) else "ETA ?")
        end = "\n" if final or not self.stream.isatty() else ""
        self.stream.write(("\r" if self.stream.isatty() else "") + " | ".join(parts) + end)
        self.stream.flush()
