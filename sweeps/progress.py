"""The progress of a running sweep, as a Ray Tune callback: a bar on a terminal, a log
line per ended trial elsewhere.

On a terminal (the stream is a tty) a `tqdm` bar, at most 79 columns wide, counts the
ended trials by status, the running ones, and an ETA. Piped (CI, a log file, a
notebook) each ended trial gets one line:

     7/36  3f2a9c1e  diverged   step    37      1.2s  eta_trgt=0.4 warmup_steps=1

(how many have ended, the trial id's first 8 characters, its status, the last step
it recorded, its seconds, and its values of the swept axes, `sweeps.members`), and a
heartbeat line, with counts and the ETA, at most every `HEARTBEAT_S` seconds. The ETA takes
the time since the first trial started (not Ray's start-up) per ended trial.
Verbosity 0 (quiet) prints only trials that ended in error.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from typing import Any, TextIO

from tqdm import tqdm

from results import STATUSES
from sweeps.ledger import Ledger
from sweeps.members import MemberCallback
from sweeps.schema import SweepSpec
from trials.tune import LAST_STEP_KEY

__all__ = ["BAR_WIDTH", "HEARTBEAT_S", "Progress", "duration"]

HEARTBEAT_S = 30.0  # piped: the longest silence between lines while trials run
BAR_WIDTH = 79  # columns: one less than a classic terminal, which wraps at its last column
REFRESH_S = 1.0  # terminal: how often the bar's clock is redrawn without an event
SHORT_ID = 8  # characters of a trial id shown
ERROR_CHARS = 200  # of an error message shown in its trial's line
STATUS_WIDTH = max(len(s) for s in STATUSES)


class Progress(MemberCallback):
    """Counts and shows the sweep's trials as they end; records each ending in the ledger.

    Every Tune trial is a pack of trials (`trials.tune.trainable`; one, unless the sweep
    packs); `MemberCallback` tells this of each trial once as it ends.

    Args:
        total: trials this run trains.
        ledger: the sweep's ledger, told every ending (None: none).
        stream: where to print (default stderr); a tty gets the bar.
        spec: the sweep, whose axes name the swept values in each trial's line.
        verbosity: 0 only trials that ended in error, 1 (and above) progress too.
    """

    def __init__(
        self,
        total: int,
        ledger: Ledger | None = None,
        stream: TextIO | None = None,
        *,
        spec: SweepSpec | None = None,
        verbosity: int = 1,
    ) -> None:
        super().__init__(spec)
        self.total, self.ledger, self.verbosity = total, ledger, verbosity
        self.stream = sys.stderr if stream is None else stream
        self.ended: dict[str, str] = {}
        self.left: dict[str, int] = {}  # running Tune trial -> its members not ended yet
        self.start = time.monotonic()
        self.first_start: float | None = None  # when the first Tune trial started
        self._bar: tqdm | None = None
        self._last_line = self._last_draw = self.start

    def __getstate__(self) -> dict:
        # Streams such as Jupyter's or pytest's do not pickle; a restored run prints to
        # stderr.
        return {**super().__getstate__(), "stream": None, "ledger": None, "_bar": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=state["stream"] or sys.stderr)

    # ------------------------------------------------------------------ Tune's hooks

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.left[trial.trial_id] = len(trial.config.get("pack", [None]))
        if self.first_start is None:
            self.first_start = time.monotonic()
        self._redraw()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        super().on_trial_result(iteration, trials, trial, result, **info)
        self._redraw()

    def trial_ended(self, tune_trial: Any, trial_id: str, metrics: dict[str, Any]) -> None:
        """Count the ending, record it in the ledger, and print its line (piped)."""
        status = metrics["status"]
        self.ended[trial_id] = status
        if self.ledger is not None:
            self.ledger.record(trial_id, status)
        if tune_trial.trial_id in self.left:
            self.left[tune_trial.trial_id] = max(0, self.left[tune_trial.trial_id] - 1)
        self._ended_line(tune_trial, trial_id, metrics)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.left.pop(trial.trial_id, None)
        self._redraw()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        lost = self.left.pop(trial.trial_id, 0)
        if lost:
            self._line(
                f"Ray trial {trial.trial_id} failed with {lost} trial(s) not ended; "
                "they run again next time (Ray's log names the cause)",
                error=True,
            )
        self._redraw()

    def on_step_end(self, iteration, trials, **info) -> None:
        now = time.monotonic()
        if self._bar is not None and now - self._last_draw >= REFRESH_S:
            self._redraw()
        elif self._piped and self.verbosity and now - self._last_line >= HEARTBEAT_S:
            self._line(self._summary(heartbeat=True))

    # ------------------------------------------------------------------ the runner's

    def note(self, text: str) -> None:
        """Print one line about the run (e.g. what `pack_size: auto` chose), above the bar
        on a terminal; nothing when quiet."""
        if self.verbosity:
            self._line(text)

    def finish(self) -> None:
        """Close the bar, or print the last line (counts and time taken)."""
        if self._bar is not None:
            self._redraw()
            self._bar.close()
            self._bar = None
        elif self.verbosity and self.ended:
            self._line(self._summary(heartbeat=False))

    # ------------------------------------------------------------------ drawing

    @property
    def _piped(self) -> bool:
        return not self.stream.isatty()

    def _line(self, text: str, error: bool = False) -> None:
        if not (self.verbosity or error):
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()
        self._last_line = time.monotonic()

    def _ended_line(self, tune_trial: Any, trial_id: str, metrics: dict[str, Any]) -> None:
        status = metrics["status"]
        if not self._piped and status != "error":
            return  # the bar counts it
        width = len(str(self.total))
        step = metrics.get(LAST_STEP_KEY)
        seconds = metrics.get("wall_time_s")
        seconds_text = f"{seconds:.1f}" if isinstance(seconds, float | int) else "?"
        text = (
            f"{len(self.ended):>{width}}/{self.total}  {trial_id[:SHORT_ID]}  "
            f"{status:<{STATUS_WIDTH}}  "
            f"step {'?' if step is None else step:>5}  {seconds_text:>7}s"
        )
        values = " ".join(f"{k}={_shown(v)}" for k, v in self.swept(tune_trial, trial_id).items())
        if values:
            text += f"  {values}"
        if status == "error" and metrics.get("error"):
            text += f"  {str(metrics['error'])[:ERROR_CHARS]}"
        self._line(text, error=status == "error")

    def _counts(self, short: bool = False) -> str:
        counts = Counter(self.ended.values())
        names = {s: s[:4] if short else s for s in STATUSES}
        parts = [f"{names[s]} {counts[s]}" for s in STATUSES if counts[s]]
        running = sum(self.left.values())
        if running:
            parts.append(f"{'run' if short else 'running'} {running}")
        return ", ".join(parts)

    def _eta(self) -> str:
        done = len(self.ended)
        if not done or self.first_start is None or done >= self.total:
            return ""
        per_trial = (time.monotonic() - self.first_start) / done
        return f"ETA {duration(per_trial * (self.total - done))}"

    def _summary(self, heartbeat: bool) -> str:
        width = len(str(self.total))
        counts = self._counts() or "none yet"
        elapsed = duration(time.monotonic() - self.start)
        text = f"{len(self.ended):>{width}}/{self.total} ended ({counts}), {elapsed}"
        eta = self._eta() if heartbeat else ""
        return f"{text}, {eta}" if eta else text

    def _redraw(self) -> None:
        if self._piped or not self.verbosity:
            return
        if self._bar is None:
            columns, lines = _terminal_size(self.stream)
            self._bar = _Bar(
                total=self.total,
                file=self.stream,
                ncols=min(BAR_WIDTH, columns - 1),
                nrows=lines,  # tqdm draws nothing where it reads a height below 1
                bar_format="{n_fmt}/{total_fmt} |{bar}| {text}",
                mininterval=0,
                dynamic_ncols=False,
            )
        bar = self._bar
        room = bar.ncols - 2 * len(str(self.total)) - 4 - 10  # the counts, the bar at least 10
        text = " ".join(t for t in (self._counts(), self._eta()) if t)
        if len(text) > room:
            text = " ".join(t for t in (self._counts(short=True), self._eta()) if t)
        bar.text = text
        bar.n = len(self.ended)
        bar.refresh()
        self._last_draw = time.monotonic()


class _Bar(tqdm):
    """A tqdm bar whose format shows our own text (counts, ETA) after the bar."""

    text = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "text": self.text}


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal `stream` writes to (else the environment's, else
    80 x 24); a pseudo-terminal nobody sized reports 0 x 0."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    fallback = shutil.get_terminal_size((BAR_WIDTH + 1, 24))
    return size.columns or fallback.columns, size.lines or fallback.lines


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def duration(seconds: float) -> str:
    """`42s`, `3m05s` or `2h07m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
