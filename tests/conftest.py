"""Fixtures shared by every test package: one torch thread, a real S3-compatible server
on loopback for the object-storage tests, and the fast tier's guard.

The fast tier (`make test-fast`) runs `-m "not integration and not slow"` with
`WARMUP_SWEEPS_FAST_TIER=1`: then starting a subprocess (Ray, a server, pip, the CLI)
or listening on a socket fails the test with a message saying to mark it
`integration`, so the tier cannot silently grow slow.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

FAST_TIER_ENV = "WARMUP_SWEEPS_FAST_TIER"


class _RefusedInFastTier(RuntimeError):
    """What a guarded call raises in the fast tier."""


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise _RefusedInFastTier(
            f"fast tier: this test {what}; mark it `integration` (pytest.mark.integration)"
        )

    return refuse


def pytest_configure(config: pytest.Config) -> None:
    """In the fast tier, refuse subprocesses (Ray, servers, pip, the CLI) and listening
    sockets for the whole session."""
    if os.environ.get(FAST_TIER_ENV):
        subprocess.Popen.__init__ = _refuse("starts a subprocess (Ray, a server, pip, the CLI)")
        socket.socket.listen = _refuse("listens on a socket (a server)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny models run many times faster than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- object storage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on 127.0.0.1; yields its
    `host:port`. Credentials for it are set in the environment, so subprocesses (the CLI,
    Ray workers) reach it too."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("moto_server did not start on 127.0.0.1")
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud metadata service
        yield f"127.0.0.1:{port}"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.fixture
def bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the test S3 server, as the `s3://` URI of a results root
    (`s3://<bucket>/results?endpoint_override=...&scheme=http`)."""
    import pyarrow.fs as pafs

    name = f"test-{uuid.uuid4().hex[:12]}"
    options = f"endpoint_override={s3_server}&scheme=http"
    fs = pafs.S3FileSystem(endpoint_override=s3_server, scheme="http", allow_bucket_creation=True)
    fs.create_dir(name)
    return f"s3://{name}/results?{options}"
