"""The progress display on real streams: an OS pipe (piped: one line per ended trial)
and a pseudo-terminal (a bar that fits and leaves nothing stale). No Ray started: the
Tune hooks are called as Tune calls them, with stand-in Tune trials."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import termios
import threading
from types import SimpleNamespace

import pytest

from sweeps import expand, parse_spec
from sweeps.ledger import Ledger
from sweeps.progress import Progress
from tests.sweeps.conftest import tiny_spec

SPEC = parse_spec(tiny_spec())


def ended(status: str, step: int, seconds: float, error: str | None = None) -> dict:
    return {"status": status, "last_step": step, "wall_time_s": seconds, "error": error}


def tune_trial(tune_id: str, overrides: dict) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tune_id, config={"overrides": overrides})


def run_events(progress: Progress) -> None:
    """Two unpacked trials: one diverges at step 7, the other completes; then an error."""
    a = tune_trial("t1", {"eta_trgt": 0.1, "warmup_steps": 4, "init_seed": 0, "data_seed": 0})
    b = tune_trial("t2", {"eta_trgt": 0.05, "warmup_steps": 1, "init_seed": 0, "data_seed": 0})
    c = tune_trial("t3", {"eta_trgt": 0.05, "warmup_steps": 4, "init_seed": 0, "data_seed": 0})
    for t in (a, b):
        progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], a, {"step": 5, "ended_members": {}})
    progress.on_trial_result(
        0, [], a, {"ended_members": {"aaaa1111bbbb2222": ended("diverged", 7, 1.25)}}
    )
    final = {"members": {"aaaa1111bbbb2222": ended("diverged", 7, 1.25)}}
    progress.on_trial_result(0, [], a, final)
    progress.on_trial_result(0, [], a, final)  # Tune repeats a function's last result
    progress.on_trial_complete(0, [], a)
    progress.on_trial_result(
        0, [], b, {"members": {"cccc3333dddd4444": ended("completed", 20, 3.5)}}
    )
    progress.on_trial_complete(0, [], b)
    progress.on_trial_start(0, [], c)
    boom = ended("error", 3, 0.5, "RuntimeError: boom")
    progress.on_trial_result(0, [], c, {"members": {"eeee5555ffff6666": boom}})
    progress.on_trial_complete(0, [], c)
    progress.finish()


def piped_output(**kwargs) -> str:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        progress = Progress(3, stream=stream, spec=SPEC, **kwargs)
        run_events(progress)
    with os.fdopen(read_end) as pipe:
        return pipe.read()


def test_piped_progress_prints_one_line_per_ended_trial() -> None:
    lines = piped_output().splitlines()
    assert len(lines) == 4  # three trials, then the closing count
    first, second, third, last = lines
    assert re.fullmatch(
        r"1/3  aaaa1111  diverged   step +7 +1\.2s  eta_trgt=0\.1 warmup_steps=4", first
    ), first
    assert re.fullmatch(
        r"2/3  cccc3333  completed  step +20 +3\.5s  eta_trgt=0\.05 warmup_steps=1", second
    ), second
    assert third.startswith("3/3  eeee5555  error") and third.endswith("RuntimeError: boom")
    assert last.startswith("3/3 ended (completed 1, diverged 1, error 1)")


def test_quiet_progress_prints_only_the_trials_that_ended_in_error() -> None:
    (line,) = piped_output(verbosity=0).splitlines()
    assert line.startswith("3/3  eeee5555  error") and "boom" in line


def test_each_ending_is_recorded_in_the_ledger_once(tmp_path) -> None:
    ledger = Ledger(str(tmp_path), "sweep")
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        run_events(Progress(3, ledger, stream, spec=SPEC))
    os.close(read_end)
    assert ledger.statuses == {
        "aaaa1111bbbb2222": "diverged",
        "cccc3333dddd4444": "completed",
        "eeee5555ffff6666": "error",
    }


def test_packed_trials_are_named_with_their_own_swept_values() -> None:
    planned = expand(SPEC)
    pack = SimpleNamespace(trial_id="p1", config={"pack": [p.overrides for p in planned]})
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        progress = Progress(len(planned), stream=stream, spec=SPEC)
        progress.on_trial_start(0, [], pack)
        members = {p.trial_id: ended("completed", 20, 2.0) for p in reversed(planned)}
        progress.on_trial_result(0, [], pack, {"members": members})
    with os.fdopen(read_end) as pipe:
        lines = pipe.read().splitlines()
    for p, line in zip(reversed(planned), lines, strict=True):
        values = f"eta_trgt={p.overrides['eta_trgt']:g} warmup_steps={p.overrides['warmup_steps']}"
        assert p.trial_id[:8] in line and line.endswith(values), line


def test_a_heartbeat_is_printed_after_a_silence(monkeypatch) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stream:
        progress = Progress(3, stream=stream, spec=SPEC)
        progress.on_trial_start(0, [], tune_trial("t1", {"eta_trgt": 0.1}))
        progress.on_step_end(0, [])  # just started: no heartbeat yet
        monkeypatch.setattr("sweeps.progress.HEARTBEAT_S", 0.0)
        progress.on_step_end(0, [])
    with os.fdopen(read_end) as pipe:
        (line,) = pipe.read().splitlines()
    assert line.startswith("0/3 ended (running 1)")


# ---------------------------------------------------------------------------- terminal


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: carriage returns overwrite the line,
    escape sequences (cursor moves) are dropped."""
    output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output)
    lines, line, col = [], [], 0
    for ch in output:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
    lines.append("".join(line))
    return lines


@pytest.mark.parametrize("columns", [60, 200, None])  # None: a pty nobody sized (0 x 0)
def test_on_a_terminal_a_bar_fits_and_leaves_nothing_stale(columns: int | None, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = pty.openpty()
    if columns is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(slave, "w") as stream:
        assert stream.isatty()
        run_events(Progress(3, stream=stream, spec=SPEC))
    reader.join(timeout=30)
    os.close(master)
    output = b"".join(chunks).decode()

    width = min(79, (columns or 80) - 1)
    parts = [part for line in output.split("\n") for part in line.split("\r")]
    bars = [part for part in parts if re.match(r"\d/3 \|", part)]
    assert bars and all(len(part) <= width for part in bars), bars
    shown = [line.rstrip() for line in screen(output) if line.strip()]
    # The error is printed above the bar; the bar ends at 3/3 with the counts.
    assert any(line.startswith("3/3  eeee5555  error") for line in shown), shown
    assert re.fullmatch(r"3/3 \|[^|]*\| .*", shown[-1]), shown
    assert "diverged" in shown[-1] or "dive" in shown[-1]
    assert shown[-1].endswith(("error 1", "erro 1")), shown[-1]  # nothing stale after it
    assert not any("aaaa1111" in line for line in shown)  # the bar counts other endings
