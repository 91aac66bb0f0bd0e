"""One run at a time into a local sweep: the lock, held by a second real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from sweeps.cli import main
from sweeps.lock import LOCK_FILE, SweepBusy, sweep_lock
from tests.sweeps.conftest import tiny_spec

# A process that holds the lock of sweep "tiny" under argv[1] until it is killed.
HOLDER = (
    "import sys, time\n"
    "from sweeps.lock import sweep_lock\n"
    "with sweep_lock(sys.argv[1], 'tiny'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)

pytestmark = pytest.mark.integration  # a second process holds the lock


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of sweep "tiny" under tmp_path/results."""
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(results)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc, results
    finally:
        proc.kill()
        proc.wait(timeout=60)


def files_under(path) -> dict[str, int]:
    return {
        os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
        for root, _, names in os.walk(path)
        for name in names
    }


def test_a_second_run_is_refused_in_one_line_and_writes_nothing(holder, tmp_path, capsys):
    proc, results = holder
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    before = files_under(results)
    assert main(["run", str(spec), "--results", str(results)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("warmup-sweep: error: ") and "another run of sweep 'tiny'" in line
    assert f"pid {proc.pid} " in line  # names the holder
    assert captured.out == ""
    assert files_under(results) == before  # no spec.yaml, no status cache, nothing
    assert sorted(os.listdir(results / "tiny")) == [LOCK_FILE]


def test_a_killed_run_does_not_block_the_next(holder) -> None:
    proc, results = holder
    with pytest.raises(SweepBusy), sweep_lock(str(results), "tiny"):
        pass
    proc.send_signal(signal.SIGKILL)  # no clean-up of any kind
    proc.wait(timeout=60)
    assert (results / "tiny" / LOCK_FILE).exists()  # the file stays; its lock went with it
    with sweep_lock(str(results), "tiny"):
        text = (results / "tiny" / LOCK_FILE).read_text()
        assert text.startswith(f"pid {os.getpid()} ")


def test_other_sweeps_in_the_same_results_are_not_blocked(holder) -> None:
    _, results = holder
    with sweep_lock(str(results), "other"):
        pass


def test_the_lock_is_released_when_the_run_ends(tmp_path) -> None:
    with sweep_lock(str(tmp_path), "tiny"):
        pass
    probe = (
        "import sys\n"
        "from sweeps.lock import sweep_lock\n"
        "with sweep_lock(sys.argv[1], 'tiny'):\n"
        "    print('acquired')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "acquired", out.stderr
