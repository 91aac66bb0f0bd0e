"""Fixtures for the reliability tests: tiny specs, directory snapshots, and CLI subprocesses.

Processes are found through /proc (Linux): a `warmup-sweep run` subprocess starts its
own embedded Ray, whose GCS, raylet and workers are its descendants, so a test can
kill one trial's worker, or the driver and everything it started, without touching
other Ray instances on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sweeps.conftest import tiny_spec

__all__ = ["CliRun", "descendants", "snapshot", "tiny_spec"]

SCRIPT = str(Path(sys.executable).parent / "warmup-sweep")

if not Path("/proc/self/stat").exists():  # pragma: no cover - the fault tests need /proc
    pytest.skip("the reliability tests find processes through /proc", allow_module_level=True)


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under `root` with (size, mtime_ns) for files and None for directories."""
    out: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
    return out


# --------------------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, argv[0] / process title)} of every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # exited while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        title = cmdline.split(b"\0")[0].decode(errors="replace")
        table[int(entry)] = (ppid, title)
    return table


def descendants(pid: int) -> dict[int, str]:
    """{pid: title} of every living descendant of `pid`."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = table[child][1]
            stack.append(child)
    return found


def _title(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return None


class CliRun:
    """A `warmup-sweep` subprocess in its own session, with everything it starts tracked.

    `kill()` SIGKILLs the driver's process group and every descendant seen so far (the
    embedded Ray's processes outlive a killed driver otherwise); `close()` does the same
    for a run still going at teardown.
    """

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.args, self.cwd = args, cwd
        self.proc = subprocess.Popen(
            [SCRIPT, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.seen: dict[int, str] = {}

    def children(self) -> dict[int, str]:
        """Living descendants now (remembered for `kill`)."""
        now = descendants(self.proc.pid)
        self.seen.update(now)
        return now

    def wait(self, timeout: float = 240) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of a run left to finish."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def alive(self) -> list[int]:
        """Processes seen under this run that still live (zombies aside)."""
        return [pid for pid, title in self.seen.items() if _title(pid) == title]

    def kill(self) -> None:
        """SIGKILL the driver, its process group and every descendant seen."""
        self.children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.alive():  # still the processes we saw, not reused pids
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.communicate(timeout=60)
        deadline = time.monotonic() + 30
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., CliRun]]:
    """Start `warmup-sweep ARGS...` subprocesses in tmp_path; any still running is killed."""
    runs: list[CliRun] = []

    def start(*args: str) -> CliRun:
        run = CliRun(list(args), tmp_path)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def wait_for(condition: Callable[[], Any], run: CliRun, timeout: float = 180) -> Any:
    """Poll `condition` (tracking the run's processes) until it is truthy; fail on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.children()
        value = condition()
        if value:
            return value
        if run.proc.poll() is not None:
            _, out, err = run.wait()
            pytest.fail(f"warmup-sweep exited {run.proc.returncode} first:\n{out}\n{err[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {condition}")


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec dict (or raw text) under tmp_path/specs; returns its path."""

    def write(data: dict[str, Any] | str | bytes, filename: str = "spec.yaml") -> Path:
        path = tmp_path / "specs" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return path

    return write
