"""Security: the embedded Ray listens on loopback only; names cannot escape the results
directory. (Specs and data files that try to run code are in test_bad_input.py.)"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from results import sweep_dir, write_spec, write_trial
from sweeps import SpecError, parse_spec
from tests.reliability.conftest import snapshot, tiny_spec

# Runs in a fresh interpreter: its own embedded Ray, whatever this pytest process holds.
BINDING_PROBE = """
import json, os
import ray
from sweeps import init_ray

init_ray(None, num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # start a worker too
import psutil  # vendored by ray (ray/thirdparty_files), on sys.path once ray is imported

listening = []
me = psutil.Process(os.getpid())
for proc in [me, *me.children(recursive=True)]:
    try:
        conns = proc.net_connections(kind="inet")
    except psutil.Error:
        continue
    listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in conns if c.status == "LISTEN"]
node = ray._private.worker.global_worker.node
print(json.dumps({"node_ip": node.node_ip_address, "gcs": node.gcs_address, "listening": listening}))
ray.shutdown()
"""


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.mark.slow
@pytest.mark.integration
def test_embedded_ray_binds_every_service_to_loopback() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BINDING_PROBE],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["node_ip"] == "127.0.0.1"
    assert found["gcs"].startswith("127.0.0.1:")
    names = {name for name, _, _ in found["listening"]}
    assert {"gcs_server", "raylet"} <= names, found  # the check saw the services
    exposed = [entry for entry in found["listening"] if not _loopback(entry[1])]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def test_spec_name_with_dot_dot_is_refused() -> None:
    for name in ("../evil", "a/b", "/abs", "..", ""):
        with pytest.raises(SpecError, match="name"):
            parse_spec(tiny_spec(name=name))


@pytest.mark.parametrize("trial_id", ["../x", "a/../../x", "/tmp/x", "..", "x/y", ""])
def test_write_trial_refuses_a_trial_id_that_leaves_the_sweep(tmp_path: Path, trial_id) -> None:
    root = tmp_path / "results"
    root.mkdir()
    before = snapshot(tmp_path)
    summary = {"trial_id": trial_id, "status": "completed"}
    with pytest.raises(ValueError, match="trial_id"):
        write_trial(root, "s", summary, {"step": [1]})
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("sweep", ["../evil", "a/b", ".."])
def test_store_refuses_a_sweep_name_that_leaves_the_results_root(tmp_path: Path, sweep) -> None:
    root = tmp_path / "results"
    root.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="sweep"):
        write_trial(root, sweep, {"trial_id": "abc", "status": "completed"}, {"step": [1]})
    with pytest.raises(ValueError, match="sweep"):
        write_spec(root, sweep, "name: x\n")
    with pytest.raises(ValueError, match="sweep"):
        sweep_dir(root, sweep)
    assert snapshot(tmp_path) == before
