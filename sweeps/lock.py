"""One run at a time into a local sweep: an advisory lock on `<results>/<sweep>/.lock`.

The lock is the operating system's (`flock`), held by the running driver's open
file: when that process ends, however it ends (killed included), the lock is
released with it, so a stale lock never blocks the next run. The file itself
stays behind between runs; its text (pid, host, start time) only names the
holder in the refusal.

Object stores (`s3://`, `gs://`) offer no lock that every store supports, so a
sweep in a bucket is not locked: two runs into it at once would both train the
trials that have not ended (each trial's files are still written whole, and the
last writer wins).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from collections.abc import Iterator

__all__ = ["LOCK_FILE", "SweepBusy", "sweep_lock"]

LOCK_FILE = ".lock"  # hidden: pyarrow and pandas skip it when reading the sweep


class SweepBusy(RuntimeError):
    """Another run holds the sweep's lock; the message names it (CLI exit code 2)."""


@contextlib.contextmanager
def sweep_lock(results: str, sweep: str) -> Iterator[None]:
    """Hold the lock of sweep `sweep` under the local results root `results` while the
    body runs; raise `SweepBusy` at once, having written nothing, when another process
    holds it. A URI (`s3://`, `gs://`) is not locked (see the module docstring)."""
    if "://" in results:
        yield
        return
    directory = os.path.join(os.path.abspath(results), sweep)
    path = os.path.join(directory, LOCK_FILE)
    os.makedirs(directory, exist_ok=True)  # a refused run finds it made by the holder
    # O_CREAT without O_TRUNC: opening an existing lock file changes nothing in it.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusy(
                f"{directory}: another run of sweep {sweep!r} is in progress "
                f"({_holder(fd)}); wait for it to end, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The holder as its lock file names it."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "a process that has not written its name yet"
