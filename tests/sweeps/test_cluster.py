"""A sweep on a real two-node Ray cluster (both nodes on this machine), driven by the CLI.

The nodes are started with `ray start --block` in their own process groups and a
temp dir of their own, and stopped by killing exactly those process groups. Never
`ray stop` here: it stops every Ray process on the machine, including the embedded
Ray of test_run_local.py and anyone else's. With its own temp dir the cluster's
address file does not land in /tmp/ray, so a plain `ray.init()` elsewhere never
joins it.

Ray 2.60 enables token authentication for `ray start` when ~/.ray/auth_token exists,
and a driver joining by address only sends a token with RAY_AUTH_MODE=token. The test
sets RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN for all its processes, so it does
not depend on (or touch) ~/.ray.

The trials table's `node` column is the Ray node id, which differs between two
raylets on one machine, so "ran on two nodes" is observable here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.sweeps.conftest import tiny_spec

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BIN = Path(sys.executable).parent
RAY = BIN / "ray"
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    try:
        proc = subprocess.run(
            [str(RAY), "status", f"--address={address}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 0
    if proc.returncode != 0:
        return 0
    active = proc.stdout.split("Pending:")[0]
    cpus = re.search(r"/(\d+)\.0 CPU", proc.stdout)  # the autoscaler sees their resources too
    return min(active.count("node_"), int(cpus[1]) if cpus else 0)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Kill the process group of each `ray start --block` (the node's raylet, GCS, workers)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.fixture
def two_node_cluster():
    if not RAY.exists():
        pytest.skip(f"no ray executable next to {sys.executable}")
    # Short path: Ray's unix socket paths live under the temp dir.
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--block"]
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(temp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [str(RAY), "start", *args, f"--temp-dir={temp / name}", *common],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, killed at teardown
            )
        )

    def wait_for(nodes: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _alive_nodes(address, env) < nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join(f.read_text()[-2000:] for f in temp.glob("*.log"))
                pytest.fail(f"Ray cluster did not reach {nodes} nodes:\n{logs}")
            time.sleep(1)

    try:
        start("head", "--head", f"--port={port}", "--include-dashboard=false")
        wait_for(1)
        start("worker", f"--address={address}")
        wait_for(2)
        yield address, env
    finally:
        _stop(procs)
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_runs_on_both_nodes_of_a_cluster(two_node_cluster, tmp_path) -> None:
    address, env = two_node_cluster
    spec = tiny_spec(name="cluster", grid={"eta_trgt": [0.02, 0.05, 0.1], "warmup_steps": [1, 4]})
    # Tune reuses a finished trial's actor for the next trial: trials of a few hundred
    # steps keep the first node busy while the second node's worker starts.
    spec["base"]["num_steps"] = 400
    spec_path = tmp_path / "cluster.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"

    proc = subprocess.run(  # a fresh driver process, as a user would run it
        [
            str(BIN / "warmup-sweep"),
            "run",
            str(spec_path),
            "--address",
            address,
            "--results",
            str(results),
            "--shared-results",  # both nodes are on this machine: they share its disk
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )

    output = proc.stdout + proc.stderr[-3000:]
    assert proc.returncode == 0, output
    assert "completed 6" in proc.stdout, output
    trials = pd.read_parquet(results / "cluster" / "trials")
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert trials["node"].nunique() == 2, f"{trials['node'].value_counts()}\n{output}"

    # The same cluster joined without its token: one line naming the fix, exit 2.
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    command = [str(BIN / "warmup-sweep"), "run", str(spec_path), "--address", address]
    refused = subprocess.run(
        [*command, "--results", str(tmp_path / "other"), "--shared-results"],
        capture_output=True,
        text=True,
        env=no_token,
        timeout=240,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "RAY_AUTH_MODE=token" in lines[0], refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
